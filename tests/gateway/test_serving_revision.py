"""The gateway routes to the serving revision: a deployment that has a ready revision behind its
Service keeps answering while it deploys, updates, fails a rollout or its pool's API is down;
only deactivated, deleting and never-ready deployments refuse, each with its own error."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

from deployments.models import DeploymentState, ModelDeployment
from deployments.services import event_record
from gateway.cache import invalidate
from gateway.models import UsageRecord
from gateway.tasks import flush_usage
from tests.conftest import login
from tests.factories import rest_api_client
from tests.gateway.conftest import make_deployment, make_key

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}]}
def changed() -> None:
    """What the services do on commit of a state change (deployments.services.state_claim,
    _gateway_forget): the raw updates below stand for them."""
    invalidate()


@pytest.fixture
def deployment(tenants, gateway):
    deployment = make_deployment(tenants.project, "llama", served_model_name="llama-chat")
    event_record(deployment, reason="Running", message="Revision 1: 1/1 replicas ready.", source="kubernetes")
    return deployment


def post(gateway, secret: str) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/chat/completions", json=CHAT,
        headers={"authorization": f"Bearer {secret}"}, timeout=30,
    )  # fmt: skip


def listed(gateway, secret: str) -> list[str]:
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=0)
    return [m.id for m in client.models.list()]


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (DeploymentState.DEPLOYING, "Rolling out revision 2; revision 1 keeps serving until it is ready."),
        (DeploymentState.UNKNOWN, "Compute pool “sandbox” can't be reached: connection refused."),
        (DeploymentState.FAILED, "Unschedulable: 0/2 nodes are available. Revision 1 keeps serving."),
    ],
)
def test_serving_revision_answers_whatever_the_rollout_state(tenants, deployment, gateway, engine, state, reason):
    secret = make_key(tenants.member, tenants.org)
    client = openai.OpenAI(api_key=secret, base_url=gateway.base_url, max_retries=0)
    assert client.chat.completions.create(**CHAT).choices
    ModelDeployment.objects.filter(pk=deployment.pk).update(state=state, state_reason=reason)
    changed()

    answer = client.chat.completions.create(**CHAT)

    assert answer.choices[0].message.content
    assert listed(gateway, secret) == ["llama-chat"]


def test_deactivated_deleting_and_never_ready_refuse_with_their_own_codes(tenants, deployment, gateway):
    secret = make_key(tenants.member, tenants.org)
    assert post(gateway, secret).status_code == 200
    seen = {}
    for state, serving in (
        (DeploymentState.DEACTIVATED, deployment.current_revision_id),
        (DeploymentState.DELETING, deployment.current_revision_id),
        (DeploymentState.DEPLOYING, None),  # no revision behind the Service
        (DeploymentState.PENDING, deployment.current_revision_id),  # activated again, no pods yet
    ):
        ModelDeployment.objects.filter(pk=deployment.pk).update(state=state, serving_revision_id=serving)
        changed()
        response = post(gateway, secret)
        error = response.json()["error"]
        seen[state] = (response.status_code, error["code"])
        assert "llama-chat" in error["message"]
        assert listed(gateway, secret) == []

    # A first rollout: the Service already points at revision 1, but it has never been ready.
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        state=DeploymentState.DEPLOYING, serving_revision_id=deployment.current_revision_id
    )
    deployment.events.filter(reason="Running").delete()
    changed()
    response = post(gateway, secret)
    assert (response.status_code, response.json()["error"]["code"]) == (503, "deployment_not_ready")

    assert seen == {
        DeploymentState.DEACTIVATED: (409, "deployment_deactivated"),
        DeploymentState.DELETING: (410, "deployment_deleted"),
        DeploymentState.DEPLOYING: (503, "deployment_not_ready"),
        DeploymentState.PENDING: (503, "deployment_not_ready"),
    }


def test_never_ready_answer_tells_the_client_when_to_retry(tenants, deployment, gateway):
    secret = make_key(tenants.member, tenants.org)
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        state=DeploymentState.DEPLOYING, serving_revision_id=None
    )
    response = post(gateway, secret)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "no ready revision yet (state: deploying)" in response.json()["error"]["message"]


def test_refusals_are_metered_with_zero_tokens_and_listed_in_usage(tenants, deployment, gateway):
    """Like a 429: each refused request is a usage record (its status, no tokens, no cost), on
    the Usage page and in the API, under the caller's key."""
    secret = make_key(tenants.member, tenants.org, name="refused key")
    for state, serving in (
        (DeploymentState.DEACTIVATED, deployment.current_revision_id),
        (DeploymentState.DELETING, deployment.current_revision_id),
        (DeploymentState.DEPLOYING, None),
    ):
        ModelDeployment.objects.filter(pk=deployment.pk).update(state=state, serving_revision_id=serving)
        changed()
        assert post(gateway, secret).status_code in (409, 410, 503)

    assert flush_usage() == 3
    rows = UsageRecord.objects.filter(deployment=deployment).order_by("created_at")
    assert [r.status_code for r in rows] == [409, 410, 503]
    for row in rows:
        assert (row.prompt_tokens, row.completion_tokens, row.cost) == (0, 0, Decimal(0))
        assert row.user == tenants.member and row.api_key_id and row.route == "chat.completions"
        assert row.deployment_name == "llama"

    listed_codes = sorted(r["status_code"] for r in rest_api_client(tenants.member).get("/api/v1/usage/").json()["results"])
    assert listed_codes == [409, 410, 503]
    page = login(tenants.member).get("/hub/usage/?format=csv")
    header, *lines = (line.split(",") for line in b"".join(page.streaming_content).decode().splitlines())
    status, error = header.index("status_code"), header.index("error")
    # The CSV says what each refusal was too, beside its number (the Usage page's words).
    assert (status, error) == (4, 5)
    assert sorted((line[status], line[error]) for line in lines) == [
        ("409", "deactivated"), ("410", "deleted"), ("503", "not ready"),
    ]  # fmt: skip
    # The Usage page says what each refusal was, not only its number.
    html = login(tenants.member).get("/hub/usage/").content.decode()
    for words in ("deactivated", "deleted", "not ready"):
        assert f'<span class="muted small">{words}</span>' in html, words
