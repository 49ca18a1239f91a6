"""Demo data: a small Hugging Face model ready to deploy and MaaS rules for the demo project; idempotent."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import io

import pytest

from catalog import demo, maas
from catalog.models import CatalogModel, MaaSMapping
from tests.catalog.catalog_fixtures import builtin_bundles  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db


def test_bootstrap_adds_qwen_and_rules_once(tenants, hub_snapshot):
    for _ in range(2):
        demo.bootstrap(
            organization=tenants.org,
            project=tenants.project,
            admin=tenants.owner,
            stdout=io.StringIO(),
        )
    model = CatalogModel.objects.get(organization=tenants.org)
    record = hub_snapshot["Qwen/Qwen2.5-0.5B-Instruct"]
    assert model.repo_id == "Qwen/Qwen2.5-0.5B-Instruct" and model.revision == record["sha"]
    assert (
        model.parameters == 494032768
        and model.config["num_hidden_layers"] == 24
        and model.config["max_position_embeddings"] == 32768
    )
    rules = list(MaaSMapping.objects.filter(project=tenants.project).order_by("position"))
    assert [(r.source, r.task, r.bundle.name) for r in rules][:3] == [
        ("huggingface", "text-generation", "vllm"),
        ("huggingface", "feature-extraction", "tei"),
        ("huggingface", "sentence-similarity", "tei"),
    ]
    assert maas.resolve(tenants.project, model).bundle.engine == "vllm"
    embedder = CatalogModel.objects.create(
        organization=tenants.org, name="minilm", source="huggingface", task="sentence-similarity"
    )
    assert maas.resolve(tenants.project, embedder).bundle.engine == "tei"
