"""Demo catalog data: a small Hugging Face model ready to deploy in the sandbox, and MaaS rules for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from django.db import transaction

from catalog.hub import _checkpoint_dtype, parse_config
from catalog.maas import DEFAULT_RULES
from catalog.models import CatalogModel, MaaSMapping, ModelSource, ProfileBundle
from projects.models import Organization, Project

DEMO_REPO_ID = "Qwen/Qwen2.5-0.5B-Instruct"
DEMO_MODEL_NAME = "qwen2.5-0.5b-instruct"
# (source, task) → built-in bundle name; the demo project's rules, in order.
# The demo model's record from the recorded Hub snapshot (sandbox/snapshot), copied so the
# product never reads the simulators' files.
DEMO_HUB_SNAPSHOT = Path(__file__).resolve().parent / "demo_model.json"
DEMO_RULES = list(DEFAULT_RULES)  # the demo project predates the defaults: it gets them here


def _snapshot_record(repo_id: str, snapshot: Path) -> dict[str, Any]:
    # The recorded Hub snapshot, so the demo needs no network and pins a real commit.
    models = json.loads(snapshot.read_text())["models"]
    return next(m for m in models if m["id"] == repo_id)


def _builtin(name: str) -> ProfileBundle | None:
    return (
        ProfileBundle.objects.filter(organization__isnull=True, name=name)
        .order_by("-version")
        .first()
    )


def model_fields_from_snapshot(repo_id: str, snapshot: Path = DEMO_HUB_SNAPSHOT) -> dict[str, Any]:
    """A catalog model's fields for `repo_id` from the snapshot, as `hub.model_detail` would give them."""
    record = _snapshot_record(repo_id, snapshot)
    config = parse_config(record.get("config") or {})
    by_dtype = (record.get("safetensors") or {}).get("parameters") or {}
    files = [
        {"path": f["path"], "size": f.get("size"), "lfs": f["path"].endswith(".safetensors")}
        for f in record.get("files") or []
    ]
    weights = sum(f["size"] or 0 for f in files if f["path"].endswith(".safetensors"))
    card = record.get("cardData") or {}
    return {
        "repo_id": record["id"],
        "revision": record["sha"],
        "task": record.get("pipeline_tag") or "",
        "library": record.get("library_name") or "",
        "license": card.get("license") or "",
        "gated": bool(record.get("gated")),
        "parameters": (record.get("safetensors") or {}).get("total"),
        "dtype": _checkpoint_dtype(config, by_dtype) or "",
        "size_bytes": weights or None,
        "config": config.as_dict(),
        "tags": list(record.get("tags") or []),
        "files": files,
    }


def bootstrap(
    *, organization: Organization, project: Project, admin, stdout: TextIO | None = None
) -> None:
    """Idempotent: running it again changes nothing that is already there."""
    with transaction.atomic():
        fields = model_fields_from_snapshot(DEMO_REPO_ID)
        model, created = CatalogModel.objects.get_or_create(
            organization=organization,
            name=DEMO_MODEL_NAME,
            defaults={
                "source": ModelSource.HUGGINGFACE,
                "description": "Small instruction-tuned chat model; runs in the sandbox pool.",
                "created_by": admin,
                **fields,
            },
        )
        added_rules = 0
        for source, task, bundle_name in DEMO_RULES:
            bundle = _builtin(bundle_name)
            if bundle is None:
                continue
            exists = MaaSMapping.objects.filter(
                project=project, source=source, task=task, bundle__name=bundle_name
            ).exists()
            if not exists:
                position = (
                    MaaSMapping.objects.filter(project=project)
                    .order_by("-position")
                    .values_list("position", flat=True)
                    .first()
                    or 0
                ) + 1
                MaaSMapping.objects.create(
                    project=project, position=position, source=source, task=task, bundle=bundle
                )
                added_rules += 1
    if stdout is not None:
        state = "added" if created else "already there"
        stdout.write(
            f"Catalog: {model.repo_id}@{model.revision[:12]} {state}; {added_rules} MaaS rule(s) added."
        )
