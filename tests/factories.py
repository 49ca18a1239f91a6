"""factory_boy factories and service-made objects shared by every test module."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from catalog.models import CatalogModel, ProfileBundle
from deployments.services import deployment_create, pool_create
from projects.models import Membership, Organization, Project, Role


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        self.set_password(extracted or "pw-secret-123")
        if create:
            self.save(update_fields=["password"])


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org{n}")
    gpu_quota = 16


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Role.MEMBER


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"proj{n}")
    gpu_quota = 8

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # The namespace is the service's choice (made once, unique); the rest stays a bare row,
        # so tests that count audit entries or project members see only their own.
        from projects.services import project_namespace_choose

        kwargs.setdefault(
            "kube_namespace",
            project_namespace_choose(organization=kwargs["organization"], slug=kwargs["slug"]),
        )
        return super()._create(model_class, *args, **kwargs)



# --- Objects made through the services, so that no test holds a state no service could produce.


def offline_pool(organization: Organization, *, name: str = "offline", engine: str = "vllm"):
    """A sandbox pool nothing listens on (port 9): pushes fail quietly, deployments stay Pending."""
    return pool_create(
        user=None, organization=organization, name=name, kind="sandbox", engine_label=engine,
        api_url="http://127.0.0.1:9", description="Offline pool for tests.",
    )  # fmt: skip


def deployment(project: Project, *, user=None, name: str = "chat", gpus: int = 1, pool=None,
               model=None, bundle=None):
    """A deployment made by deployments.services.deployment_create: revision 1 and its GPU
    reservation in the project's quota, exactly as the deploy form makes them."""
    org = project.organization
    model = model or CatalogModel.objects.create(
        organization=org, name=f"{name} model", source="huggingface", repo_id="Qwen/Qwen2.5-0.5B-Instruct",
        revision="a8b602d9dafd3a75d382e62757d83d89fca3be54", task="text-generation",
    )  # fmt: skip
    bundle = bundle or ProfileBundle.objects.create(
        organization=org, name=f"{name}-vllm", engine="vllm", image="vllm/vllm-openai:v0.6.3",
        labels={ProfileBundle.ENGINE_LABEL: "vllm"},
    )  # fmt: skip
    return deployment_create(
        user=user, project=project, model=model, bundle=bundle, name=name,
        pool=pool or offline_pool(org, name=f"{name}-pool"),
        spec={"served_model_name": name, "resources": {"cpu": "2", "memory": "8Gi", "gpus": gpus}},
    )  # fmt: skip


def rest_api_client(user, organization=None):
    """A DRF test client authenticated the way REST clients are: a hashed API key of the REST scope."""
    from rest_framework.test import APIClient

    from projects.keys import api_key_create
    from projects.models import APIKeyScope

    if organization is None:
        organization = Membership.objects.filter(user=user).order_by("pk").first().organization
    _, secret = api_key_create(user=user, organization=organization, name="tests", scope=APIKeyScope.REST)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client
