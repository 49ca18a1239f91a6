"""Property-based fuzzing of the REST API from its own OpenAPI schema: never a 5xx, never off-schema.

Schemathesis generates requests for every operation of /api/schema/ (valid and invalid ones:
wrong types, non-integer ids, bodies that are not objects, NUL bytes, boundary values) and sends
them through Django's WSGI handler in-process, signed in as an organization admin whose
organization has a pool, a bundle, a model, a deployment, an endpoint, an environment and a MaaS
rule. The test fails on any 5xx and on any response that does not match the documented schema.

Bounded for `make test` (a few examples per operation, about a minute). Longer runs:
    MODELDECK_FUZZ_SECONDS=600 make test PYTEST_ARGS="tests/test_api_fuzz.py -q -s"
add schemathesis' coverage phase and repeat fresh random rounds (25 examples an operation)
until the seconds are used; MODELDECK_FUZZ_EXAMPLES=N runs one round of N examples an
operation instead. Both print the requests sent and the status codes seen.

The whole run is one test transaction (each request in a savepoint), and every savepoint that
writes holds a transaction-id lock until the test ends: about 1,100 locks a minute, against
PostgreSQL's default lock table of 6,400 (64 × 100 connections). Keep one run to about two
minutes and repeat it for longer fuzzing (as the 10-minute run in the closing note of issue 9
did: five runs of MODELDECK_FUZZ_SECONDS=120, each with its own MODELDECK_TEST_DB_SUFFIX).
"""

from __future__ import annotations

import os
import time

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from django.test import Client
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import response_schema_conformance

from catalog.models import MaaSMapping
from deployments.models import Endpoint
from projects.models import Environment
from sandbox.offline_hub import OfflineHub
from sandbox.offline_ngc import OfflineNgc
from tests.gateway.conftest import make_deployment

FUZZ_SECONDS = float(os.environ.get("MODELDECK_FUZZ_SECONDS") or 0)
FUZZ_EXAMPLES = int(os.environ.get("MODELDECK_FUZZ_EXAMPLES") or 0)
# ~70 operations × 6 examples: about a minute on a busy 2-core machine.
DEFAULT_EXAMPLES = 6


class _RequestWithoutCsrf(WSGIRequest):
    # What Django's test client does: the session cookie is trusted without a CSRF token.
    _dont_enforce_csrf_checks = True


class _FuzzWSGIHandler(WSGIHandler):
    request_class = _RequestWithoutCsrf

    def __call__(self, environ, start_response):
        # Like the test client: keep the test's connection (and its transaction) across requests.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        # Each request in a savepoint, as in autocommit production: a statement PostgreSQL
        # refuses (then answered 4xx) must not abort the test's transaction for all the rest.
        savepoint = transaction.savepoint()
        try:
            response = super().__call__(environ, start_response)
            response.close()  # sends request_finished now, while the receivers are off
            return response
        finally:
            transaction.savepoint_rollback(savepoint)
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(tenants, settings):
    """An organization with one of everything, a signed-in admin, and offline Hub and NGC."""
    deployment = make_deployment(tenants.project, "fuzz-chat")
    Endpoint.objects.create(project=tenants.project, name="fuzz", path="/fuzz")
    Environment.objects.create(project=tenants.project, name="Dev", slug="dev")
    MaaSMapping.objects.create(
        project=tenants.project, source="huggingface", bundle=deployment.bundle
    )
    client = Client()
    client.force_login(tenants.owner)
    with OfflineHub() as hub, OfflineNgc() as ngc:
        settings.HF_ENDPOINT = hub.url
        settings.NGC_API_URL = ngc.url
        settings.HUB_TIMEOUT_SECONDS = 5
        yield {"sessionid": client.cookies["sessionid"].value}


LONG_RUN = bool(FUZZ_SECONDS or FUZZ_EXAMPLES)
HYPOTHESIS_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES or (25 if FUZZ_SECONDS else DEFAULT_EXAMPLES),
    deadline=None,
    derandomize=not LONG_RUN,  # `make test` sends the same requests every time
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    print_blob=True,
)


def _describe(exc: BaseException) -> str:
    """The failure's text and its curl line (schemathesis puts those in notes and sub-errors)."""
    parts = [str(exc), *getattr(exc, "__notes__", [])]
    for sub in getattr(exc, "exceptions", ()):
        parts.append(_describe(sub))
    return "\n".join(parts)


def _one_round(schema, cookies: dict, *, coverage: bool, stats: dict) -> list[str]:
    """Every operation once: Hypothesis draws its examples, schemathesis checks each answer."""
    schema.config.phases.update(
        phases=["examples", "coverage", "fuzzing"] if coverage else ["examples", "fuzzing"]
    )

    def one_case(case) -> None:
        response = case.call_and_validate(
            cookies=cookies, checks=[not_a_server_error, response_schema_conformance]
        )
        stats["requests"] += 1
        stats.setdefault(response.status_code, 0)
        stats[response.status_code] += 1

    failures = []
    for result in get_all_tests(
        schema=schema, test_func=one_case, settings=HYPOTHESIS_SETTINGS, given_kwargs={}
    ):
        operation, test = result.ok()
        try:
            test()
        except (Exception, BaseExceptionGroup) as exc:  # every operation runs; all are listed
            failures.append(f"{operation.label}: {_describe(exc)}")
    return failures


def test_api_never_answers_5xx_or_off_schema(fuzz_world):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", _FuzzWSGIHandler())
    # Signed in with a real session (below), not with values generated for the security schemes.
    schema.config.generation.update(with_security_parameters=False)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) > 50, "the schema lost its operations"
    started = time.monotonic()
    stats = {"requests": 0, "rounds": 0}
    failures: list[str] = []
    while True:
        # In `make test`: one round of random valid and invalid requests. Longer runs add
        # schemathesis' coverage phase (every boundary value of every field, ~70 requests an
        # operation) in the first round, then draw fresh random rounds until the time is up.
        failures += _one_round(
            schema, fuzz_world, coverage=LONG_RUN and stats["rounds"] == 0, stats=stats
        )
        stats["rounds"] += 1
        if failures or not FUZZ_SECONDS or time.monotonic() - started > FUZZ_SECONDS:
            break
    if LONG_RUN:
        print(f"\nAPI fuzz: {time.monotonic() - started:.0f} s, {stats}")
    assert not failures, "\n\n".join(failures)
