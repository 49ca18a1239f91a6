"""Server-side lists (console/paging.py) on the catalog and projects pages: pages, sort and search
in the URL, a constant number of queries, and nothing from another organization."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from catalog.models import CatalogModel
from projects.services import project_create
from tests.conftest import login

pytestmark = pytest.mark.django_db


def _models(org, count: int, prefix: str = "m") -> None:
    for i in range(count):
        CatalogModel.objects.create(organization=org, name=f"{prefix}{i:02d}", source="huggingface",
                                    repo_id=f"acme/{prefix}{i:02d}", task="text-generation")  # fmt: skip


def test_catalog_pages_sorts_and_searches_on_the_server(tenants, django_assert_max_num_queries):
    _models(tenants.org, 3, prefix="a")
    _models(tenants.other_org, 2, prefix="theirs")
    client = login(tenants.member)
    url = reverse("catalog:index")
    with django_assert_max_num_queries(15) as few:
        client.get(url)
    _models(tenants.org, 9, prefix="b")
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get(url, {"per_page": 10}).content.decode()
    names = re.findall(r'">([ab]\d\d)</a>', html)
    assert names == ["a00", "a01", "a02"] + [f"b{i:02d}" for i in range(7)]
    assert "1–10 of 12" in html and "theirs" not in html
    desc = client.get(url, {"sort": "-name", "per_page": 10, "page": 2}).content.decode()
    assert re.findall(r'">([ab]\d\d)</a>', desc) == ["a01", "a00"]
    # The htmx filter form gets the rows (with the pager) alone, filtered on the server.
    rows = client.get(url, {"q": "b03"}, HTTP_HX_REQUEST="true").content.decode()
    assert re.findall(r'">([ab]\d\d)</a>', rows) == ["b03"] and "<html" not in rows


def test_projects_list_pages_and_counts_members_in_the_query(tenants, django_assert_max_num_queries):
    client = login(tenants.owner)
    url = reverse("projects:list")
    with django_assert_max_num_queries(15) as few:
        client.get(url)
    for i in range(11):
        project_create(user=tenants.owner, organization=tenants.org, name=f"p{i:02d}", slug=f"p{i:02d}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get(url, {"per_page": 10, "sort": "name"}).content.decode()
    assert "1–10 of 12" in html and 'rel="next"' in html
    found = client.get(url, {"q": "p07"}).content.decode()
    assert ">p07</a>" in found and ">p06</a>" not in found
    assert tenants.other_project.name not in client.get(url).content.decode()
