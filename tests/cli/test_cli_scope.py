"""The CLI looks deployments and models up in the organization it signed in to. A superuser's API
lists span every organization (the console shows the current one only): `modeldeck deactivate
chat` refused with "Several deployments are named 'chat'" once another organization had one, and
`get deployments` listed theirs too (QA pass)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from deployments.models import DeploymentState, ModelDeployment
from modeldeck_cli import config
from modeldeck_cli.main import main
from projects.keys import api_key_create
from projects.models import APIKeyScope, Membership, Role
from tests.factories import rest_api_client
from tests.gateway.conftest import make_deployment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(tenants, live_server, tmp_path, monkeypatch):
    """A superuser, member of Acme, signed in to Acme; Acme and Globex each have a "chat"."""
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    Membership.objects.create(organization=tenants.org, user=root, role=Role.ADMIN)
    ours = make_deployment(tenants.project, "chat")
    theirs = make_deployment(tenants.other_project, "chat")
    _, secret = api_key_create(user=root, organization=tenants.org, name="cli", scope=APIKeyScope.REST)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in ("MODELDECK_URL", "MODELDECK_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config.save(config.Settings(url=live_server.url, token=secret, organization=tenants.org.slug, username="root"))
    return root, ours, theirs


def test_a_superusers_cli_finds_and_lists_its_own_organizations_deployments(signed_in, capsys, tenants):
    root, ours, theirs = signed_in
    assert rest_api_client(root).get("/api/v1/deployments/").json()["count"] == 2  # the API spans both

    assert main(["get", "deployments", "-o", "json"]) == 0
    assert [row["id"] for row in json.loads(capsys.readouterr().out)] == [ours.pk]

    assert main(["deactivate", "chat"]) == 0, capsys.readouterr()
    assert ModelDeployment.objects.get(pk=ours.pk).state != DeploymentState.RUNNING
    assert ModelDeployment.objects.get(pk=theirs.pk).state == DeploymentState.RUNNING


def test_the_organization_filter_takes_an_id_or_a_slug_and_never_widens(tenants, signed_in):
    root, ours, theirs = signed_in
    client = rest_api_client(root)
    for value in (tenants.org.pk, tenants.org.slug):
        rows = client.get("/api/v1/deployments/", {"organization": value}).json()["results"]
        assert [row["id"] for row in rows] == [ours.pk]
    owner = rest_api_client(tenants.owner)  # not a member of Globex: its filter finds nothing of theirs
    assert owner.get("/api/v1/deployments/", {"organization": tenants.other_org.slug}).json()["count"] == 0
    assert owner.get("/api/v1/models/", {"organization": tenants.other_org.slug}).json()["count"] == 0
