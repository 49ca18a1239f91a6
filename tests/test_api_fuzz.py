"""Property-based fuzzing of the REST API from its own OpenAPI schema: never a 5xx, never off-schema.

Schemathesis generates requests for every operation of /api/schema/ (valid and invalid ones:
wrong types, non-integer ids, bodies that are not objects, NUL bytes, boundary values) and sends
them through Django's WSGI handler in-process, signed in as an organization admin whose
organization has a pool, a bundle, a model, a deployment, an endpoint, an environment and a MaaS
rule. The test fails on any 5xx and on any response that does not match the documented schema.

Bounded for `make test` (a few examples per operation, about a minute). Longer runs:
    MODELDECK_FUZZ_SECONDS=600 make test PYTEST_ARGS="tests/test_api_fuzz.py -q"
spreads the given seconds over the operations (examples per operation grow until the budget
is used); MODELDECK_FUZZ_EXAMPLES=N fixes the examples per operation instead.
"""

from __future__ import annotations

import os
import time

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
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
        try:
            response = super().__call__(environ, start_response)
            response.close()  # sends request_finished now, while the receivers are off
            return response
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(tenants, settings):
    """An organization with one of everything, a signed-in admin, and offline Hub and NGC."""
    deployment = make_deployment(tenants.project, "fuzz-chat")
    Endpoint.objects.create(project=tenants.project, name="fuzz", path="/fuzz")
    Environment.objects.create(project=tenants.project, name="Dev", slug="dev")
    MaaSMapping.objects.create(project=tenants.project, source="huggingface", bundle=deployment.bundle)
    client = Client()
    client.force_login(tenants.owner)
    with OfflineHub() as hub, OfflineNgc() as ngc:
        settings.HF_ENDPOINT = hub.url
        settings.NGC_API_URL = ngc.url
        settings.HUB_TIMEOUT_SECONDS = 5
        yield {"sessionid": client.cookies["sessionid"].value}


def _examples() -> int:
    if FUZZ_EXAMPLES:
        return FUZZ_EXAMPLES
    if FUZZ_SECONDS:
        return 1_000_000  # the clock in _one_case ends each operation at its share of the budget
    return DEFAULT_EXAMPLES


HYPOTHESIS_SETTINGS = settings(
    max_examples=_examples(),
    deadline=None,
    derandomize=not (FUZZ_SECONDS or FUZZ_EXAMPLES),
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


class _OutOfTime(Exception):
    """This operation's share of MODELDECK_FUZZ_SECONDS is used up (raised only before a failure)."""


def test_api_never_answers_5xx_or_off_schema(fuzz_world):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", _FuzzWSGIHandler())
    # Signed in with a real session (below), not with values generated for the security schemes.
    schema.config.generation.update(with_security_parameters=False)
    if not (FUZZ_SECONDS or FUZZ_EXAMPLES):
        # In `make test`: random valid and invalid requests only. Schemathesis' coverage phase
        # (every boundary value of every field, ~70 requests an operation) runs in longer runs.
        schema.config.phases.update(phases=["examples", "fuzzing"])
    operations = [r.ok() for r in schema.get_all_operations()]
    share = FUZZ_SECONDS / max(1, len(operations)) if FUZZ_SECONDS else None
    state = {"started": 0.0, "failed": False}

    def one_case(case) -> None:
        if share is not None and not state["failed"] and time.monotonic() - state["started"] > share:
            raise _OutOfTime
        t0 = time.monotonic()
        try:
            response = case.call_and_validate(
                cookies=fuzz_world, checks=[not_a_server_error, response_schema_conformance]
            )
            if os.environ.get("FUZZ_DEBUG"):
                print("FUZZ", round(time.monotonic() - t0, 3), case.operation.label, response.status_code, case.path_parameters, str(case.body)[:60], response.content[:150])
        except BaseException:
            state["failed"] = True  # the clock never cuts a failure short while it shrinks
            raise

    failures: list[str] = []
    for result in get_all_tests(
        schema=schema, test_func=one_case, settings=HYPOTHESIS_SETTINGS, given_kwargs={}
    ):
        operation, test = result.ok()
        state.update(started=time.monotonic(), failed=False)
        try:
            test()
        except _OutOfTime:
            pass
        except (Exception, BaseExceptionGroup) as exc:  # every operation runs; all are listed
            failures.append(f"{operation.label}: {_describe(exc)}")
    assert len(operations) > 50, "the schema lost its operations"
    assert not failures, "\n\n".join(failures)
