"""API keys live and die with their owner: removed or deactivated members get 401 on the very
next request, through the per-user generation in Redis (no TTL wait), in every gateway."""

from __future__ import annotations

import httpx
import pytest
from django.contrib.auth import get_user_model

import gateway.cache
from deployments.models import DeploymentState, ModelDeployment
from projects.keys import api_key_create
from projects.models import APIKey, APIKeyScope, Membership
from projects.services import membership_remove
from tests.gateway.conftest import make_deployment, make_key, start_console

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}]}


def post(server, secret: str, body: dict = CHAT) -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions", json=body,
        headers={"authorization": f"Bearer {secret}"}, timeout=30,
    )  # fmt: skip


@pytest.fixture
def deployment(tenants, gateway):
    return make_deployment(tenants.project, "llama", served_model_name="llama-chat")


@pytest.fixture
def second(gateway):
    server = start_console()
    yield server
    server.stop()


@pytest.fixture
def as_another_process(monkeypatch):
    """The test's gateways run in this process, where invalidation also moves an in-process
    counter. Freeze that counter so only the Redis generation can tell them: as for a gateway
    running in another process (the production layout)."""
    frozen = dict(gateway.cache._local_user_generations)
    monkeypatch.setattr(gateway.cache, "_local_user_generations", frozen)

    def redis_only(user_id: int) -> None:
        saved = dict(frozen)
        original(user_id)
        frozen.clear()
        frozen.update(saved)

    original = gateway.cache.invalidate_user
    monkeypatch.setattr(gateway.cache, "invalidate_user", redis_only)


def refusal(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    return error["message"]


def test_removed_member_gets_401_right_after_removal_in_every_gateway(
    tenants, deployment, second, as_another_process
):
    secret = make_key(tenants.member, tenants.org)
    servers = [second, start_console()]
    try:
        for server in servers:  # both have the key cached
            assert post(server, secret).status_code == 200
        membership = Membership.objects.get(user=tenants.member, organization=tenants.org)
        revoked = membership_remove(user=tenants.owner, membership=membership)
        assert revoked == 1
        for server in servers:
            assert "revoked" in refusal(post(server, secret))
    finally:
        servers[1].stop()
    key = APIKey.objects.get(user=tenants.member)
    assert key.revoked_at is not None and key.revoked_by == tenants.owner
    assert key.revoked_reason == "Owner member was removed from Acme by owner."


def test_membership_deleted_outside_the_services_is_refused_at_once(
    tenants, deployment, gateway, as_another_process
):
    # The Django admin, a shell or a script: no service ran, the key is not revoked, yet the
    # gateway checks membership on every (re)load and the signal moved the user's generation.
    secret = make_key(tenants.member, tenants.org)
    assert post(gateway, secret).status_code == 200
    Membership.objects.filter(user=tenants.member, organization=tenants.org).delete()
    message = refusal(post(gateway, secret))
    assert "no longer a member" in message
    assert APIKey.objects.get().revoked_at is None


def test_deactivated_user_gets_401_and_a_reactivated_one_is_served_again(
    tenants, deployment, gateway, as_another_process
):
    secret = make_key(tenants.member, tenants.org)
    assert post(gateway, secret).status_code == 200
    tenants.member.is_active = False
    tenants.member.save()
    assert "deactivated" in refusal(post(gateway, secret))
    tenants.member.is_active = True
    tenants.member.save()
    assert post(gateway, secret).status_code == 200


def test_deleted_user_gets_401(tenants, deployment, gateway, as_another_process):
    secret = make_key(tenants.member, tenants.org)
    assert post(gateway, secret).status_code == 200
    get_user_model().objects.filter(pk=tenants.member.pk).delete()
    assert "Incorrect API key" in refusal(post(gateway, secret))


def test_one_users_change_does_not_flush_other_users_keys(
    tenants, deployment, gateway, as_another_process
):
    owner_secret = make_key(tenants.owner, tenants.org)
    member_secret = make_key(tenants.member, tenants.org)
    assert post(gateway, owner_secret).status_code == 200
    assert post(gateway, member_secret).status_code == 200
    app = gateway.app.gateway
    loads: list[str] = []
    load_key = app._load_key

    async def counting(digest):
        loads.append(digest)
        return await load_key(digest)

    app._load_key = counting
    tenants.member.is_active = False
    tenants.member.save()
    assert post(gateway, member_secret).status_code == 401
    for _ in range(3):
        assert post(gateway, owner_secret).status_code == 200
    # Only the member's key was read again; the owner's stayed cached.
    assert len(loads) == 1


def test_removed_member_gets_401_not_a_deployment_answer(
    tenants, deployment, gateway, as_another_process
):
    secret = make_key(tenants.member, tenants.org)
    assert post(gateway, secret).status_code == 200
    ModelDeployment.objects.filter(pk=deployment.pk).update(state=DeploymentState.DEACTIVATED)
    gateway.app.gateway.cache.deployments.clear()
    assert post(gateway, secret).status_code == 409  # still a member: told the state
    Membership.objects.filter(user=tenants.member, organization=tenants.org).delete()
    refusal(post(gateway, secret))  # removed: nothing about the deployment any more


def test_a_rest_key_is_not_a_gateway_key(tenants, deployment, gateway):
    _, secret = api_key_create(
        user=tenants.member, organization=tenants.org, name="ci", scope=APIKeyScope.REST
    )
    assert "REST API key" in refusal(post(gateway, secret))
