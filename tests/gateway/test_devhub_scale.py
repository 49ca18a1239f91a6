"""Developer Hub lists at scale: the key form searches deployments instead of listing them,
usage tables page in the database, the models page pages; all scoped to the organization."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from projects.keys import api_key_create
from projects.models import APIKey
from tests.conftest import login
from tests.gateway.conftest import make_deployment
from tests.gateway.test_devhub_views import record

pytestmark = pytest.mark.django_db


def test_key_form_searches_deployments_and_never_lists_them_all(tenants):
    for i in range(25):
        make_deployment(tenants.project, f"svc{i:02d}", served_model_name=f"svc-{i:02d}-chat")
    make_deployment(tenants.other_project, "secret-elsewhere")
    client = login(tenants.member)
    page = client.get(reverse("devhub:keys")).content.decode()
    assert "svc-03-chat" not in page and 'name="deployments"' not in page  # no checkbox per deployment
    found = client.get(reverse("devhub:key_deployment_search"), {"q": "svc-03"}).content.decode()
    assert found.count('name="deployments"') == 1 and "svc-03-chat" in found
    # At most 20 answers, with a hint to type more; other organizations' deployments never.
    many = client.get(reverse("devhub:key_deployment_search"), {"q": "svc"}).content.decode()
    assert many.count('name="deployments"') == 20 and "type more" in many
    assert "secret-elsewhere" not in client.get(
        reverse("devhub:key_deployment_search"), {"q": "secret"}
    ).content.decode()
    # Already chosen ones are left out of the next search.
    chosen = re.search(r'value="(\d+)"', found).group(1)
    again = client.get(reverse("devhub:key_deployment_search"), {"q": "svc-03", "deployments": chosen})
    assert 'name="deployments"' not in again.content.decode()


def test_key_limited_through_the_picker_and_a_foreign_deployment_is_refused(tenants):
    mine = make_deployment(tenants.project, "mine")
    theirs = make_deployment(tenants.other_project, "theirs")
    client = login(tenants.member)
    response = client.post(reverse("devhub:keys"), {"name": "bot", "deployments": [mine.pk]})
    assert response.status_code == 201
    assert list(APIKey.objects.get(name="bot").deployments.all()) == [mine]
    refused = client.post(reverse("devhub:keys"), {"name": "bot2", "deployments": [theirs.pk]})
    assert refused.status_code == 200 and not APIKey.objects.filter(name="bot2").exists()


def test_usage_tables_page_and_sort_in_the_database(tenants):
    key, _ = api_key_create(user=tenants.member, organization=tenants.org, name="k")
    deployments = [make_deployment(tenants.project, f"u{i:02d}") for i in range(12)]
    for n, d in enumerate(deployments):
        for _ in range(n + 1):  # u11 gets the most requests
            record(d, key)
    client = login(tenants.member)
    url = reverse("devhub:organization_usage")
    html = client.get(url).content.decode()
    table = html[html.index('id="by-deployment"') : html.index('id="by-key"')]
    assert re.findall(r"<tr><td>(u\d\d)</td>", table)[:2] == ["u11", "u10"]
    assert "1–10 of 12" in table
    second = client.get(url, {"dep_page": 2}).content.decode()
    table = second[second.index('id="by-deployment"') : second.index('id="by-key"')]
    assert re.findall(r"<tr><td>(u\d\d)</td>", table) == ["u01", "u00"]
    by_name = client.get(url, {"dep_sort": "name"}).content.decode()
    table = by_name[by_name.index('id="by-deployment"') : by_name.index('id="by-key"')]
    assert re.findall(r"<tr><td>(u\d\d)</td>", table)[:2] == ["u00", "u01"]
    requests = client.get(url, {"req_q": "u05"}).content.decode()
    assert "1–6 of 6" in requests[requests.index('id="usage-table"') :]


def test_models_page_is_paged_and_searchable(tenants):
    for i in range(12):
        make_deployment(tenants.project, f"m{i:02d}")
    client = login(tenants.member)
    first = client.get(reverse("devhub:models")).content.decode()
    assert first.count('data-model="') == 10 and "1–10 of 12" in first
    found = client.get(reverse("devhub:models"), {"q": "m07"}).content.decode()
    assert found.count('data-model="') == 1 and 'data-model="m07"' in found
