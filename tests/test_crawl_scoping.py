"""Crawl every URL with an object id: another organization's object is a 404, a viewer's write a 403/404.

How it works: every URL pattern of the project (pages and the REST API, recursively) that
takes an argument is looked up in ``PAGE_ARGS`` (pages, by URL name) or ``API_BASENAMES``
(router routes, by basename). The mapping says which object of the world below fills each
argument. A pattern without a mapping FAILS ``test_every_url_with_an_object_id_is_mapped``
by name — so a new URL can't ship without being crawled. To add one, add a line to the
table; to add a new kind of object, add it to ``World.build``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from projects.models import Role
from tests.conftest import login
from tests.sharing import factories as f

URLCONF = "tests.sharing.urls_for_tests"  # the console's URLs plus sharing.urls (until the lead includes them)


def lit(value: str):
    """A literal argument value rather than an object of the world."""
    return ("literal", value)


# Page URL name → {argument: world object name | lit(value)}.
PAGE_ARGS: dict[str, dict] = {
    "projects:detail": {"pk": "project"},
    "projects:edit": {"pk": "project"},
    "projects:delete": {"pk": "project"},
    "projects:integrations": {"pk": "project"},
    "projects:integration_check": {"pk": "project", "kind": lit("huggingface")},
    "projects:integration_delete": {"pk": "project", "kind": lit("huggingface")},
    "catalog:model_detail": {"pk": "model"},
    "catalog:model_edit": {"pk": "model"},
    "catalog:model_delete": {"pk": "model"},
    "catalog:model_refresh_tags": {"pk": "model"},
    "catalog:model_set_nim_profiles": {"pk": "model"},
    "catalog:bundle_detail": {"pk": "bundle"},
    "catalog:bundle_edit": {"pk": "bundle"},
    "catalog:bundle_delete": {"pk": "bundle"},
    "catalog:mappings": {"project_pk": "project"},
    "catalog:mapping_resolve": {"project_pk": "project"},
    "catalog:mapping_move": {"pk": "mapping"},
    "catalog:mapping_delete": {"pk": "mapping"},
    "deployments:detail": {"pk": "deployment"},
    "deployments:deployment_update": {"pk": "deployment"},
    "deployments:deployment_scale": {"pk": "deployment"},
    "deployments:deployment_deactivate": {"pk": "deployment"},
    "deployments:deployment_activate": {"pk": "deployment"},
    "deployments:deployment_retry": {"pk": "deployment"},
    "deployments:deployment_rollback": {"pk": "deployment"},
    "deployments:deployment_nim_tag": {"pk": "deployment"},
    "deployments:deployment_bundle": {"pk": "deployment"},
    "deployments:deployment_delete": {"pk": "deployment"},
    "deployments:endpoint_delete": {"pk": "endpoint"},
    "deployments:pool_detail": {"pk": "pool"},
    "deployments:external_edit": {"pk": "external"},
    "deployments:gallery_delete": {"gallery": lit("templates"), "pk": "resource_template"},
    "deployments:pool_edit": {"pk": "pool"},
    "deployments:pool_delete": {"pk": "pool"},
    "deployments:pool_test": {"pk": "pool"},
    "devhub:key_revoke": {"pk": "api_key"},
    "devhub:deployment_usage": {"pk": "deployment"},
    "devhub:playground": {"pk": "deployment"},
    "devhub:playground_credential": {"pk": "deployment"},
    "sharing:object_history": {"object_type": lit("deployment"), "object_id": "deployment"},
    "sharing:deployment_sharing": {"deployment_pk": "deployment"},
    "sharing:deployment_promote": {"deployment_pk": "deployment"},
    "sharing:environments": {"project_pk": "project"},
    "sharing:environment_create": {"project_pk": "project"},
    "sharing:environment_edit": {"pk": "environment"},
    "sharing:environment_delete": {"pk": "environment"},
    "sharing:quota_project": {"project_pk": "project"},
    "projects:member_add": {"pk": "project"},
    "projects:member_remove": {"pk": "project", "user_pk": "admin"},
    "org:member_role": {"pk": "membership"},
    "org:member_remove": {"pk": "membership"},
    "org:invitation_revoke": {"pk": "invitation"},
    "org:group_detail": {"pk": "group"},
    "org:group_delete": {"pk": "group"},
    "org:group_member_add": {"pk": "group"},
    "org:group_member_remove": {"pk": "group", "user_pk": "admin"},
    "sharing:quota_limits_project": {"project_pk": "project"},
}

# REST router basename → world object its {pk} names (actions "<basename>-<action>" included).
API_BASENAMES: dict[str, str] = {
    "organization": "organization",
    "project": "project",
    "catalog-model": "model",
    "bundle": "bundle",
    "maas-mapping": "mapping",
    "pool": "pool",
    "endpoint": "endpoint",
    "deployment": "deployment",
    "deployment-sharing": "deployment",
    "audit-entry": "audit_entry",
    "environment": "environment",
    "api-key": "api_key",
    "member": "membership",
    "invitation": "invitation",
    "group": "group",
    "resource-template": "resource_template",
    "data-source": "data_source",
}
# Router routes with more arguments than {pk}: route name → {argument: world object | lit(value)}.
API_ARGS: dict[str, dict] = {
    "project-member": {"pk": "project", "user_id": "admin"},
    "project-integration": {"pk": "project", "kind": lit("huggingface")},
    "project-integration-check": {"pk": "project", "kind": lit("huggingface")},
    "group-member": {"pk": "group", "user_id": "admin"},
}

# Patterns whose arguments are not objects of an organization, with the reason.
NOT_TENANT_OBJECTS: dict[str, str] = {
    "catalog:hub_model": "a public Hugging Face repo id, not an organization's object",
    "catalog:ngc_image": "a public NGC image id, not an organization's object",
    "org:invitation_accept": "a one-time invitation token (random, hashed at rest), not an id",
    "catalog:artifact_download": "a signed, expiring token is the permission (tests/gateway/test_torchserve.py)",
    "deployments:gallery": "which gallery (templates or data-sources), listing the caller's own organization",
}
# Namespaces outside tenant scoping.
EXEMPT_NAMESPACES = {"admin"}  # the Django admin is for staff operators, across organizations

# Pages that only read (a POST there is answered like a GET and changes nothing): the viewer
# write check skips them. The outsider check still covers them.
READ_ONLY_PAGES = {
    "projects:detail",
    "catalog:model_detail",
    "catalog:bundle_detail",
    "catalog:mappings",
    "deployments:detail",
    "deployments:pool_detail",
    "devhub:deployment_usage",
    "devhub:playground",
    "sharing:object_history",
    "sharing:environments",
}

# POSTs a viewer may legitimately make on its own organization's objects (name → why).
VIEWER_MAY_POST: dict[str, str] = {
    "catalog:mapping_resolve": "previews which rule would match; changes nothing",
}

# A valid body for writes whose view validates the body before asking the service (which
# checks the role): with an empty body they'd answer 400 and the role would go untested.
WRITE_BODIES: dict[str, dict] = {
    "organization-set-quota": {"gpu_quota": 20},
    "deployment-detail": {"spec": {"replicas": {"min": 1, "max": 1}}},
    "deployment-nim-tag": {"tag": "1.0.3"},
    "deployment-rollback": {"revision": 1},
    "deployment-scale": {"min": 1, "max": 1},
    "catalog:mapping_move": {"direction": "up"},
    "sharing:quota_project": {"gpu_quota": "3"},
    "environment-detail": {"max_replicas": 3},
    "deployment-sharing-detail": {"mode": "all", "access": "authenticated"},
}

OUTSIDER_OK = {404, 405}
VIEWER_WRITE_OK = {403, 404, 405}


@dataclass
class Route:
    name: str | None
    route: str
    args: tuple[str, ...]
    api: bool


def _walk(patterns, prefix: str = "", namespace: str | None = None) -> Iterator[Route]:
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = namespace
            if p.namespace:
                ns = f"{namespace}:{p.namespace}" if namespace else p.namespace
            yield from _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            regex = p.pattern.regex
            args = tuple(regex.groupindex)
            name = p.name and (f"{namespace}:{p.name}" if namespace else p.name)
            yield Route(
                name, prefix + str(p.pattern), args, (prefix + str(p.pattern)).startswith("api/")
            )


def routes_with_arguments() -> list[Route]:
    found = []
    for route in _walk(get_resolver(URLCONF).url_patterns):
        if not route.args:
            continue
        if (route.name or "").split(":")[0] in EXEMPT_NAMESPACES or route.route.startswith(
            "admin/"
        ):
            continue
        if route.name in NOT_TENANT_OBJECTS:
            continue
        found.append(route)
    return found


def _api_object(name: str) -> str | None:
    best = None
    for basename, obj in API_BASENAMES.items():
        if name.startswith(basename + "-") and (best is None or len(basename) > len(best[0])):
            best = (basename, obj)
    return best[1] if best else None


def mapping_for(route: Route) -> dict | None:
    if route.name is None:
        return None
    if route.api and route.name in API_ARGS:
        spec = API_ARGS[route.name]
        return spec if set(spec) == set(route.args) else None
    if route.api:
        obj = _api_object(route.name)
        if obj is None or set(route.args) != {"pk"}:
            return None
        return {"pk": obj}
    spec = PAGE_ARGS.get(route.name)
    if spec is None or set(spec) != set(route.args):
        return None
    return spec


_seq = itertools.count(1)


class World:
    """One object of every kind for an organization (Acme for the viewer, Globex for the outsider)."""

    def __init__(self, organization, project, admin) -> None:
        self.objects: dict[str, object] = {}
        self.build(organization, project, admin)

    def build(self, organization, project, admin) -> None:
        from catalog.models import MaaSMapping
        from deployments.models import Endpoint
        from projects import services as project_services
        from projects.models import APIKey, Integration, Membership
        from sharing.audit import audit_record

        n = next(_seq)
        pool = f.pool(organization, name=f"crawl-pool-{n}")
        model = f.catalog_model(organization, name=f"crawl-model-{n}")
        bundle = f.bundle(organization)
        endpoint = Endpoint.objects.create(
            project=project, name=f"crawl-ep-{n}", path=f"/crawl-{n}"
        )
        environment = f.environment(project, name=f"Crawl {n}", slug=f"crawl-{n}")
        deployment = f.deployment(
            project, name=f"crawl-dep-{n}", pool_=pool, model=model, environment=environment
        )
        mapping = MaaSMapping.objects.create(project=project, source="huggingface", bundle=bundle)
        api_key = APIKey.objects.create(
            organization=organization,
            user=admin,
            name=f"crawl-{n}",
            prefix=f"mdk_c{n}",
            key_hash=f"crawl-hash-{organization.pk}-{n}",
        )
        Integration.objects.create(
            project=project, kind="huggingface", secret="hf_crawl_secret", secret_last4="cret"
        )
        entry = audit_record(
            actor=admin,
            organization=organization,
            action="update",
            obj=deployment,
            before={"replicas": 1},
            after={"replicas": 2},
        )
        group = project_services.group_create(user=admin, organization=organization, name=f"crawl-{n}")
        admin.groups.add(group.group)
        invitation, _ = project_services.invitation_create(
            user=admin, organization=organization, email=f"crawl-{n}@example.com"
        )
        from deployments.external import external_deployment_create
        from deployments.models import DataSource, ResourceTemplate

        external = external_deployment_create(
            user=None, project=project, model=model, name=f"crawl-ext-{n}", url="https://llm.example.com/v1",
            served_model_name=f"crawl-ext-{n}",
        )  # fmt: skip
        template = ResourceTemplate.objects.create(organization=organization, name=f"crawl-t-{n}", cpu="1", memory="1Gi")
        source = DataSource.objects.create(organization=organization, name=f"crawl-d-{n}", kind="pvc", claim_name="c")
        self.objects.update(
            external=external,
            resource_template=template,
            data_source=source,
            admin=admin,
            membership=Membership.objects.get(organization=organization, user=admin),
            group=group,
            invitation=invitation,
            organization=organization,
            project=project,
            pool=pool,
            model=model,
            bundle=bundle,
            endpoint=endpoint,
            environment=environment,
            deployment=deployment,
            mapping=mapping,
            api_key=api_key,
            audit_entry=entry,
        )

    def url(self, route: Route, spec: dict) -> str:
        kwargs = {}
        for arg, source in spec.items():
            if isinstance(source, tuple) and source[0] == "literal":
                kwargs[arg] = source[1]
            else:
                kwargs[arg] = self.objects[source].pk
        return reverse(route.name, kwargs=kwargs, urlconf=URLCONF)


@pytest.fixture(autouse=True)
def _all_urls(settings):
    settings.ROOT_URLCONF = URLCONF


def test_every_url_with_an_object_id_is_mapped():
    unmapped = [
        f"{r.name or '(unnamed)'}  {r.route}  args={list(r.args)}"
        for r in routes_with_arguments()
        if mapping_for(r) is None
    ]
    assert unmapped == [], (
        "These URLs take an object id but tests/test_crawl_scoping.py doesn't know which object to use; "
        "add them to PAGE_ARGS or API_BASENAMES:\n" + "\n".join(unmapped)
    )


def _crawl(
    client, world: World, methods: tuple[str, ...], ok: set[int], skip=frozenset()
) -> list[str]:
    failures = []
    for route in routes_with_arguments():
        spec = mapping_for(route)
        if spec is None or route.name in skip:
            continue
        url = world.url(route, spec)
        body = WRITE_BODIES.get(route.name, {})
        for method in methods:
            if not route.api and method not in ("GET", "POST"):
                continue  # pages answer GET and POST (forms); other verbs are the API's
            if route.api and method in ("POST", "PATCH", "PUT"):
                response = getattr(client, method.lower())(
                    url, body, content_type="application/json"
                )
            elif method == "POST":
                response = client.post(url, body)
            else:
                response = getattr(client, method.lower())(url)
            if response.status_code not in ok:
                failures.append(f"{method} {url} ({route.name}) → {response.status_code}")
    return failures


@pytest.mark.django_db
def test_outsider_gets_404_on_every_object_url_of_another_organization(tenants):
    theirs = World(tenants.org, tenants.project, tenants.owner)
    World(
        tenants.other_org, tenants.other_project, tenants.outsider
    )  # the outsider has its own things too
    failures = _crawl(
        login(tenants.outsider), theirs, ("GET", "POST", "PUT", "PATCH", "DELETE"), OUTSIDER_OK
    )
    assert failures == [], "Another organization's objects must answer 404:\n" + "\n".join(failures)


@pytest.mark.django_db
def test_viewer_writes_are_refused_on_every_object_url(tenants):
    ours = World(tenants.org, tenants.project, tenants.owner)
    failures = _crawl(
        login(tenants.viewer),
        ours,
        ("POST", "PUT", "PATCH", "DELETE"),
        VIEWER_WRITE_OK,
        skip=READ_ONLY_PAGES | set(VIEWER_MAY_POST),
    )
    assert failures == [], "Viewers must get 403 (or 404) on writes:\n" + "\n".join(failures)


@pytest.mark.django_db
def test_the_crawl_reaches_real_pages(tenants):
    """Guard against a crawl that passes because every URL is broken: the owner gets its pages."""
    ours = World(tenants.org, tenants.project, tenants.owner)
    client = login(tenants.owner)
    statuses = {}
    for name in ("projects:detail", "sharing:deployment_sharing", "sharing:environment_edit"):
        route = next(r for r in routes_with_arguments() if r.name == name)
        statuses[name] = client.get(ours.url(route, mapping_for(route))).status_code
    api = next(r for r in routes_with_arguments() if r.name == "environment-detail")
    statuses["environment-detail"] = client.get(ours.url(api, mapping_for(api))).status_code
    assert statuses == {k: 200 for k in statuses}
    assert Role.VIEWER == "viewer"
