"""Concurrent and failed lifecycle operations leave nothing behind: no lost update, no duplicate
served name, no gap in revision numbers (real PostgreSQL, one thread per request)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from deployments.models import ModelDeployment, Revision

pytestmark = pytest.mark.django_db(transaction=True)

# Twenty one-field changes, each to a different field of the spec (dotted path → new value).
ONE_FIELD_CHANGES: list[tuple[str, object]] = [
    ("rate_limits.organization.rpm", 601),
    ("rate_limits.organization.tpm", 60_001),
    ("rate_limits.user.rpm", 602),
    ("rate_limits.user.tpm", 60_002),
    ("rate_limits.api_key.rpm", 603),
    ("rate_limits.api_key.tpm", 60_003),
    ("pricing.input_per_million", "0.11"),
    ("pricing.output_per_million", "0.22"),
    ("context_length", 4096),
    ("prompt_caching", False),
    ("resources.cpu", "3"),
    ("resources.memory", "9Gi"),
    ("autoscaling.target", 5),
    ("extra_args", ["--max-num-seqs", "16"]),
    ("env", {"LOG_LEVEL": "debug"}),
    ("labels", {"team": "search"}),
    ("annotations", {"owner": "search-team"}),
    ("node_selector", {"pool": "l4"}),
    ("tolerations", [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]),
    ("served_model_name", "chat-v2"),
]


def nested(path: str, value: object) -> dict:
    out: dict = {}
    node = out
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def lookup(spec: dict, path: str) -> object:
    for part in path.split("."):
        spec = spec[part]
    return spec


def api(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def run_together(calls: list[Callable[[], object]]) -> list[object]:
    """Each call in its own thread (its own database connection), released at the same instant."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_twenty_concurrent_patches_lose_no_field(tenants, deploy):
    deployment = deploy("chat")
    original = deployment.current_revision.spec
    for path, value in ONE_FIELD_CHANGES:
        assert lookup(original, path) != value, path  # every change really changes something
    url = f"/api/v1/deployments/{deployment.pk}/"
    clients = [api(tenants.owner) for _ in ONE_FIELD_CHANGES]

    responses = run_together([
        (lambda c=c, p=p, v=v: c.patch(url, {"spec": nested(p, v)}, format="json"))
        for c, (p, v) in zip(clients, ONE_FIELD_CHANGES, strict=True)
    ])  # fmt: skip

    assert [getattr(r, "status_code", r) for r in responses] == [200] * len(ONE_FIELD_CHANGES)
    final = ModelDeployment.objects.get(pk=deployment.pk).current_revision.spec
    assert {p: lookup(final, p) for p, _ in ONE_FIELD_CHANGES} == dict(ONE_FIELD_CHANGES)
    revisions = list(Revision.objects.filter(deployment=deployment).order_by("number"))
    assert [r.number for r in revisions] == list(range(1, len(ONE_FIELD_CHANGES) + 2))
    # No revision reverts another's field: each one changes exactly one of the twenty fields,
    # from its original value to the requested one.
    wanted = dict(ONE_FIELD_CHANGES)
    for before, after in zip(revisions, revisions[1:], strict=False):
        changed = [p for p in wanted if lookup(before.spec, p) != lookup(after.spec, p)]
        assert len(changed) == 1, (after.number, changed)
        assert lookup(before.spec, changed[0]) == lookup(original, changed[0])
        assert lookup(after.spec, changed[0]) == wanted[changed[0]]


def test_ten_concurrent_creates_with_one_served_name_make_exactly_one(tenants, model, bundle, pool):
    clients = [api(tenants.owner) for _ in range(10)]
    bodies = [
        {"project": tenants.project.pk, "model": model.pk, "pool": pool.pk, "bundle": bundle.pk,
         "name": f"chat-{i}", "spec": {"resources": {"cpu": "1", "memory": "2Gi", "gpus": 0},
                                       "served_model_name": "shared-name"}}
        for i in range(10)
    ]  # fmt: skip

    responses = run_together([
        (lambda c=c, b=b: c.post("/api/v1/deployments/", b, format="json"))
        for c, b in zip(clients, bodies, strict=True)
    ])  # fmt: skip

    codes = sorted(getattr(r, "status_code", repr(r)) for r in responses)
    assert codes == [201] + [400] * 9
    for response in responses:
        if response.status_code == 400:
            assert "shared-name" in " ".join(response.json()["served_model_name"])
    assert ModelDeployment.objects.count() == 1
    assert ModelDeployment.objects.get().served_name() == "shared-name"


def test_rename_onto_a_taken_served_name_is_a_400(tenants, deploy):
    deploy("first")
    second = deploy("second")
    response = api(tenants.owner).patch(
        f"/api/v1/deployments/{second.pk}/", {"spec": {"served_model_name": "first"}}, format="json"
    )
    assert response.status_code == 400
    assert "first" in " ".join(response.json()["served_model_name"])
    assert ModelDeployment.objects.get(pk=second.pk).served_name() == "second"
