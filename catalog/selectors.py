"""Reads of the catalog, always restricted to what the user may see (others' objects are a 404)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.http import Http404

from catalog import estimate as estimate_lib
from catalog.models import CatalogModel, MaaSMapping, ProfileBundle
from console import permissions
from projects.models import Integration, IntegrationKind, Organization, Project
from projects.selectors import organizations_for_user


def models_for_user(
    user: AbstractBaseUser, organization: Organization | None = None
) -> QuerySet[CatalogModel]:
    """Catalog models of the user's organizations (optionally one of them)."""
    qs = permissions.restrict(CatalogModel.objects.select_related("organization"), user, "view")
    if organization is not None:
        qs = qs.filter(organization=organization)
    return qs


def model_get(user: AbstractBaseUser, pk: int) -> CatalogModel:
    model = models_for_user(user).filter(pk=pk).first()
    if model is None:
        raise Http404("No such model.")
    return model


def bundles_for_user(
    user: AbstractBaseUser, organization: Organization | None = None, *, latest_only: bool = False
) -> QuerySet[ProfileBundle]:
    """Built-in bundles plus those of the user's organizations (optionally one of them)."""
    orgs = organizations_for_user(user)
    if organization is not None:
        orgs = orgs.filter(pk=organization.pk)
    if not user.is_authenticated:
        return ProfileBundle.objects.none()
    qs = ProfileBundle.objects.filter(
        Q(organization__isnull=True) | Q(organization__in=orgs)
    ).select_related("organization")
    if latest_only:
        # A bundle is a lineage of versions (organization, name); list only each one's newest.
        top = {}
        for pk, org_id, name, version in qs.values_list("pk", "organization_id", "name", "version"):
            key = (org_id, name)
            if key not in top or version > top[key][1]:
                top[key] = (pk, version)
        qs = qs.filter(pk__in=[pk for pk, _ in top.values()])
    return qs.order_by("organization_id", "name", "-version")


def bundle_get(user: AbstractBaseUser, pk: int) -> ProfileBundle:
    bundle = bundles_for_user(user).filter(pk=pk).first()
    if bundle is None:
        raise Http404("No such bundle.")
    return bundle


def mappings_for_user(
    user: AbstractBaseUser, project: Project | None = None
) -> QuerySet[MaaSMapping]:
    qs = permissions.restrict(
        MaaSMapping.objects.select_related("project", "bundle", "bundle__organization"), user, "view"
    )
    if project is not None:
        qs = qs.filter(project=project)
    return qs.order_by("project_id", "position", "id")


def mapping_get(user: AbstractBaseUser, pk: int) -> MaaSMapping:
    mapping = mappings_for_user(user).filter(pk=pk).first()
    if mapping is None:
        raise Http404("No such mapping.")
    return mapping


def integration_secret(project: Project | None, kind: str) -> str | None:
    """A project's Hugging Face token or NGC key, decrypted; None when the project has none."""
    if project is None:
        return None
    integration = Integration.objects.filter(project=project, kind=kind).first()
    return integration.secret if integration and integration.secret else None


def hf_token(project: Project | None) -> str | None:
    return integration_secret(project, IntegrationKind.HUGGINGFACE)


def ngc_key(project: Project | None) -> str | None:
    return integration_secret(project, IntegrationKind.NGC)


def model_estimate(
    model: CatalogModel,
    *,
    context_length: int | None = None,
    concurrency: int = 1,
    gpu_type: str | None = None,
) -> estimate_lib.MemoryEstimate | None:
    """The GPU memory estimate of serving `model`, or None when its facts don't allow one.

    Needs the parameter count and config.json facts (layers, KV heads, head dim); models from
    NGC or custom storage usually lack them. A context length of None means the model's maximum;
    an unknown GPU type is a ValueError (the form validates against estimate.GPU_TYPES).
    """
    config = model.config or {}
    layers = config.get("num_hidden_layers")
    kv_heads = config.get("num_key_value_heads") or config.get("num_attention_heads")
    head_dim = config.get("head_dim")
    if not head_dim and config.get("hidden_size") and config.get("num_attention_heads"):
        head_dim = config["hidden_size"] // config["num_attention_heads"]
    context = context_length or config.get("max_position_embeddings")
    if not (model.parameters and layers and kv_heads and head_dim and context):
        return None
    dtype = model.dtype or config.get("dtype") or "bf16"
    try:
        estimate_lib.normalize_dtype(dtype)
    except ValueError:
        dtype = "bf16"  # an exotic checkpoint dtype: estimate as 16-bit rather than not at all
    return estimate_lib.estimate_memory(
        parameters=model.parameters,
        dtype=dtype,
        num_layers=layers,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        context_length=context,
        concurrency=concurrency,
        gpu=gpu_type or None,
    )


def catalog_facets(user: AbstractBaseUser, organization: Organization) -> dict[str, list[str]]:
    """Values the catalog list can be filtered by (tasks and licenses in use)."""
    qs = models_for_user(user, organization)
    return {
        # DISTINCT in the database: a large catalog sends a handful of values, not every row's.
        "tasks": [t for t in qs.order_by("task").values_list("task", flat=True).distinct() if t],
        "licenses": [
            t for t in qs.order_by("license").values_list("license", flat=True).distinct() if t
        ],
    }
