"""An external deployment whose endpoint is down overflows to a managed deployment that sits at
zero replicas: the request wakes it (autoscaler) and is answered once a replica is ready."""

from __future__ import annotations

import time

import pytest
from openai import OpenAI

from deployments.external import external_deployment_create
from gateway.models import UsageRecord
from tests.deployments.test_autoscale import CHAT, COLD_START, TO_ZERO, at_zero, until, world  # noqa: F401 - fixture
from tests.gateway.conftest import _clean_redis, engine_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def test_overflow_at_zero_replicas_is_woken_and_answers(world, tenants, model, settings):  # noqa: F811
    settings.EXTERNAL_PRIVATE_ADDRESSES_ALLOWED = True  # the operator setting: a local (dead) endpoint
    managed = world.deploy(replicas={"min": 0, "max": 1}, autoscaling=TO_ZERO)
    until(lambda: at_zero(world, managed))
    external_deployment_create(
        user=tenants.owner, project=tenants.project, model=model, name="onprem", url="http://127.0.0.1:9/v1",
        overflow="qwen", served_model_name="onprem-chat", options={"timeout_s": 2},
    )  # fmt: skip
    client = OpenAI(base_url=world.gateway().base_url, api_key=world.key(), max_retries=0, timeout=60)
    started = time.monotonic()
    reply = client.chat.completions.create(**{**CHAT, "model": "onprem-chat"})
    assert reply.choices[0].message.content == "You said: hi"
    assert time.monotonic() - started >= COLD_START  # held through the overflow's start, not refused
    assert managed.events.filter(reason="Autoscaled", message__startswith="0 → 1").exists()
    until(lambda: UsageRecord.objects.filter(served_by="overflow", status_code=200).exists() or _flush())


def _flush() -> bool:
    from gateway.tasks import flush_usage

    flush_usage()
    return False
