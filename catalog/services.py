"""Writes to the catalog: models from the Hub, NGC or storage; Profile Bundles and their versions; MaaS rules."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum

from catalog import hub, maas, ngc
from catalog.models import CatalogModel, Engine, MaaSMapping, ModelSource, ProfileBundle
from catalog.selectors import hf_token, ngc_key
from console import permissions
from deployments.models import ModelDeployment
from projects.models import Organization, Project

log = logging.getLogger(__name__)

# Uploads bigger than this are refused (bytes); settings.MODELDECK_MAX_ARTIFACT_BYTES overrides it.
DEFAULT_MAX_ARTIFACT_BYTES = 20 * 1024**3
ENGINE_LABEL = ProfileBundle.ENGINE_LABEL
VARIABLE_TYPES = ("string", "integer", "number", "boolean")

# A rule's size bounds: a million billion parameters is beyond any model (the largest are a few
# thousand billion), and the column (bigint) would overflow a few thousand times further on.
MAX_PARAMETERS = 10**15
PARAMETERS_TOO_MANY = "At most 1,000,000 billion parameters."


class _QuotaExceeded(Exception):
    """The upload does not fit in what is left of the organization's upload quota."""


def max_artifact_bytes() -> int:
    return int(getattr(settings, "MODELDECK_MAX_ARTIFACT_BYTES", DEFAULT_MAX_ARTIFACT_BYTES))


def _creator(user: AbstractBaseUser | None) -> AbstractBaseUser | None:
    return user if user is not None and user.is_authenticated else None


def _hub_kwargs() -> dict[str, Any]:
    return {"endpoint": settings.HF_ENDPOINT, "timeout": float(settings.HUB_TIMEOUT_SECONDS)}


def _ngc_kwargs() -> dict[str, Any]:
    return {"base_url": settings.NGC_API_URL, "timeout": float(settings.HUB_TIMEOUT_SECONDS)}


def _check_project(project: Project | None, organization: Organization) -> None:
    if project is not None and project.organization_id != organization.pk:
        raise ValidationError({"project": "That project belongs to another organization."})


def _check_name_free(organization: Organization, name: str, *, exclude: int | None = None) -> None:
    qs = CatalogModel.objects.filter(organization=organization, name=name)
    if exclude is not None:
        qs = qs.exclude(pk=exclude)
    if qs.exists():
        raise ValidationError(
            {"name": f"A model named “{name}” is already in {organization.name}'s catalog."}
        )


def _save_new(model: CatalogModel) -> CatalogModel:
    model.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            model.save()
    except IntegrityError as exc:  # two adds of the same name at once: the constraint decides
        raise ValidationError(
            {"name": f"A model named “{model.name}” is already in the catalog."}
        ) from exc
    return model


# --- storage URIs ----------------------------------------------------------------------------

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
STORAGE_SCHEMES = ("s3", "pvc", "hf")
STORAGE_EXAMPLES = "s3://bucket/path, pvc://claim-name/path or hf://owner/name"
# Cloud Storage: vLLM 0.8.5's Run:ai streamer reads s3:// only (gs:// arrived in later vLLM
# releases), and no other pinned engine reads object stores. GCS serves the S3 API with HMAC keys.
GCS_REFUSAL = (
    "gs:// cannot be served by the pinned engines (vLLM 0.8.5's Run:ai streamer reads s3:// only). "
    "Cloud Storage speaks the S3 API: add the model as s3://{rest} and give the project's S3 "
    "credentials an HMAC key with the endpoint https://storage.googleapis.com"
)


def validate_storage_uri(uri: str) -> str:
    """The URI stripped if it is one a deployment can load from, else ValidationError on storage_uri.

    The one rule for the catalog's form, REST and `apply -f` (all add through model_add_custom):
    a URI the catalog accepts is one some engine serves. s3:// (vLLM's Run:ai streamer, with the
    project's S3 credentials) and pvc:// are served as custom models; hf:// is accepted here and
    model_add_custom turns it into a Hugging Face model (repo id, revision pinned by the Hub);
    gs:// is refused with the way to serve it.
    """
    uri = (uri or "").strip()

    def bad(message: str) -> ValidationError:
        return ValidationError({"storage_uri": f"{message} (expected {STORAGE_EXAMPLES})."})

    if not uri:
        raise bad("Give a storage URI")
    if any(c.isspace() for c in uri):
        raise bad("A storage URI cannot contain spaces")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        other, colon, _ = uri.partition(":")
        if colon and other.isalpha():  # "javascript:…", "file:/etc": a scheme, but not one of ours
            raise bad(f"“{other}:” is not a storage scheme ModelDeck loads from")
        raise bad(f"“{uri}” has no scheme")
    if scheme == "gs":
        raise ValidationError({"storage_uri": GCS_REFUSAL.format(rest=rest or "bucket/path") + "."})
    if scheme not in STORAGE_SCHEMES:
        raise bad(
            f"Unsupported scheme “{scheme}://”; ModelDeck loads from {', '.join(s + '://' for s in STORAGE_SCHEMES)}"
        )
    head, _, path = rest.partition("/")
    if scheme == "s3" and not _S3_BUCKET.match(head):
        raise bad(
            f"“{head}” is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, dashes)"
        )
    if scheme == "s3" and not path.strip("/"):
        raise bad(f"{scheme}://{head} names a bucket but no path to the model in it")
    if scheme == "pvc":
        if not head or not _DNS_SUBDOMAIN.match(head) or ".." in head:
            raise bad(
                f"“{head}” is not a valid PersistentVolumeClaim name (lowercase letters, digits, dashes)"
            )
        if ".." in path.split("/"):
            raise bad("A pvc:// path cannot contain “..”")
    if scheme == "hf":
        repo, _, revision = rest.partition("@")
        if not _HF_REPO.match(repo):
            raise bad(f"“{repo}” is not a Hugging Face repo id (owner/name)")
        if "@" in rest and not revision:
            raise bad(
                "Nothing follows “@”: give a revision (branch, tag or commit) or leave it out"
            )
    return uri


# --- catalog models ----------------------------------------------------------------------------


def model_add_from_hub(
    *,
    user: AbstractBaseUser | None,
    organization: Organization,
    repo_id: str,
    revision: str = "",
    name: str = "",
    project: Project | None = None,
    description: str = "",
) -> CatalogModel:
    """Add a Hugging Face model with its revision pinned to the commit sha the Hub reports now.

    The Hub is asked (with `project`'s token, if it has one) before anything is written, so a
    Hub that fails or times out leaves nothing behind.
    """
    permissions.require(user, "change", organization, what="the catalog")
    _check_project(project, organization)
    repo_id = (repo_id or "").strip()
    if not repo_id:
        raise ValidationError(
            {"repo_id": "Give the model's repo id, e.g. Qwen/Qwen2.5-7B-Instruct."}
        )
    name = (name or "").strip() or repo_id
    _check_name_free(organization, name)
    try:
        detail = hub.model_detail(
            token=hf_token(project),
            repo_id=repo_id,
            revision=revision.strip() or None,
            **_hub_kwargs(),
        )
    except hub.HubError as exc:
        field = "revision" if exc.code == "revision_not_found" else "repo_id"
        raise ValidationError({field: ValidationError(exc.message, code=exc.code)}) from exc
    model = CatalogModel(
        organization=organization,
        name=name,
        source=ModelSource.HUGGINGFACE,
        description=description,
        repo_id=detail.repo_id,
        revision=detail.sha,
        task=detail.task or "",
        library=detail.library or "",
        license=(detail.license or "")[:100],
        gated=detail.gated,
        parameters=detail.parameters,
        dtype=detail.dtype or "",
        size_bytes=detail.weights_bytes or detail.size_bytes or None,
        config=detail.config.as_dict() if detail.config else {},
        tags=list(detail.tags),
        files=[{"path": f.path, "size": f.size, "lfs": f.lfs} for f in detail.files],
        created_by=_creator(user),
    )
    _save_new(model)
    log.info(
        "model added from the Hub", extra={"model": model.pk, "repo_id": repo_id, "sha": detail.sha}
    )
    return model


def _nim_task(resource_id: str) -> str:
    name = resource_id.lower()
    if "rerank" in name:
        return "text-ranking"
    if "embed" in name:
        return "feature-extraction"
    return "text-generation"


def model_add_from_ngc(
    *,
    user: AbstractBaseUser | None,
    organization: Organization,
    image: str,
    tag: str = "",
    name: str = "",
    project: Project | None = None,
    description: str = "",
) -> CatalogModel:
    """Add a NIM image at a tag; its known tags are recorded for in-place version updates."""
    permissions.require(user, "change", organization, what="the catalog")
    _check_project(project, organization)
    key = ngc_key(project)
    if not key and project is None:
        raise ValidationError(
            {"project": "Choose a project: its NGC API key reads the image from NGC (set one on the "
                        "project's Integrations page)."}  # fmt: skip
        )
    if not key:
        raise ValidationError(
            {"project": f"Project “{project.name}” has no NGC API key: set one on the project's Integrations page."}
        )
    try:
        info = ngc.image_tags(api_key=key, image=image, **_ngc_kwargs())
    except ngc.NgcError as exc:
        raise ValidationError({"image": ValidationError(exc.message, code=exc.code)}) from exc
    tag = (tag or "").strip() or info.latest_tag or (info.tags[0] if info.tags else "")
    if not tag or tag not in info.tags:
        known = ", ".join(info.tags[:8]) or "none"
        raise ValidationError({"tag": f"{info.image} has no tag “{tag}” (known tags: {known})."})
    name = (name or "").strip() or info.resource_id.rsplit("/", 1)[-1]
    _check_name_free(organization, name)
    profiles = _nim_profiles(key, info.image, tag)
    model = CatalogModel(
        organization=organization,
        name=name,
        source=ModelSource.NGC,
        description=description or info.description or "",
        ngc_image=info.image,
        ngc_tag=tag,
        ngc_tags=list(info.tags),
        nim_profiles=profiles,
        task=_nim_task(info.resource_id),
        size_bytes=info.size_bytes,
        created_by=_creator(user),
    )
    _save_new(model)
    return model


def model_refresh_ngc_tags(
    *, user: AbstractBaseUser | None, model: CatalogModel, project: Project | None
) -> CatalogModel:
    """Re-read a NIM model's tags from NGC (what an in-place NIM version update chooses from)."""
    permissions.require(user, "change", model, what="the catalog")
    if model.source != ModelSource.NGC:
        raise ValidationError("Only NVIDIA NIM models have image tags.")
    key = ngc_key(project)
    if not key:
        raise ValidationError({"project": "That project has no NGC API key."})
    try:
        info = ngc.image_tags(api_key=key, image=model.ngc_image, **_ngc_kwargs())
    except ngc.NgcError as exc:
        raise ValidationError({"image": ValidationError(exc.message, code=exc.code)}) from exc
    model.ngc_tags = list(info.tags)
    model.nim_profiles = _nim_profiles(key, model.ngc_image, model.ngc_tag or info.latest_tag or "")
    model.save(update_fields=["ngc_tags", "nim_profiles", "updated_at"])
    return model


def _nim_profiles(key: str, image: str, tag: str) -> list[dict[str, Any]]:
    """The image's NIM profiles where NGC answers them; [] (not known) where it has none."""
    try:
        return [p.as_dict() for p in ngc.image_profiles(api_key=key, image=image, tag=tag, **_ngc_kwargs())]
    except ngc.NgcError as exc:
        if exc.code in ("not_found", "bad_response"):
            return []
        raise ValidationError({"image": ValidationError(exc.message, code=exc.code)}) from exc


def model_set_nim_profiles(
    *, user: AbstractBaseUser | None, model: CatalogModel, list_output: str
) -> CatalogModel:
    """Record a NIM model's profiles from `list-model-profiles` output (run against the image)."""
    permissions.require(user, "change", model, what="the catalog")
    if model.source != ModelSource.NGC:
        raise ValidationError("Only NVIDIA NIM models have profiles.")
    profiles = ngc.parse_list_model_profiles(list_output)
    if not profiles:
        raise ValidationError({"list_output": "No profiles found: paste the MODEL PROFILES lines "
                                              "of `list-model-profiles` (“- <id> (<name>)”)."})  # fmt: skip
    model.nim_profiles = [p.as_dict() for p in profiles]
    model.save(update_fields=["nim_profiles", "updated_at"])
    return model


def upload_usage(organization: Organization) -> tuple[int, int]:
    """(bytes of uploaded artifacts the organization keeps, its quota: MODELDECK_UPLOAD_QUOTA_MB)."""
    used = (
        CatalogModel.objects.filter(organization=organization)
        .exclude(artifact="")
        .aggregate(total=Sum("size_bytes"))["total"]
    )
    return int(used or 0), int(settings.UPLOAD_QUOTA_BYTES)


def _over_quota(used: int, quota: int) -> ValidationError:
    return ValidationError(
        {
            "artifact": f"This upload would exceed your organization's upload storage limit: "
            f"{used / 1024**2:,.1f} MiB of {quota / 1024**2:,.0f} MiB are used. Delete uploaded "
            "models you no longer need, or give a storage URI instead."
        }
    )


def _store_artifact(artifact: UploadedFile, *, room: int | None = None) -> tuple[str, str, int]:
    """Copy an upload into artifact storage chunk by chunk; return (name, sha256, size).

    `room`: bytes left in the organization's upload quota (the per-file limit applies too).
    """
    limit = max_artifact_bytes()
    if artifact.size is not None and artifact.size > limit:
        raise ValidationError(
            {"artifact": f"The file is {artifact.size:,} bytes; the limit is {limit:,}."}
        )
    if room is not None and artifact.size is not None and artifact.size > room:
        raise _QuotaExceeded
    field = CatalogModel._meta.get_field("artifact")
    storage = field.storage
    base = os.path.basename(artifact.name or "artifact") or "artifact"
    name = storage.get_available_name(
        field.generate_filename(None, base), max_length=field.max_length
    )
    path = storage.path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "xb") as out:
            for chunk in artifact.chunks():
                size += len(chunk)
                if size > limit:
                    raise ValidationError(
                        {"artifact": f"The file is larger than the limit of {limit:,} bytes."}
                    )
                if room is not None and size > room:
                    raise _QuotaExceeded
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise
    return name, digest.hexdigest(), size


def model_add_custom(
    *,
    user: AbstractBaseUser | None,
    organization: Organization,
    name: str,
    storage_uri: str = "",
    artifact: UploadedFile | None = None,
    task: str = "",
    parameters: int | None = None,
    license: str = "",
    description: str = "",
) -> CatalogModel:
    """Add a model from a storage URI or an uploaded artifact (stored with its sha256)."""
    permissions.require(user, "change", organization, what="the catalog")
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the model a name."})
    if bool(storage_uri and storage_uri.strip()) == bool(artifact):
        raise ValidationError(
            {"storage_uri": "Give either a storage URI or a file to upload, not both or neither."}
        )
    if parameters is not None and parameters <= 0:
        raise ValidationError({"parameters": "The parameter count must be positive."})
    _check_name_free(organization, name)
    model = CatalogModel(
        organization=organization,
        name=name,
        source=ModelSource.CUSTOM,
        description=description,
        task=task,
        parameters=parameters,
        license=license,
        created_by=_creator(user),
    )
    if artifact is None:
        model.storage_uri = validate_storage_uri(storage_uri)
        if model.storage_uri.startswith("hf://"):
            # A Hub repo under another name: added as what it is, so every engine serves it
            # and its revision is pinned to a commit like any Hub model.
            repo_id, _, revision = model.storage_uri[len("hf://") :].partition("@")
            try:
                return model_add_from_hub(user=user, organization=organization, repo_id=repo_id,
                                          revision=revision, name=name, description=description)  # fmt: skip
            except ValidationError as exc:
                errors = getattr(exc, "message_dict", {})
                if set(errors) <= {"repo_id", "revision"}:  # the URI's parts: say it on the URI
                    raise ValidationError({"storage_uri": [m for ms in errors.values() for m in ms]}) from exc
                raise
        return _save_new(model)
    with transaction.atomic():
        # The organization's row lock serializes its uploads: two at once can't both fit the
        # last free bytes of the quota.
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        used, quota = upload_usage(organization)
        try:
            stored, sha256, size = _store_artifact(artifact, room=max(0, quota - used))
        except _QuotaExceeded:
            raise _over_quota(used, quota) from None
        model.artifact.name = stored
        model.artifact_sha256 = sha256
        model.size_bytes = size
        try:
            return _save_new(model)
        except BaseException:
            model.artifact.storage.delete(stored)  # nothing left half-way
            raise


def model_update(
    *,
    user: AbstractBaseUser | None,
    model: CatalogModel,
    name: str | None = None,
    description: str | None = None,
) -> CatalogModel:
    """Rename or describe a model; its source and pinned revision never change (add a new entry instead)."""
    permissions.require(user, "change", model, what="the catalog")
    if name is not None:
        name = name.strip()
        if not name:
            raise ValidationError({"name": "The name cannot be empty."})
        _check_name_free(model.organization, name, exclude=model.pk)
        model.name = name
    if description is not None:
        model.description = description
    model.full_clean(validate_constraints=False)
    model.save()
    return model


def model_delete(*, user: AbstractBaseUser | None, model: CatalogModel) -> None:
    permissions.require(user, "change", model, what="the catalog")
    names = sorted(model.deployments.values_list("name", flat=True))
    if names:  # named, so the user knows which to delete (was "has 2 deployment(s)")
        shown = ", ".join(f"“{n}”" for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        noun, them = ("deployment", "it") if len(names) == 1 else ("deployments", "them")
        raise ValidationError(
            f"{model.name} has {len(names)} {noun}: {shown}; delete {them} before the model."
        )
    artifact = model.artifact.name if model.artifact else ""
    model.delete()
    if artifact:
        transaction.on_commit(
            lambda: CatalogModel._meta.get_field("artifact").storage.delete(artifact)
        )


# --- Profile Bundles --------------------------------------------------------------------------


def bundles_builtin_ensure() -> None:
    """Seed the built-in bundles if missing: what migration 0004 does, for tests whose
    transactional neighbours flushed the tables (and for repairing an install by hand)."""
    import importlib

    from django.apps import apps

    importlib.import_module("catalog.migrations.0004_builtin_profile_bundles").seed(apps, None)
    importlib.import_module(
        "catalog.migrations.0005_builtin_nim_bundle_without_modeldeck_settings"
    ).drop_owned_variables(apps, None)
    importlib.import_module("catalog.migrations.0006_builtin_torchserve_bundle").seed(apps, None)


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_VAR_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_BUNDLE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,98}[a-z0-9])?$")
_IMAGE = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")


def _clean_variables(variables: Any) -> list[dict[str, Any]]:
    if variables in (None, ""):
        return []
    if not isinstance(variables, list):
        raise ValidationError(
            {"variables": "Variables are a list of {name, type, default, description}."}
        )
    cleaned, seen = [], set()
    for i, var in enumerate(variables, start=1):
        if not isinstance(var, Mapping):
            raise ValidationError(
                {"variables": f"Variable {i} is not an object with name, type and default."}
            )
        name = str(var.get("name", "")).strip()
        vtype = str(var.get("type", "string")).strip()
        if not _VAR_NAME.match(name):
            raise ValidationError(
                {"variables": f"Variable {i}: “{name}” is not a valid name (lowercase, digits, _)."}
            )
        if name in seen:
            raise ValidationError({"variables": f"Variable “{name}” appears twice."})
        seen.add(name)
        if vtype not in VARIABLE_TYPES:
            raise ValidationError(
                {
                    "variables": f"Variable “{name}”: type must be one of {', '.join(VARIABLE_TYPES)}."
                }
            )
        default = var.get("default")
        if default == "":
            default = None
        if default is not None:
            try:
                default = {
                    "integer": lambda v: (
                        int(v) if not isinstance(v, bool) and float(v) == int(float(v)) else _bad()
                    ),
                    "number": lambda v: float(v) if not isinstance(v, bool) else _bad(),
                    "boolean": lambda v: (
                        v if isinstance(v, bool) else {"true": True, "false": False}[str(v).lower()]
                    ),
                    "string": str,
                }[vtype](default)
            except (ValueError, TypeError, KeyError):
                raise ValidationError(
                    {"variables": f"Variable “{name}”: default {default!r} is not a valid {vtype}."}
                ) from None
        cleaned.append(
            {
                "name": name,
                "type": vtype,
                "default": default,
                "description": str(var.get("description", "")),
            }
        )
    return cleaned


def _bad() -> Any:
    raise ValueError


def _clean_bundle_fields(
    *, name: str, engine: str, image: str, default_args: Any, variables: Any, labels: Any
) -> dict[str, Any]:
    errors: dict[str, str] = {}
    if not _BUNDLE_NAME.match(name or ""):
        errors["name"] = "Use lowercase letters, digits and dashes, e.g. vllm-h100."
    if engine not in Engine.values:
        errors["engine"] = f"Engine must be one of {', '.join(Engine.values)}."
    image = (image or "").strip()
    if not _IMAGE.match(image):
        errors["image"] = "Give an image with a tag or digest, e.g. vllm/vllm-openai:v0.8.5."
    if default_args in (None, ""):
        default_args = []
    if not isinstance(default_args, list) or not all(isinstance(a, str) for a in default_args):
        errors["default_args"] = (
            'Default arguments are a list of strings, e.g. ["--dtype", "auto"].'
        )
    if labels in (None, ""):
        labels = {}
    if not isinstance(labels, Mapping):
        errors["labels"] = "Labels are an object of name: value."
    else:
        labels = {str(k): str(v) for k, v in labels.items()}
        for key, value in labels.items():
            if not _LABEL_NAME.match(key) or len(value) > 63 or not _LABEL_VALUE.match(value):
                errors["labels"] = f"“{key}: {value}” is not a valid Kubernetes label."
                break
        if "engine" not in errors:
            labels.setdefault(ENGINE_LABEL, engine)
    if errors:
        raise ValidationError(errors)
    return {
        "engine": engine,
        "image": image,
        "default_args": default_args,
        "variables": _clean_variables(variables),
        "labels": labels,
    }


def bundle_field_errors(
    *, name: str, engine: str, image: str, default_args: Any, variables: Any, labels: Any
) -> dict[str, list[str]]:
    """The rules bundle_create and bundle_update apply to a bundle's fields, as field errors (the
    bundle form shows them beside its own)."""
    try:
        _clean_bundle_fields(
            name=name, engine=engine, image=image, default_args=default_args, variables=variables, labels=labels
        )
    except ValidationError as exc:
        return exc.message_dict
    return {}


def bundle_create(
    *,
    user: AbstractBaseUser | None,
    organization: Organization,
    name: str,
    engine: str,
    image: str,
    default_args: Sequence[str] | None = None,
    variables: list[dict[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    description: str = "",
) -> ProfileBundle:
    """A new bundle of the organization, at version 1."""
    permissions.require(user, "change", organization, what="the catalog")
    name = (name or "").strip()
    fields = _clean_bundle_fields(
        name=name,
        engine=engine,
        image=image,
        default_args=list(default_args or []),
        variables=variables,
        labels=labels,
    )
    if ProfileBundle.objects.filter(organization=organization, name=name).exists():
        raise ValidationError(
            {
                "name": f"{organization.name} already has a bundle named “{name}”: edit it to make a new version."
            }
        )
    if ProfileBundle.objects.filter(organization__isnull=True, name=name).exists():
        raise ValidationError({"name": f"“{name}” is a built-in bundle's name; choose another."})
    bundle = ProfileBundle(
        organization=organization,
        name=name,
        version=1,
        description=description,
        created_by=_creator(user),
        **fields,
    )
    bundle.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            bundle.save()
    except IntegrityError as exc:
        raise ValidationError({"name": f"A bundle named “{name}” was just created."}) from exc
    return bundle


# The console's edit page and the REST API refuse a built-in bundle with the same words; the
# console's "Duplicate" (a new bundle prefilled from it) and POST /api/v1/bundles/ make the copy.
BUILTIN_BUNDLE_READ_ONLY = (
    "Built-in bundles can't be edited; duplicate it to change it: the copy is your "
    "organization's own bundle."
)


def bundle_update(
    *,
    user: AbstractBaseUser | None,
    bundle: ProfileBundle,
    engine: str | None = None,
    image: str | None = None,
    default_args: Sequence[str] | None = None,
    variables: list[dict[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    description: str | None = None,
) -> ProfileBundle:
    """Edit a bundle: this makes a new version (newest + 1); older versions stay as they were,
    so deployments made with them keep their exact recipe."""
    if bundle.organization is None:
        if user is not None and not getattr(user, "is_superuser", False):
            raise PermissionDenied(BUILTIN_BUNDLE_READ_ONLY)
    else:
        permissions.require(user, "change", bundle, what="the catalog")
    with transaction.atomic():
        versions = ProfileBundle.objects.select_for_update().filter(
            organization=bundle.organization, name=bundle.name
        )
        latest = versions.order_by("-version").first() or bundle
        top = versions.aggregate(top=Max("version"))["top"] or bundle.version
        fields = _clean_bundle_fields(
            name=latest.name,
            engine=engine if engine is not None else latest.engine,
            image=image if image is not None else latest.image,
            default_args=list(default_args) if default_args is not None else latest.default_args,
            variables=variables if variables is not None else latest.variables,
            labels=dict(labels) if labels is not None else latest.labels,
        )
        new = ProfileBundle(
            organization=latest.organization,
            name=latest.name,
            version=top + 1,
            description=description if description is not None else latest.description,
            created_by=_creator(user),
            **fields,
        )
        new.full_clean(validate_constraints=False)
        new.save()
    return new


def bundle_delete(*, user: AbstractBaseUser | None, bundle: ProfileBundle) -> None:
    """Delete every version of an organization's bundle, if no rule or deployment uses one."""
    if bundle.organization is None:
        raise PermissionDenied("Built-in bundles can't be deleted.")
    permissions.require(user, "change", bundle, what="the catalog")
    versions = ProfileBundle.objects.filter(organization=bundle.organization, name=bundle.name)
    rules = MaaSMapping.objects.filter(bundle__in=versions).count()
    if rules:
        raise ValidationError(
            f"{rules} MaaS mapping rule(s) use “{bundle.name}”; change or delete them first."
        )

    used = ModelDeployment.objects.filter(bundle__in=versions).count()
    if used:
        raise ValidationError(
            f"{used} deployment{'' if used == 1 else 's'} run{'s' if used == 1 else ''} with “{bundle.name}”; it can't be deleted."
        )
    versions.delete()


# --- MaaS mappings ---------------------------------------------------------------------------


def _clean_rule(
    *,
    project: Project,
    source: str,
    bundle: ProfileBundle,
    task: str,
    name_pattern: str,
    min_parameters: int | None,
    max_parameters: int | None,
    license: str,
) -> dict[str, Any]:
    errors: dict[str, str] = {}
    if source not in ModelSource.values:
        errors["source"] = f"Source must be one of {', '.join(ModelSource.values)}."
    if bundle is None or (bundle.organization_id not in (None, project.organization_id)):
        errors["bundle"] = "Choose a built-in bundle or one of this organization's."
    for field_name, value in (
        ("min_parameters", min_parameters),
        ("max_parameters", max_parameters),
    ):
        if value is not None and value < 0:
            errors[field_name] = "A parameter count cannot be negative."
        elif value is not None and value > MAX_PARAMETERS:
            errors[field_name] = PARAMETERS_TOO_MANY
    if (
        min_parameters is not None
        and max_parameters is not None
        and min_parameters > max_parameters
    ):
        errors["max_parameters"] = "The largest size must not be below the smallest."
    if errors:
        raise ValidationError(errors)
    return {
        "source": source,
        "bundle": bundle,
        "task": (task or "").strip(),
        "name_pattern": (name_pattern or "").strip(),
        "min_parameters": min_parameters,
        "max_parameters": max_parameters,
        "license": (license or "").strip(),
    }


def mappings_default_apply(*, project: Project) -> int:
    """Give a project the organization's default MaaS rules (catalog.maas.DEFAULT_RULES) after the
    rules it has, skipping any it already has; returns how many were added. Called by
    projects.services.project_create inside its transaction, so a deploy from the catalog finds
    a bundle in a new project without anyone adding rules by hand."""
    added = 0
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        top = MaaSMapping.objects.filter(project=project).aggregate(top=Max("position"))["top"] or 0
        for source, task, name in maas.DEFAULT_RULES:
            bundle = maas.default_rule_bundle(project.organization_id, name)
            if bundle is None or MaaSMapping.objects.filter(
                project=project, source=source, task=task, bundle__name=name
            ).exists():
                continue
            top += 1
            MaaSMapping.objects.create(project=project, position=top, source=source, task=task, bundle=bundle)
            added += 1
    return added


def mapping_create(
    *,
    user: AbstractBaseUser | None,
    project: Project,
    source: str,
    bundle: ProfileBundle,
    task: str = "",
    name_pattern: str = "",
    min_parameters: int | None = None,
    max_parameters: int | None = None,
    license: str = "",
) -> MaaSMapping:
    """Append a rule at the end of the project's order (move it up to give it precedence)."""
    permissions.require(user, "change", project, what="the catalog")
    fields = _clean_rule(
        project=project,
        source=source,
        bundle=bundle,
        task=task,
        name_pattern=name_pattern,
        min_parameters=min_parameters,
        max_parameters=max_parameters,
        license=license,
    )
    with transaction.atomic():
        # Lock the project row: two rules added at once must not get the same position.
        Project.objects.select_for_update().get(pk=project.pk)
        top = MaaSMapping.objects.filter(project=project).aggregate(top=Max("position"))["top"] or 0
        mapping = MaaSMapping(project=project, position=top + 1, **fields)
        mapping.full_clean()
        mapping.save()
    return mapping


def mapping_update(
    *, user: AbstractBaseUser | None, mapping: MaaSMapping, **changes: Any
) -> MaaSMapping:
    permissions.require(user, "change", mapping, what="the catalog")
    allowed = {
        "source",
        "bundle",
        "task",
        "name_pattern",
        "min_parameters",
        "max_parameters",
        "license",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError({name: "This field can't be changed." for name in unknown})
    current = {name: getattr(mapping, name) for name in allowed}
    current.update(changes)
    fields = _clean_rule(project=mapping.project, **current)
    for name, value in fields.items():
        setattr(mapping, name, value)
    mapping.full_clean()
    mapping.save()
    return mapping


def _renumber(project: Project, ordered: Iterable[MaaSMapping]) -> None:
    for position, rule in enumerate(ordered, start=1):
        if rule.position != position:
            MaaSMapping.objects.filter(pk=rule.pk).update(position=position)


def mapping_reorder(
    *, user: AbstractBaseUser | None, project: Project, order: Sequence[int]
) -> list[MaaSMapping]:
    """Put the project's rules in the given order of ids (every rule exactly once)."""
    permissions.require(user, "change", project, what="the catalog")
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        rules = {m.pk: m for m in MaaSMapping.objects.filter(project=project)}
        try:
            wanted = [int(pk) for pk in order]
        except (TypeError, ValueError):
            raise ValidationError({"order": "The order is a list of rule ids."}) from None
        if sorted(wanted) != sorted(rules):
            raise ValidationError(
                {"order": f"Give each of the project's {len(rules)} rule ids exactly once."}
            )
        _renumber(project, [rules[pk] for pk in wanted])
    return list(MaaSMapping.objects.filter(project=project).order_by("position", "id"))


def mapping_move(*, user: AbstractBaseUser | None, mapping: MaaSMapping, direction: str) -> None:
    """Swap a rule with its neighbour above ("up") or below ("down")."""
    if direction not in ("up", "down"):
        raise ValidationError({"direction": "Move a rule up or down."})
    ids = list(
        MaaSMapping.objects.filter(project=mapping.project)
        .order_by("position", "id")
        .values_list("pk", flat=True)
    )
    i = ids.index(mapping.pk)
    j = i - 1 if direction == "up" else i + 1
    if 0 <= j < len(ids):
        ids[i], ids[j] = ids[j], ids[i]
    mapping_reorder(user=user, project=mapping.project, order=ids)


def mapping_delete(*, user: AbstractBaseUser | None, mapping: MaaSMapping) -> None:
    permissions.require(user, "change", mapping, what="the catalog")
    project = mapping.project
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        mapping.delete()
        _renumber(project, MaaSMapping.objects.filter(project=project).order_by("position", "id"))
