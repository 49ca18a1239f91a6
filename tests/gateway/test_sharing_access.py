"""Sharing and access policies at the gateway: shared deployments answer other organizations' keys."""

from __future__ import annotations

import httpx
import openai
import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from gateway.models import UsageRecord
from gateway.tasks import flush_usage
from sharing.services import access_policy_set, deployment_share_set
from tests.conftest import login
from tests.gateway.conftest import make_deployment, make_key

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "globex-chat", "messages": [{"role": "user", "content": "hi"}]}


def post(gateway, secret: str, body: dict = CHAT) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {secret}"},
    )


@pytest.fixture
def globex_deployment(tenants):
    return make_deployment(tenants.other_project, "globex-llm", served_model_name="globex-chat")


def test_a_deployment_shared_with_acme_answers_acme_keys_and_is_metered_to_acme(
    tenants, gateway, globex_deployment
):
    secret = make_key(tenants.member, tenants.org)
    assert post(gateway, secret).status_code == 404  # not shared yet: nothing leaks
    deployment_share_set(
        user=tenants.outsider,
        deployment=globex_deployment,
        mode="specific",
        organizations=[tenants.org],
    )
    response = post(gateway, secret)  # the share bumped the generation: seen at once
    assert response.status_code == 200, response.text
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=0)
    assert "globex-chat" in [m.id for m in client.models.list()]
    flush_usage()
    record = UsageRecord.objects.get()
    assert record.organization == tenants.org and record.deployment == globex_deployment
    html = login(tenants.member).get(reverse("devhub:models")).content.decode()
    assert "globex-chat" in html and "Shared by Globex" in html


def test_unsharing_is_seen_on_the_next_request(tenants, gateway, globex_deployment):
    secret = make_key(tenants.member, tenants.org)
    deployment_share_set(user=tenants.outsider, deployment=globex_deployment, mode="all")
    assert post(gateway, secret).status_code == 200
    deployment_share_set(user=tenants.outsider, deployment=globex_deployment, mode="none")
    assert post(gateway, secret).status_code == 404


def test_own_deployment_wins_a_name_clash_with_a_shared_one(
    tenants, gateway, globex_deployment, engine
):
    ours = make_deployment(tenants.project, "acme-llm", served_model_name="globex-chat")
    deployment_share_set(user=tenants.outsider, deployment=globex_deployment, mode="all")
    secret = make_key(tenants.member, tenants.org)
    assert post(gateway, secret).status_code == 200
    flush_usage()
    assert UsageRecord.objects.get().deployment == ours


def test_users_access_policy_refuses_other_users_with_403(tenants, gateway):
    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    access_policy_set(
        user=tenants.owner, deployment=deployment, kind="users", users=[tenants.owner]
    )
    body = {**CHAT, "model": "llama-chat"}
    assert post(gateway, make_key(tenants.owner, tenants.org), body).status_code == 200
    response = post(gateway, make_key(tenants.member, tenants.org), body)
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_groups_access_policy_lets_group_members_in(tenants, gateway):
    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    team = Group.objects.create(name="ml-team")
    tenants.member.groups.add(team)
    access_policy_set(user=tenants.owner, deployment=deployment, kind="groups", groups=[team])
    body = {**CHAT, "model": "llama-chat"}
    assert post(gateway, make_key(tenants.member, tenants.org), body).status_code == 200
    assert post(gateway, make_key(tenants.owner, tenants.org), body).status_code == 403


def test_public_deployment_answers_without_a_key_and_is_metered_to_its_owner(tenants, gateway):
    deployment = make_deployment(tenants.project, "open-llm", served_model_name="open-chat")
    body = {"model": "open-chat", "messages": [{"role": "user", "content": "hello there"}]}
    keyless = httpx.post(gateway.base_url + "/chat/completions", json=body)
    assert keyless.status_code == 401  # authenticated policy (the default): a key is needed
    access_policy_set(user=tenants.owner, deployment=deployment, kind="public")
    answer = httpx.post(gateway.base_url + "/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "You said: hello there"
    flush_usage()
    record = UsageRecord.objects.get()
    assert record.organization == tenants.org and record.deployment == deployment
    assert record.api_key_id is None and record.user is None
    # A name no public deployment has gets the same 401 as any keyless call: nothing leaks.
    other = httpx.post(gateway.base_url + "/chat/completions", json={**body, "model": "globex-chat"})
    assert other.status_code == 401 and "didn't provide an API key" in other.json()["error"]["message"]
    # Back to authenticated: the keyless path closes on the next request.
    access_policy_set(user=tenants.owner, deployment=deployment, kind="authenticated")
    assert httpx.post(gateway.base_url + "/chat/completions", json=body).status_code == 401


def test_two_public_deployments_with_one_name_need_a_key(tenants, gateway):
    ours = make_deployment(tenants.project, "open-a", served_model_name="same-name")
    theirs = make_deployment(tenants.other_project, "open-b", served_model_name="same-name")
    access_policy_set(user=tenants.owner, deployment=ours, kind="public")
    access_policy_set(user=tenants.outsider, deployment=theirs, kind="public")
    body = {"model": "same-name", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(gateway.base_url + "/chat/completions", json=body)
    assert response.status_code == 401 and "Several public deployments" in response.json()["error"]["message"]
