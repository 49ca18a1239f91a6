"""Catalog pages against the offline Hub through the real huggingface_hub client: search, detail, add."""
# ruff: noqa: F811 - pytest fixtures are imported by name and then requested as arguments

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import CatalogModel
from tests.catalog.catalog_fixtures import (  # noqa: F401 - fixtures
    LLAMA_8B,
    QWEN_05B,
    alice_project,
    bob_project,
    builtin_bundles,
    hub_env,
)
from tests.conftest import login

pytestmark = pytest.mark.django_db


def _search(client, **params):
    return client.get(reverse("catalog:hub_search"), params)


def test_search_filters_by_task_library_and_author(owner_client, hub_env):
    html = _search(owner_client, q="qwen", task="text-generation", author="Qwen").content.decode()
    assert "Qwen/Qwen2.5-7B-Instruct" in html and QWEN_05B in html
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" not in html  # author filter
    html = _search(owner_client, library="sentence-transformers").content.decode()
    assert "sentence-transformers/all-MiniLM-L6-v2" in html and "BAAI/bge-large-en-v1.5" in html
    assert LLAMA_8B not in html
    html = _search(owner_client, task="feature-extraction").content.decode()
    assert "BAAI/bge-large-en-v1.5" in html and "all-MiniLM-L6-v2" not in html
    # The Hub really was asked with those filters (not filtered here after the fact).
    assert any("pipeline_tag=feature-extraction" in path for _, path in hub_env.requests)


def test_search_as_you_type_answers_the_results_fragment_only(owner_client, hub_env):
    response = owner_client.get(
        reverse("catalog:hub_search"), {"q": "llama"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="hub-results-card"' in html
    assert LLAMA_8B in html and QWEN_05B not in html


def test_search_sorts_by_likes_and_pages(owner_client, hub_env, hub_snapshot, settings):
    settings.MODELDECK_HUB_PAGE_SIZE = 8
    page1 = _search(owner_client, sort="likes").content.decode()
    by_likes = sorted(hub_snapshot.values(), key=lambda m: -m["likes"])
    first, second = by_likes[0]["id"], by_likes[1]["id"]
    assert page1.index(first) < page1.index(second)
    assert 'id="hub-next"' in page1 and by_likes[8]["id"] not in page1
    page2 = _search(owner_client, sort="likes", page=2).content.decode()
    assert by_likes[8]["id"] in page2 and first not in page2.split('id="hub-table"')[1]
    assert "← Previous" in page2
    page3 = _search(owner_client, sort="likes", page=3).content.decode()
    assert by_likes[-1]["id"] in page3 and 'id="hub-next"' not in page3


def test_model_page_shows_the_hub_facts(owner_client, hub_env, alice_project, hub_snapshot):
    response = owner_client.get(
        reverse("catalog:hub_model", args=[LLAMA_8B]), {"project": alice_project.pk}
    )
    html = response.content.decode()
    assert response.status_code == 200
    record = hub_snapshot[LLAMA_8B]
    assert "8,030,261,248" in html  # parameters from safetensors metadata
    assert record["sha"] in html
    assert "llama3.1" in html  # license
    assert "gated (manual)" in html
    assert "model-00001-of-00004.safetensors" in html  # files with sizes
    assert "LlamaForCausalLM" in html and "131,072" in html  # config.json facts


def test_add_pins_the_revision_to_the_commit_sha(owner_client, hub_env, tenants, hub_snapshot):
    url = reverse("catalog:hub_model", args=[QWEN_05B])
    response = owner_client.post(
        url, {"repo_id": QWEN_05B, "name": "qwen-small", "revision": "main"}
    )
    model = CatalogModel.objects.get(organization=tenants.org, name="qwen-small")
    assert response.status_code == 302 and response["Location"] == model.get_absolute_url()
    assert model.revision == hub_snapshot[QWEN_05B]["sha"] and len(model.revision) == 40
    assert model.parameters == 494032768 and model.dtype == "bf16" and model.license == "apache-2.0"
    assert model.config["num_hidden_layers"] == 24 and model.config["num_key_value_heads"] == 2
    assert any(f["path"] == "model.safetensors" and f["size"] for f in model.files)
    page = owner_client.get(model.get_absolute_url()).content.decode()
    assert hub_snapshot[QWEN_05B]["sha"] in page and 'id="deployment-count">0<' in page


def test_a_branch_is_pinned_to_the_commit_it_points_at_now(
    owner_client, hub_env, tenants, hub_snapshot
):
    sha = hub_snapshot[QWEN_05B]["sha"]
    hub_env.add_revision(QWEN_05B, "release", sha)
    owner_client.post(
        reverse("catalog:hub_model", args=[QWEN_05B]),
        {"repo_id": QWEN_05B, "name": "pinned", "revision": "release"},
    )
    assert CatalogModel.objects.get(name="pinned").revision == sha


def test_unknown_revision_is_an_error_on_the_revision_field(owner_client, hub_env):
    html = owner_client.post(
        reverse("catalog:hub_model", args=[QWEN_05B]),
        {"repo_id": QWEN_05B, "name": "x", "revision": "no-such-branch"},
    ).content.decode()
    assert "Revision &#x27;no-such-branch&#x27; of Qwen/Qwen2.5-0.5B-Instruct was not found" in html
    assert not CatalogModel.objects.exists()


def test_gated_model_without_access_says_so_and_saves_nothing(owner_client, hub_env, bob_project):
    url = reverse("catalog:hub_model", args=[LLAMA_8B])
    page = owner_client.get(url, {"project": bob_project.pk}).content.decode()
    assert "is gated: accept its license on the Hub" in page
    html = owner_client.post(
        url, {"repo_id": LLAMA_8B, "name": "llama", "project": bob_project.pk}
    ).content.decode()
    assert "is gated: accept its license on the Hub and use a token with access" in html
    assert not CatalogModel.objects.exists()


def test_gated_model_with_access_is_added(owner_client, hub_env, alice_project):
    owner_client.post(
        reverse("catalog:hub_model", args=[LLAMA_8B]),
        {"repo_id": LLAMA_8B, "name": "llama", "project": alice_project.pk},
    )
    model = CatalogModel.objects.get(name="llama")
    assert model.gated and model.parameters == 8030261248


def test_missing_repo_is_a_clear_message(owner_client, hub_env):
    url = reverse("catalog:hub_model", args=["nobody/no-such-model"])
    assert (
        "Model nobody/no-such-model was not found on the Hub"
        in owner_client.get(url).content.decode()
    )
    html = owner_client.post(
        url, {"repo_id": "nobody/no-such-model", "name": "ghost"}
    ).content.decode()
    assert "was not found on the Hub" in html
    assert not CatalogModel.objects.exists()


def test_hub_answering_500_is_a_clear_message_and_nothing_is_saved(owner_client, hub_env):
    hub_env.mode = "error"
    search = _search(owner_client, q="qwen").content.decode()
    assert "is failing (HTTP 500); try again later" in search
    response = owner_client.post(
        reverse("catalog:hub_model", args=[QWEN_05B]), {"repo_id": QWEN_05B, "name": "q"}
    )
    assert response.status_code == 200 and "is failing (HTTP 500)" in response.content.decode()
    assert not CatalogModel.objects.exists()


def test_hub_that_times_out_is_a_clear_message_and_nothing_is_saved(
    owner_client, hub_env, settings
):
    settings.HUB_TIMEOUT_SECONDS = 1
    hub_env.stall_seconds = 3
    hub_env.mode = "stall"
    search = _search(owner_client, q="qwen").content.decode()
    assert "did not answer within 1 s" in search
    html = owner_client.post(
        reverse("catalog:hub_model", args=[QWEN_05B]), {"repo_id": QWEN_05B, "name": "q"}
    ).content.decode()
    assert "did not answer within 1 s" in html
    assert not CatalogModel.objects.exists()


def test_bad_token_is_named_as_the_problem(owner_client, hub_env, tenants):
    from projects.services import integration_set

    integration_set(
        user=None, project=tenants.project, kind="huggingface", secret="hf_not_a_real_token"
    )
    html = _search(owner_client, q="qwen", project=tenants.project.pk).content.decode()
    assert "The Hub rejected the token (401)" in html
    html = owner_client.post(
        reverse("catalog:hub_model", args=[QWEN_05B]),
        {"repo_id": QWEN_05B, "name": "q", "project": tenants.project.pk},
    ).content.decode()
    assert "rejected the token (401)" in html and not CatalogModel.objects.exists()


def test_same_name_twice_is_refused_before_asking_the_hub(owner_client, hub_env, tenants):
    url = reverse("catalog:hub_model", args=[QWEN_05B])
    owner_client.post(url, {"repo_id": QWEN_05B, "name": "dup"})
    hub_env.requests.clear()
    html = owner_client.post(url, {"repo_id": QWEN_05B, "name": "dup"}).content.decode()
    assert "already in Acme" in html
    assert CatalogModel.objects.filter(name="dup").count() == 1


def test_viewer_can_search_but_not_add(hub_env, tenants):
    client = login(tenants.viewer)
    assert QWEN_05B in _search(client, q="qwen").content.decode()
    response = client.post(
        reverse("catalog:hub_model", args=[QWEN_05B]), {"repo_id": QWEN_05B, "name": "v"}
    )
    assert response.status_code == 403 and not CatalogModel.objects.exists()


def test_integration_check_button_asks_the_hub(owner_client, hub_env, alice_project):
    response = owner_client.post(
        reverse("projects:integration_check", args=[alice_project.pk, "huggingface"]),
        HTTP_HX_REQUEST="true",
    )
    alice_project.integrations.get(kind="huggingface").refresh_from_db()
    integration = alice_project.integrations.get(kind="huggingface")
    assert (
        integration.check_ok is True
        and "signed in" in integration.check_message
        and "alice" in integration.check_message
    )
    assert response.status_code == 200


def test_integration_check_reports_a_bad_token(owner_client, hub_env, tenants):
    from projects.services import integration_set

    integration_set(user=None, project=tenants.project, kind="huggingface", secret="hf_revoked")
    owner_client.post(
        reverse("projects:integration_check", args=[tenants.project.pk, "huggingface"])
    )
    integration = tenants.project.integrations.get(kind="huggingface")
    assert integration.check_ok is False and "rejected the token (401)" in integration.check_message
