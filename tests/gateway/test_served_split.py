"""An external deployment's "Who served" split names what nobody served."""

from __future__ import annotations

import pytest

from gateway import reports
from projects.keys import api_key_create
from tests.gateway.conftest import make_deployment
from tests.gateway.test_devhub_views import record


@pytest.mark.django_db
def test_requests_the_gateway_refused_are_named_so_not_unrecorded(tenants):
    """QA: two calls refused with 429 showed as "Unrecorded: 2 (40.0 %)", which reads as lost data."""
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="k")
    deployment = make_deployment(tenants.project, "ext")
    for i in range(3):
        record(deployment, key, request_id=f"served-{i}", served_by="external")
    for i in range(2):
        record(deployment, key, request_id=f"refused-{i}", status_code=429)

    rows = {r["label"]: (r["requests"], r["share"]) for r in reports.served_split(deployment.pk)}
    assert rows == {"External endpoint": (3, 60.0), "Refused by the gateway": (2, 40.0)}

    record(deployment, key, request_id="old", status_code=200)  # before served_by was recorded
    labels = {r["label"] for r in reports.served_split(deployment.pk)}
    assert labels == {"External endpoint", "Not recorded"}
