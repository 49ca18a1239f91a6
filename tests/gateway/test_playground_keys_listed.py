"""The playground's short-lived keys (one each time it opens) stay out of the key lists people read:
the Developer Hub's API keys page says how many it hides and shows them on request, keeping the
list's sort and search; the REST API's key list takes the same choice (projects.keys)."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from projects.keys import api_key_create, playground_key_issue
from projects.models import APIKey
from tests.conftest import login
from tests.factories import rest_api_client
from tests.gateway.conftest import make_deployment

pytestmark = pytest.mark.django_db


@pytest.fixture
def keys(tenants):
    """The member's keys: two made by hand (one named like the playground's and living as short)
    and three from the playground (qwen opened twice: the first of those two is revoked)."""
    qwen = make_deployment(tenants.project, "qwen", served_model_name="qwen-chat")
    llama = make_deployment(tenants.project, "llama", served_model_name="llama-8b")
    made = {
        "support-bot": api_key_create(user=tenants.member, organization=tenants.org, name="support-bot")[0],
        "manual": api_key_create(
            user=tenants.member, organization=tenants.org, name="Playground · my own",
            expires_at=timezone.now() + timedelta(minutes=10),
        )[0],
    }  # fmt: skip
    playground = [
        playground_key_issue(user=tenants.member, organization=tenants.org, deployment=d)[0]
        for d in (qwen, qwen, llama)
    ]
    return made, playground


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-key="([^"]+)">', page)


def _link(page: str, text: str) -> str:
    return html.unescape(re.search(rf'id="playground-keys-note".*?<a href="([^"]+)">{text}</a>', page, re.S).group(1))


def test_the_key_list_hides_playground_keys_and_shows_them_on_request_keeping_sort_and_search(tenants, keys):
    made, playground = keys
    client = login(tenants.member)
    page = client.get(reverse("devhub:keys") + "?sort=name").content.decode()
    assert _rows(page) == [made["manual"].prefix, made["support-bot"].prefix]  # by name, hand-made only
    assert "3 playground keys hidden: the Playground makes one each time it opens, expiring within 15 minutes." in page
    show = _link(page, "Show")
    assert show == reverse("devhub:keys") + "?sort=name&playground=include"

    page = client.get(show).content.decode()
    assert sorted(_rows(page)) == sorted([k.prefix for k in playground] + [k.prefix for k in made.values()])
    assert "Showing 3 playground keys" in page
    assert _link(page, "Hide") == reverse("devhub:keys") + "?sort=name"
    # Sorting, searching and paging keep showing them.
    sort_links = [html.unescape(h) for h in re.findall(r'<th class="server-sort[^>]*><a href="([^"]+)"', page)]
    assert sort_links and all("playground=include" in h for h in sort_links), sort_links
    assert '<input type="hidden" name="playground" value="include">' in page

    # A search counts the playground keys it matches.
    page = client.get(reverse("devhub:keys") + "?q=qwen").content.decode()
    assert _rows(page) == [] and "2 playground keys hidden" in page
    assert "No key matches." in page
    page = client.get(reverse("devhub:keys") + "?q=support").content.decode()
    assert _rows(page) == [made["support-bot"].prefix] and 'id="playground-keys-note"' not in page

    # Revoking one while they are shown comes back to the list with them shown.
    live = playground[-1]
    response = client.post(reverse("devhub:key_revoke", args=[live.pk]), {"playground": "include"})
    assert response["Location"] == reverse("devhub:keys") + "?playground=include"


def test_an_admin_sees_the_organizations_keys_without_the_playgrounds_too(tenants, keys):
    made, playground = keys
    page = login(tenants.owner).get(reverse("devhub:keys") + "?view=organization").content.decode()
    assert sorted(_rows(page)) == sorted(k.prefix for k in made.values())
    assert "3 playground keys hidden" in page
    assert _link(page, "Show") == reverse("devhub:keys") + "?view=organization&playground=include"


def test_only_playground_keys_say_so_instead_of_no_keys_yet(tenants):
    deployment = make_deployment(tenants.project, "qwen", served_model_name="qwen-chat")
    playground_key_issue(user=tenants.member, organization=tenants.org, deployment=deployment)
    page = login(tenants.member).get(reverse("devhub:keys")).content.decode()
    assert "No keys yet" not in page and "Only playground keys so far." in page
    assert "1 playground key hidden" in page


def test_the_key_page_reads_as_many_queries_with_many_playground_keys(tenants):
    client = login(tenants.member)

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("devhub:keys")).status_code == 200
        return len(ctx.captured_queries)

    deployments = [make_deployment(tenants.project, f"d{i}", served_model_name=f"m{i}") for i in range(12)]
    api_key_create(user=tenants.member, organization=tenants.org, name="bot")
    playground_key_issue(user=tenants.member, organization=tenants.org, deployment=deployments[0])
    few = queries()
    for d in deployments[1:]:
        playground_key_issue(user=tenants.member, organization=tenants.org, deployment=d)
    assert queries() == few


def test_the_rest_key_list_takes_the_same_choice(tenants, keys):
    made, playground = keys
    client = rest_api_client(tenants.member)

    def listed(query: str = "") -> list[str]:
        response = client.get("/api/v1/keys/" + query)
        assert response.status_code == 200, response.json()
        return sorted(k["prefix"] for k in response.json()["results"])

    from_playground_pks = [k.pk for k in playground]  # the rest: made by hand and the client's REST key
    hand_made = sorted(APIKey.objects.filter(user=tenants.member).exclude(pk__in=from_playground_pks)
                       .values_list("prefix", flat=True))  # fmt: skip
    assert set(k.prefix for k in made.values()) < set(hand_made)
    from_playground = sorted(k.prefix for k in playground)
    assert listed() == listed("?playground=hide") == hand_made
    assert listed("?playground=include") == sorted(hand_made + from_playground)
    assert listed("?playground=only") == from_playground
    flags = {k["prefix"]: k["playground"] for k in client.get("/api/v1/keys/?playground=include").json()["results"]}
    assert {prefix for prefix, flag in flags.items() if flag} == set(from_playground)
    refused = client.get("/api/v1/keys/?playground=all")
    assert refused.status_code == 400 and "hide, include, only" in str(refused.json()["playground"])
    # A key's own URL finds a playground key all the same.
    assert client.get(f"/api/v1/keys/{playground[0].pk}/").status_code == 200
    admin = rest_api_client(tenants.owner)
    every = admin.get(f"/api/v1/keys/?owner=any&organization={tenants.org.pk}&playground=only").json()["results"]
    assert sorted(k["prefix"] for k in every) == from_playground


def test_the_playground_filter_is_in_the_schema(tenants):
    schema = rest_api_client(tenants.owner).get("/api/schema/?format=json").json()
    params = {p["name"]: p for p in schema["paths"]["/api/v1/keys/"]["get"]["parameters"]}
    assert params["playground"]["schema"]["enum"] == ["hide", "include", "only"]
    assert "`hide` (default)" in params["playground"]["description"]


def test_keys_made_before_the_flag_are_told_apart_as_the_lists_did_then(tenants):
    """projects/migrations/0010: the playground's keys of before are marked; keys made by hand,
    even named like them, stay listed."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("projects.migrations.0010_api_key_playground_flag")
    deployment = make_deployment(tenants.project, "qwen", served_model_name="qwen-chat")
    minted = playground_key_issue(user=tenants.member, organization=tenants.org, deployment=deployment)[0]
    by_hand = api_key_create(
        user=tenants.member, organization=tenants.org, name="Playground · mine",
        expires_at=timezone.now() + timedelta(days=1),
    )[0]  # fmt: skip
    APIKey.objects.update(playground=False)  # as the rows were before the field
    migration.mark_playground_keys(apps, None)
    assert set(APIKey.objects.filter(playground=True)) == {minted}
    assert APIKey.objects.get(pk=by_hand.pk).playground is False
