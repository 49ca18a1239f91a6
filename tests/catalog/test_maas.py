"""MaaS resolver: ordered rules, first match wins, each filter, a clear message when nothing matches."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog import maas, services
from catalog.models import CatalogModel, MaaSMapping, ProfileBundle
from tests.catalog.catalog_fixtures import builtin_bundles  # noqa: F401 - fixture
from tests.conftest import login

pytestmark = pytest.mark.django_db


def builtin(name: str) -> ProfileBundle:
    return ProfileBundle.objects.get(organization__isnull=True, name=name)


def hf_model(
    org,
    name="llama",
    repo_id="meta-llama/Llama-3.1-8B-Instruct",
    task="text-generation",
    parameters=8_030_261_248,
    license="llama3.1",
):
    return CatalogModel.objects.create(
        organization=org,
        name=name,
        source="huggingface",
        repo_id=repo_id,
        revision="a" * 40,
        task=task,
        parameters=parameters,
        license=license,
    )


def rule(project, bundle, **fields):
    return services.mapping_create(
        user=None, project=project, bundle=bundle, **{"source": "huggingface", **fields}
    )


def test_builtin_bundles_are_seeded_for_the_five_engines():
    engines = {b.engine for b in ProfileBundle.objects.filter(organization__isnull=True)}
    assert engines == {"vllm", "nim", "tgi", "tei", "torchserve"}
    vllm = builtin("vllm")
    assert (
        vllm.image.startswith("vllm/vllm-openai:v0.")
        and vllm.labels["modeldeck.io/inference-engine"] == "vllm"
    )
    assert builtin("nim-llm").image == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"


def test_first_matching_rule_wins(tenants):
    model = hf_model(tenants.org)
    rule(tenants.project, builtin("tgi"), task="text-generation")
    rule(tenants.project, builtin("vllm"), task="text-generation")
    r = maas.resolve(tenants.project, model)
    assert r.bundle == builtin("tgi") and r.position == 1 and r.rule.bundle.name == "tgi"
    assert "Rule 1" in r.message


def test_reordering_changes_the_winner(tenants):
    model = hf_model(tenants.org)
    first = rule(tenants.project, builtin("tgi"))
    second = rule(tenants.project, builtin("vllm"))
    services.mapping_reorder(
        user=tenants.owner, project=tenants.project, order=[second.pk, first.pk]
    )
    r = maas.resolve(tenants.project, model)
    assert r.bundle.name == "vllm" and r.position == 1


@pytest.mark.parametrize(
    "fields, matches",
    [
        ({"source": "ngc"}, False),
        ({"task": "feature-extraction"}, False),
        ({"task": "text-generation"}, True),
        ({"name_pattern": "meta-llama/*"}, True),
        ({"name_pattern": "META-LLAMA/*-instruct"}, True),  # case-insensitive
        ({"name_pattern": "Qwen/*"}, False),
        ({"min_parameters": 7_000_000_000, "max_parameters": 9_000_000_000}, True),
        ({"min_parameters": 10_000_000_000}, False),
        ({"max_parameters": 3_000_000_000}, False),
        ({"license": "llama3.1"}, True),
        ({"license": "apache-2.0"}, False),
    ],
)
def test_each_filter(tenants, fields, matches):
    model = hf_model(tenants.org)
    rule(tenants.project, builtin("vllm"), **fields)
    r = maas.resolve(tenants.project, model)
    assert r.matched is matches
    if not matches:
        assert r.checks[0].reason != "matches"


def test_size_range_does_not_match_a_model_of_unknown_size(tenants):
    model = hf_model(tenants.org, parameters=None)
    rule(tenants.project, builtin("vllm"), min_parameters=1)
    r = maas.resolve(tenants.project, model)
    assert not r.matched and "parameter count is unknown" in r.checks[0].reason


def test_no_match_is_a_message_not_an_exception(tenants):
    model = hf_model(tenants.org, name="embedder", task="feature-extraction")
    rule(tenants.project, builtin("vllm"), task="text-generation")
    r = maas.resolve(tenants.project, model)
    assert r.bundle is None and r.rule is None and r.position is None
    assert "None of the 1 MaaS mapping rule(s)" in r.message and "embedder" in r.message


def test_no_rules_at_all_is_a_message(tenants):
    r = maas.resolve(tenants.project, hf_model(tenants.org))
    assert r.bundle is None and "has no MaaS mappings" in r.message


def test_a_rule_follows_its_bundle_to_the_newest_version(tenants):
    bundle = services.bundle_create(
        user=tenants.owner,
        organization=tenants.org,
        name="vllm-h100",
        engine="vllm",
        image="vllm/vllm-openai:v0.8.5",
    )
    rule(tenants.project, bundle)
    v2 = services.bundle_update(user=tenants.owner, bundle=bundle, image="vllm/vllm-openai:v0.9.2")
    r = maas.resolve(tenants.project, hf_model(tenants.org))
    assert r.bundle == v2 and r.bundle.version == 2


def test_rule_with_another_organizations_bundle_is_refused(tenants):
    theirs = services.bundle_create(
        user=tenants.outsider,
        organization=tenants.other_org,
        name="secret",
        engine="vllm",
        image="vllm/vllm-openai:v0.8.5",
    )
    with pytest.raises(Exception) as info:
        rule(tenants.project, theirs)
    assert "bundle" in info.value.message_dict


def test_mappings_page_adds_moves_and_deletes_rules(owner_client, tenants):
    url = reverse("catalog:mappings", args=[tenants.project.pk])
    owner_client.post(
        url, {"source": "huggingface", "task": "text-generation", "bundle": builtin("vllm").pk}
    )
    owner_client.post(
        url,
        {
            "source": "huggingface",
            "task": "",
            "min_billions": "1",
            "max_billions": "80",
            "bundle": builtin("tgi").pk,
        },
    )
    rules = list(MaaSMapping.objects.filter(project=tenants.project).order_by("position"))
    assert [r.bundle.name for r in rules] == ["vllm", "tgi"] and rules[
        1
    ].max_parameters == 80_000_000_000
    owner_client.post(reverse("catalog:mapping_move", args=[rules[1].pk]), {"direction": "up"})
    assert [
        r.bundle.name
        for r in MaaSMapping.objects.filter(project=tenants.project).order_by("position")
    ] == ["tgi", "vllm"]
    owner_client.post(reverse("catalog:mapping_delete", args=[rules[1].pk]))
    left = list(MaaSMapping.objects.filter(project=tenants.project))
    assert [(r.bundle.name, r.position) for r in left] == [("vllm", 1)]
    page = owner_client.get(url).content.decode()
    assert "Text generation" in page or "text-generation" in page


def test_mapping_form_refuses_an_inverted_size_range(owner_client, tenants):
    url = reverse("catalog:mappings", args=[tenants.project.pk])
    html = owner_client.post(
        url,
        {
            "source": "huggingface",
            "min_billions": "70",
            "max_billions": "7",
            "bundle": builtin("vllm").pk,
        },
    ).content.decode()
    assert "must not be below the smallest" in html and not MaaSMapping.objects.exists()


def test_try_a_model_fragment_explains_the_choice(owner_client, tenants):
    model = hf_model(tenants.org)
    rule(tenants.project, builtin("tgi"), task="feature-extraction")
    rule(tenants.project, builtin("vllm"), task="text-generation")
    html = owner_client.get(
        reverse("catalog:mapping_resolve", args=[tenants.project.pk]),
        {"model": model.pk},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert (
        "Rule 2" in html
        and "vllm v1" in html
        and "task is text-generation, the rule wants feature-extraction" in html
    )


def test_viewer_cannot_change_rules(tenants):
    r = rule(tenants.project, builtin("vllm"))
    client = login(tenants.viewer)
    assert (
        client.post(
            reverse("catalog:mappings", args=[tenants.project.pk]),
            {"source": "ngc", "bundle": builtin("nim-llm").pk},
        ).status_code
        == 403
    )
    assert client.post(reverse("catalog:mapping_delete", args=[r.pk])).status_code == 403
    assert (
        client.post(reverse("catalog:mapping_move", args=[r.pk]), {"direction": "down"}).status_code
        == 403
    )
    assert MaaSMapping.objects.count() == 1


def test_the_bundle_form_shows_every_error_at_once(owner_client):
    """Variables that aren't JSON, a bad name and an image without a tag: one submit names all
    three (the service's name and image rules beside the form's JSON error)."""
    response = owner_client.post("/catalog/bundles/new/", {
        "name": "Bad Name", "engine": "vllm", "image": "vllm", "default_args": "[]",
        "variables": "{not json", "labels": "{}",
    })  # fmt: skip
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert {"name", "image", "variables"} <= set(errors), errors
    assert len(errors["variables"]) == 1
