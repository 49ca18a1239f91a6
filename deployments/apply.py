"""The apply service: declarative YAML documents (apiVersion modeldeck.io/v1) planned, diffed and
carried out through the same services as the console and the API, each document in one
transaction. `manage.py apply -f` / `delete -f` are thin wrappers around it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import yaml
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from catalog import services as catalog_services
from catalog.models import CatalogModel, ProfileBundle
from console import yamlsafe
from deployments import external, galleries, services
from deployments.kube.kubeconfig import KubeconfigRefused, reduce_kubeconfig
from deployments.models import (
    POOL_EXPOSURE_FIELDS,
    ComputePool,
    DeploymentState,
    Endpoint,
    ModelDeployment,
)
from deployments.selectors import spec_diff
from deployments.spec import SPEC_KEYS, clean_limits_and_pricing, normalize_spec
from projects.models import Environment, Organization, Project

API_VERSION = "modeldeck.io/v1"
# Things other kinds refer to come first; deletes go the other way round.
KIND_ORDER = ("ComputePool", "ProfileBundle", "Model", "Endpoint", "ModelDeployment")
# update_strategy (blue_green | recreate) says how this apply rolls a change out; it is not stored.
DEPLOYMENT_KEYS = ("model", "pool", "bundle", "endpoint", "environment", "description", "state", "update_strategy",
                   "resource_template")


class ManifestError(Exception):
    """A document that can't be applied; `message` says which and why."""


@dataclass
class Change:
    kind: str
    name: str
    action: str  # created | configured | unchanged | deleted | not found
    diff: list[dict[str, Any]] = field(default_factory=list)
    run: Callable[[], Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def describe(self, *, dry_run: bool) -> str:
        if dry_run and self.action not in ("unchanged", "not found"):
            head = f"{self.ref} would be {self.action}"
        else:
            head = f"{self.ref} {self.action}"
        lines = [head + (":" if self.diff else "")]
        for item in self.diff:
            lines.append(f"  {item['field']}: {_show(item['old'])} → {_show(item['new'])}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


@dataclass
class Context:
    user: AbstractBaseUser | None
    organization: Organization
    dry_run: bool = False

    def project(self, doc: dict[str, Any]) -> Project:
        slug = (doc.get("metadata") or {}).get("project")
        projects = Project.objects.filter(organization=self.organization)
        if slug:
            project = projects.filter(Q(slug=slug) | Q(name=slug)).first()
            if project is None:
                raise ManifestError(
                    f"organization {self.organization.slug} has no project {slug!r}"
                )
            return project
        if projects.count() == 1:
            return projects.get()
        raise ManifestError("metadata.project is required (the organization has several projects)")


# YAML reads yes/no/on/off/true/false, numbers and null as other types than text.
NOT_TEXT = "must be text; put it in quotes (\"yes\", \"1234\")"


def _require_text(spec: dict[str, Any], keys: Iterable[str]) -> None:
    for key in keys:
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise ManifestError(f"spec.{key} {NOT_TEXT}")


def load_documents(text: str, *, source: str = "") -> list[dict[str, Any]]:
    """The documents of one file (`source` names it in errors, when known), through the one loader
    of tenant YAML: no anchors or aliases, bounded size, depth and document count."""
    name = f"{source}: " if source else ""
    try:
        docs = [d for d in yamlsafe.load_all(text) if d is not None]
    except yamlsafe.YamlRefused as exc:
        if exc.syntax:
            at = f" at {exc.where}" if exc.where else ""
            raise ManifestError(f"{source or 'The file'} is not valid YAML{at}: {exc.problem}") from None
        raise ManifestError(f"{name}{exc}") from None
    if not docs:
        raise ManifestError(
            f"{source or 'The file'} has no documents; expected one or more `kind: ModelDeployment` documents "
            f"(or {', '.join(KIND_ORDER[:-1])}), each with `apiVersion: {API_VERSION}`."
        )
    for i, doc in enumerate(docs, start=1):
        where = f"{name}document {i}"
        if not isinstance(doc, dict):
            raise ManifestError(f"{where} is not a mapping")
        if doc.get("apiVersion") != API_VERSION:
            raise ManifestError(f"{where}: apiVersion must be {API_VERSION}")
        if doc.get("kind") not in KIND_ORDER:
            raise ManifestError(f"{where}: kind must be one of {', '.join(KIND_ORDER)}")
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            raise ManifestError(f"{where}: metadata.name is required")
        for key in ("name", "project"):
            if doc["metadata"].get(key) is not None and not isinstance(doc["metadata"][key], str):
                raise ManifestError(f"{where}: metadata.{key} {NOT_TEXT}")
        if not isinstance(doc.get("spec") or {}, dict):
            raise ManifestError(f"{where}: spec must be a mapping")
    return docs


def in_dependency_order(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pools, bundles and models before the endpoints and deployments that name them."""
    return sorted(docs, key=lambda d: KIND_ORDER.index(d["kind"]))


def _compare(current: dict[str, Any], desired: dict[str, Any]) -> list[dict[str, Any]]:
    return spec_diff({k: current.get(k) for k in desired}, desired)


# --- ComputePool -----------------------------------------------------------------------------------

POOL_KEYS = ("kind", "engine_label", "kubeconfig", "api_url", "region", "description", "private_addresses_allowed",
             *POOL_EXPOSURE_FIELDS)  # fmt: skip


def _reduced_or_given(kubeconfig: Any) -> Any:
    """Compare with the stored (reduced) copy; a kubeconfig that can't be reduced stays as given,
    shows as a change, and the service refuses it naming the field."""
    if not isinstance(kubeconfig, str) or not kubeconfig:
        return kubeconfig
    try:
        return reduce_kubeconfig(kubeconfig).to_yaml()
    except KubeconfigRefused:
        return kubeconfig


def plan_pool(ctx: Context, doc: dict[str, Any]) -> Change:
    name, spec = doc["metadata"]["name"], dict(doc.get("spec") or {})
    unknown = sorted(set(spec) - set(POOL_KEYS))
    if unknown:
        raise ManifestError(
            f"spec.{unknown[0]} is not a ComputePool field ({', '.join(POOL_KEYS)})"
        )
    _require_text(spec, (k for k in POOL_KEYS if k != "private_addresses_allowed"))
    pool = ComputePool.objects.filter(organization=ctx.organization, name=name).first()
    if pool is None:
        diff = [
            {"field": k, "old": None, "new": "(secret)" if k == "kubeconfig" else v}
            for k, v in sorted(spec.items())
        ]
        return Change("ComputePool", name, "created", diff, lambda: services.pool_create(
            user=ctx.user, organization=ctx.organization, name=name, kind=spec.get("kind", "sandbox"),
            engine_label=spec.get("engine_label", ""), kubeconfig=spec.get("kubeconfig", ""),
            api_url=spec.get("api_url", ""), region=spec.get("region", ""), description=spec.get("description", ""),
            private_addresses_allowed=spec.get("private_addresses_allowed", False),
            **{k: spec[k] for k in POOL_EXPOSURE_FIELDS if k in spec},
        ))  # fmt: skip
    current = {k: getattr(pool, k) for k in POOL_KEYS}
    diff = _compare(current, {**spec, **({"kubeconfig": _reduced_or_given(spec["kubeconfig"])} if "kubeconfig" in spec else {})})
    for item in diff:
        if item["field"] == "kubeconfig":
            item["old"] = item["new"] = "(secret)"
    if not diff:
        return Change("ComputePool", name, "unchanged")
    changes = {item["field"].split(".")[0]: spec[item["field"].split(".")[0]] for item in diff}
    return Change("ComputePool", name, "configured", diff,
                  lambda: services.pool_update(user=ctx.user, pool=pool, **changes))  # fmt: skip


# --- ProfileBundle ---------------------------------------------------------------------------------

BUNDLE_KEYS = ("engine", "image", "default_args", "variables", "labels", "description")


def _bundle_named(organization: Organization, name: str) -> ProfileBundle | None:
    return (
        ProfileBundle.objects.filter(
            Q(organization=organization) | Q(organization__isnull=True), name=name
        )
        .order_by("organization_id", "-version")  # the organization's own before a built-in one
        .first()
    )


def plan_bundle(ctx: Context, doc: dict[str, Any]) -> Change:
    name, spec = doc["metadata"]["name"], dict(doc.get("spec") or {})
    unknown = sorted(set(spec) - set(BUNDLE_KEYS))
    if unknown:
        raise ManifestError(
            f"spec.{unknown[0]} is not a ProfileBundle field ({', '.join(BUNDLE_KEYS)})"
        )
    _require_text(spec, ("engine", "image", "description"))
    bundle = _bundle_named(ctx.organization, name)
    if bundle is None:
        diff = [{"field": k, "old": None, "new": v} for k, v in sorted(spec.items())]
        return Change("ProfileBundle", name, "created", diff, lambda: catalog_services.bundle_create(
            user=ctx.user, organization=ctx.organization, name=name, engine=spec.get("engine", ""),
            image=spec.get("image", ""), default_args=spec.get("default_args"), variables=spec.get("variables"),
            labels=spec.get("labels"), description=spec.get("description", ""),
        ))  # fmt: skip
    current = {k: getattr(bundle, k) for k in BUNDLE_KEYS}
    # Labels the service adds itself (the engine label) are not a difference.
    if "labels" in spec and isinstance(spec["labels"], dict):
        spec["labels"] = {
            **{ProfileBundle.ENGINE_LABEL: spec.get("engine", bundle.engine)},
            **spec["labels"],
        }
    diff = _compare(current, spec)
    if not diff:
        return Change("ProfileBundle", name, "unchanged")
    if bundle.organization_id is None:
        raise ManifestError(
            f"profilebundle/{name} is built in and can't be changed; give your bundle another name"
        )
    return Change("ProfileBundle", name, "configured", diff, lambda: catalog_services.bundle_update(
        user=ctx.user, bundle=bundle, **{k: spec[k] for k in spec},
    ))  # fmt: skip


# --- Model -----------------------------------------------------------------------------------------

MODEL_KEYS = (
    "source",
    "repo_id",
    "revision",
    "ngc_image",
    "ngc_tag",
    "storage_uri",
    "task",
    "description",
)


def plan_model(ctx: Context, doc: dict[str, Any]) -> Change:
    name, spec = doc["metadata"]["name"], dict(doc.get("spec") or {})
    unknown = sorted(set(spec) - set(MODEL_KEYS))
    if unknown:
        raise ManifestError(f"spec.{unknown[0]} is not a Model field ({', '.join(MODEL_KEYS)})")
    _require_text(spec, MODEL_KEYS)  # every Model field is text
    model = CatalogModel.objects.filter(organization=ctx.organization, name=name).first()
    source = spec.get("source", "huggingface")
    if model is None:
        diff = [{"field": k, "old": None, "new": v} for k, v in sorted(spec.items())]

        def create() -> CatalogModel:
            project = ctx.project(doc) if (doc.get("metadata") or {}).get("project") else None
            if source == "huggingface":
                return catalog_services.model_add_from_hub(
                    user=ctx.user, organization=ctx.organization, repo_id=spec.get("repo_id", ""),
                    revision=spec.get("revision", ""), name=name, project=project,
                    description=spec.get("description", ""),
                )  # fmt: skip
            if source == "ngc":
                return catalog_services.model_add_from_ngc(
                    user=ctx.user, organization=ctx.organization, image=spec.get("ngc_image", ""),
                    tag=spec.get("ngc_tag", ""), name=name, project=project, description=spec.get("description", ""),
                )  # fmt: skip
            return catalog_services.model_add_custom(
                user=ctx.user, organization=ctx.organization, name=name, storage_uri=spec.get("storage_uri", ""),
                task=spec.get("task", ""), description=spec.get("description", ""),
            )  # fmt: skip

        return Change("Model", name, "created", diff, create)
    current = {k: getattr(model, k) for k in MODEL_KEYS}
    desired = dict(spec)
    uri = str(desired.get("storage_uri") or "")
    if desired.get("source") == "custom" and uri.startswith("hf://") and model.source == "huggingface":
        # The catalog added hf://owner/name[@rev] as the Hub model it names: compare as that.
        repo, _, rev = uri[len("hf://") :].partition("@")
        desired.pop("storage_uri")
        desired.pop("task", None)  # the Hub's task, not the file's
        desired.update(source="huggingface", repo_id=repo, **({"revision": rev} if rev else {}))
    if desired.get("revision") and current["revision"].startswith(desired["revision"]):
        desired["revision"] = current["revision"]  # a short sha names the pinned commit
    diff = _compare(current, desired)
    if not diff:
        return Change("Model", name, "unchanged")
    if {item["field"] for item in diff} <= {"description"}:
        return Change("Model", name, "configured", diff, lambda: catalog_services.model_update(
            user=ctx.user, model=model, description=spec["description"]))  # fmt: skip
    fields = ", ".join(item["field"] for item in diff)
    raise ManifestError(
        f"model/{name}: {fields} can't change on an existing catalog model; add it under a new name "
        "and create a new deployment for it"
    )


# --- Endpoint --------------------------------------------------------------------------------------


def plan_endpoint(ctx: Context, doc: dict[str, Any]) -> Change:
    name, spec = doc["metadata"]["name"], dict(doc.get("spec") or {})
    project = ctx.project(doc)
    path = str(spec.get("path") or f"/{name}")
    if not path.startswith("/"):
        path = "/" + path
    endpoint = Endpoint.objects.filter(project=project, name=name).first()
    if endpoint is None:
        return Change("Endpoint", name, "created", [{"field": "path", "old": None, "new": path}],
                      lambda: services.endpoint_create(user=ctx.user, project=project, name=name, path=path))  # fmt: skip
    if endpoint.path == path:
        return Change("Endpoint", name, "unchanged")
    raise ManifestError(
        f"endpoint/{name}: the path can't change ({endpoint.path} → {path}); delete the endpoint first"
    )


# --- ModelDeployment -------------------------------------------------------------------------------


def _deployment_refs(ctx: Context, project: Project, spec: dict[str, Any]) -> dict[str, Any]:
    refs: dict[str, Any] = {}
    _require_text(spec, ("model", "pool", "bundle", "endpoint", "environment"))
    model_name = spec.get("model")
    if not model_name:
        raise ManifestError("spec.model is required (a catalog model's name)")
    refs["model"] = CatalogModel.objects.filter(
        organization=ctx.organization, name=model_name
    ).first()
    if refs["model"] is None:
        raise ManifestError(f"no catalog model named {model_name!r} (apply a Model document first)")
    pool_name = spec.get("pool")
    if not pool_name:
        raise ManifestError("spec.pool is required (a compute pool's name)")
    refs["pool"] = ComputePool.objects.filter(organization=ctx.organization, name=pool_name).first()
    if refs["pool"] is None:
        raise ManifestError(f"no compute pool named {pool_name!r}")
    refs["bundle"] = _bundle_named(ctx.organization, spec["bundle"]) if spec.get("bundle") else None
    if spec.get("bundle") and refs["bundle"] is None:
        raise ManifestError(f"no Profile Bundle named {spec['bundle']!r}")
    refs["endpoint"] = None
    if spec.get("endpoint"):
        refs["endpoint"] = Endpoint.objects.filter(project=project, name=spec["endpoint"]).first()
        if refs["endpoint"] is None:
            raise ManifestError(f"project {project.slug} has no endpoint {spec['endpoint']!r}")
    refs["environment"] = None
    if spec.get("environment"):
        refs["environment"] = Environment.objects.filter(
            project=project, slug=spec["environment"]
        ).first()
        if refs["environment"] is None:
            raise ManifestError(
                f"project {project.slug} has no environment {spec['environment']!r}"
            )
    return refs


EXTERNAL_KEYS = ("kind", "model", "url", "api_key", "overflow", "served_model_name", "options", "endpoint",
                 "description", "rate_limits", "pricing")  # fmt: skip


def _terms(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Rate limits and pricing a document gives, over the stored ones, in their canonical form
    (so "0.5" and "0.50" are no change); as given when they don't check (apply reports why)."""
    limits, pricing = external.terms_over(stored, given)
    try:
        limits, pricing = clean_limits_and_pricing(limits, pricing)
    except ValidationError:
        pass
    return {"rate_limits": limits, "pricing": pricing}


def _plan_external(ctx: Context, doc: dict[str, Any]) -> Change:
    """`spec.kind: external`: an OpenAI-compatible URL with its key and an optional overflow
    deployment (by name), through deployments/external.py. The key is write-only: a document
    without `api_key` keeps the stored one."""
    name, given = doc["metadata"]["name"], dict(doc.get("spec") or {})
    project = ctx.project(doc)
    unknown = sorted(set(given) - set(EXTERNAL_KEYS))
    if unknown:
        raise ManifestError(f"spec.{unknown[0]} is not a field of an external ModelDeployment")
    if given.get("options") is not None and not isinstance(given["options"], dict):
        raise ManifestError("spec.options is a mapping (timeout_s, max_concurrency, failure_threshold, cooldown_s)")
    existing = ModelDeployment.objects.filter(project=project, name=name).select_related("current_revision").first()
    if existing is None:
        refs = {"model": None, "endpoint": None}
        if not given.get("model"):
            raise ManifestError("spec.model is required (a catalog model's name)")
        refs["model"] = CatalogModel.objects.filter(organization=ctx.organization, name=given["model"]).first()
        if refs["model"] is None:
            raise ManifestError(f"no catalog model named {given['model']!r} (apply a Model document first)")
        if given.get("endpoint"):
            refs["endpoint"] = Endpoint.objects.filter(project=project, name=given["endpoint"]).first()
            if refs["endpoint"] is None:
                raise ManifestError(f"project {project.slug} has no endpoint {given['endpoint']!r}")
        shown = {k: ("(set)" if k == "api_key" else v) for k, v in sorted(given.items())}
        diff = [{"field": k, "old": None, "new": v} for k, v in shown.items()]
        return Change("ModelDeployment", name, "created", diff, lambda: external.external_deployment_create(
            user=ctx.user, project=project, model=refs["model"], name=name, url=str(given.get("url") or ""),
            credential=str(given.get("api_key") or ""), overflow=given.get("overflow") or None,
            served_model_name=str(given.get("served_model_name") or ""), options=given.get("options") or {},
            endpoint=refs["endpoint"], description=str(given.get("description") or ""),
            rate_limits=given.get("rate_limits"), pricing=given.get("pricing"),
        ))  # fmt: skip
    if not existing.is_external:
        raise ManifestError(f"modeldeployment/{name} is a managed deployment; its kind can't change in place")
    stored = existing.spec()
    current = stored.get("external") or {}
    # The stored terms in canonical form too: a revision without them reads as unlimited and free.
    old = {"url": existing.external_url, "overflow": current.get("overflow") or None,
           "served_model_name": existing.served_name(), "description": existing.description,
           "options": {k: current.get(k) for k in external.OPTION_FIELDS},
           **_terms(stored, {})}  # fmt: skip
    new = {"url": given.get("url", old["url"]), "overflow": given.get("overflow", old["overflow"]) or None,
           "served_model_name": given.get("served_model_name") or old["served_model_name"],
           "description": given.get("description", old["description"]),
           "options": old["options"] | dict(given.get("options") or {}), **_terms(stored, given)}  # fmt: skip
    diff = [{"field": k, "old": old[k], "new": new[k]} for k in old if old[k] != new[k]]
    if given.get("api_key") and given["api_key"] != existing.external_credential:
        diff.append({"field": "api_key", "old": "(set)", "new": "(changed)"})
    if not diff:
        return Change("ModelDeployment", name, "unchanged")
    return Change("ModelDeployment", name, "configured", diff, lambda: external.external_deployment_update(
        user=ctx.user, deployment=existing, url=new["url"], overflow=new["overflow"],
        served_model_name=new["served_model_name"], options=new["options"], description=new["description"],
        credential=str(given.get("api_key") or ""), rate_limits=new["rate_limits"], pricing=new["pricing"],
    ))  # fmt: skip


def plan_deployment(ctx: Context, doc: dict[str, Any]) -> Change:
    name, given = doc["metadata"]["name"], dict(doc.get("spec") or {})
    if given.get("kind") == "external":
        return _plan_external(ctx, doc)
    project = ctx.project(doc)
    unknown = sorted(set(given) - set(DEPLOYMENT_KEYS) - set(SPEC_KEYS))
    if unknown:
        raise ManifestError(f"spec.{unknown[0]} is not a ModelDeployment field")
    state = given.get("state", "active")
    if state not in ("active", "deactivated"):
        raise ManifestError("spec.state is active or deactivated")
    strategy = given.get("update_strategy", "blue_green")
    if strategy not in services.UPDATE_STRATEGIES:
        raise ManifestError(f"spec.update_strategy is one of {', '.join(services.UPDATE_STRATEGIES)}")
    # A resource template is copied into the spec (deployments/galleries.py): the spec's own
    # `resources` keys win; a later change to the template reaches this deployment only when
    # the document is applied again.
    spec = galleries.resolve_template(
        project, {k: v for k, v in given.items() if k in SPEC_KEYS}, given.get("resource_template")
    )
    spec = galleries.resolve_data_sources(project, spec)
    existing = (
        ModelDeployment.objects.filter(project=project, name=name)
        .select_related("model", "bundle", "pool", "endpoint", "current_revision")
        .first()
    )
    # A dry run sees the model and pool an earlier document of the file creates: apply_documents
    # carries those out too, and rolls them back.
    refs = _deployment_refs(ctx, project, given)
    if existing is None:
        diff = [{"field": k, "old": None, "new": v} for k, v in sorted(given.items())]

        def create() -> ModelDeployment:
            # A deactivated manifest is created deactivated: no GPUs reserved, nothing pushed.
            return services.deployment_create(
                user=ctx.user, project=project, model=refs["model"], pool=refs["pool"], name=name, spec=spec,
                bundle=refs["bundle"], endpoint=refs["endpoint"], environment=refs["environment"],
                description=given.get("description", ""), deactivated=state == "deactivated",
            )  # fmt: skip

        return Change("ModelDeployment", name, "created", diff, create)

    if refs["model"].pk != existing.model_id:
        raise ManifestError(
            f"modeldeployment/{name}: the model can't change in place ({existing.model.name} → {refs['model'].name}); "
            "create a new deployment"
        )
    for key in ("pool", "endpoint"):
        if (refs[key].pk if refs[key] else None) != getattr(existing, f"{key}_id"):
            raise ManifestError(
                f"modeldeployment/{name}: the {key} can't change in place; create a new deployment"
            )
    if refs["bundle"] is not None and refs["bundle"].name != existing.bundle.name:
        raise ManifestError(
            f"modeldeployment/{name}: the bundle can't change in place; create a new deployment"
        )
    desired = normalize_spec(spec, bundle=existing.bundle, model=existing.model)
    diff = spec_diff(existing.current_revision.spec, desired)
    is_deactivated = existing.state == DeploymentState.DEACTIVATED
    if (state == "deactivated") != is_deactivated:
        diff.append(
            {"field": "state", "old": "deactivated" if is_deactivated else "active", "new": state}
        )
    if existing.state == DeploymentState.DELETING:
        raise ManifestError(f"modeldeployment/{name} is being deleted; apply again once it is gone")
    if not diff:
        return Change("ModelDeployment", name, "unchanged")

    def update() -> None:
        # Deactivate before a spec change and activate after it, so that the new spec never
        # reserves GPUs or rolls out while the manifest says the deployment is deactivated.
        if state == "deactivated" and not is_deactivated:
            services.deployment_deactivate(user=ctx.user, deployment=existing)
        if any(item["field"] != "state" for item in diff):
            services.deployment_update(
                user=ctx.user, deployment=existing, spec=desired, reason="apply -f",
                update_strategy=strategy,
            )
        if state == "active" and is_deactivated:
            services.deployment_activate(user=ctx.user, deployment=existing)

    return Change("ModelDeployment", name, "configured", diff, update)


PLANNERS: dict[str, Callable[[Context, dict[str, Any]], Change]] = {
    "ComputePool": plan_pool,
    "ProfileBundle": plan_bundle,
    "Model": plan_model,
    "Endpoint": plan_endpoint,
    "ModelDeployment": plan_deployment,
}


def error_text(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return " ".join(exc.messages)
    return str(exc)


class _DryRun(Exception):
    """Raised at the end of a dry run to roll back everything it carried out."""


def apply_documents(
    ctx: Context, docs: Iterable[dict[str, Any]], *, dry_run: bool, write: Callable[[str], None]
) -> int:
    """Plan and carry out each document in dependency order; returns the error count.

    Each document is planned right before it is applied, so a deployment sees the model
    created by an earlier document of the same file. A dry run is the same apply, through the
    same services, inside one transaction that is rolled back at the end: it reports every
    error the real apply would (a bad engine argument, the quota, …), and leaves nothing behind
    — no rows, no audit entries, and no push or other on-commit work, which never runs.
    """
    if not dry_run:
        return _apply_each(ctx, docs, dry_run=False, write=write)
    errors = 0
    try:
        with transaction.atomic():
            errors = _apply_each(ctx, docs, dry_run=True, write=write)
            raise _DryRun
    except _DryRun:
        pass
    return errors


def _apply_each(
    ctx: Context, docs: Iterable[dict[str, Any]], *, dry_run: bool, write: Callable[[str], None]
) -> int:
    errors = 0
    for doc in docs:
        ref = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        try:
            # A real apply plans (and so validates) before the document's write transaction opens,
            # so a slow plan holds no lock; a dry run keeps each document in a savepoint, so that a
            # database error in one leaves the others' transaction usable.
            with transaction.atomic() if dry_run else nullcontext():
                change = PLANNERS[doc["kind"]](ctx, doc)
                if change.run is not None:
                    with transaction.atomic():  # one document, one transaction: all of it or none
                        change.run()
            write(change.describe(dry_run=dry_run))
        except (ManifestError, ValidationError, PermissionError) as exc:
            errors += 1
            write(f"error: {ref}: {error_text(exc)}")
        except Exception as exc:  # PermissionDenied and friends: reported per document
            errors += 1
            write(f"error: {ref}: {error_text(exc) or type(exc).__name__}")
    return errors


def delete_documents(
    ctx: Context, docs: list[dict[str, Any]], *, dry_run: bool, write: Callable[[str], None]
) -> int:
    errors = 0
    for doc in reversed(docs):
        kind, name = doc["kind"], doc["metadata"]["name"]
        ref = f"{kind.lower()}/{name}"
        try:
            target: Any
            if kind == "ModelDeployment":
                target = ModelDeployment.objects.filter(project=ctx.project(doc), name=name).first()
                run = lambda t=target: services.deployment_delete(user=ctx.user, deployment=t)  # noqa: E731
            elif kind == "Endpoint":
                target = Endpoint.objects.filter(project=ctx.project(doc), name=name).first()
                run = lambda t=target: services.endpoint_delete(user=ctx.user, endpoint=t)  # noqa: E731
            elif kind == "ComputePool":
                target = ComputePool.objects.filter(
                    organization=ctx.organization, name=name
                ).first()
                run = lambda t=target: services.pool_delete(user=ctx.user, pool=t)  # noqa: E731
            elif kind == "Model":
                target = CatalogModel.objects.filter(
                    organization=ctx.organization, name=name
                ).first()
                run = lambda t=target: catalog_services.model_delete(user=ctx.user, model=t)  # noqa: E731
            else:
                target = ProfileBundle.objects.filter(
                    organization=ctx.organization, name=name
                ).first()
                run = lambda t=target: catalog_services.bundle_delete(user=ctx.user, bundle=t)  # noqa: E731
            if target is None:
                write(f"{ref} not found")
                continue
            if not dry_run:
                with transaction.atomic():
                    run()
            write(f"{ref} {'would be deleted' if dry_run else 'deleted'}")
        except Exception as exc:  # reported per document, the others go on
            errors += 1
            write(f"error: {ref}: {error_text(exc) or type(exc).__name__}")
    return errors
