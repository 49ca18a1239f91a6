"""Projects pages: create with field-by-field validation, scoping, roles."""

from __future__ import annotations

import pytest
from django.urls import reverse

from projects.models import Integration, Project
from tests.conftest import login


@pytest.mark.django_db
def test_create_project_through_the_form(owner_client, tenants):
    response = owner_client.post(
        reverse("projects:create"),
        {"name": "Vision", "slug": "vision", "description": "CV models", "gpu_quota": "2"},
    )
    project = Project.objects.get(organization=tenants.org, slug="vision")
    assert response.status_code == 302 and response["Location"] == project.get_absolute_url()
    assert project.namespace() == "acme-vision"
    assert project.memberships.filter(user=tenants.owner).exists()


@pytest.mark.django_db
def test_an_empty_slug_is_made_from_the_name(owner_client, tenants):
    for name in ("ML Team", "ML_Team!", "日本"):
        response = owner_client.post(reverse("projects:create"), {"name": name, "slug": "", "gpu_quota": "1"})
        assert response.status_code == 302, response.content.decode()[:500]
    slugs = list(Project.objects.filter(organization=tenants.org).order_by("pk").values_list("slug", flat=True))
    assert slugs[-3:] == ["ml-team", "ml-team-2", "project"]  # each a valid, free namespace part


@pytest.mark.django_db
@pytest.mark.parametrize(
    "quota, message",
    [("-1", "be negative; 0 allows no GPUs"), ("two", "whole number"), ("", "required")],
)
def test_bad_quota_is_an_error_on_the_field_and_keeps_the_other_fields(owner_client, quota, message):
    response = owner_client.post(
        reverse("projects:create"),
        {"name": "Keep me", "slug": "keep-me", "description": "typed text", "gpu_quota": quota},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html
    assert 'value="Keep me"' in html and 'value="keep-me"' in html and "typed text" in html
    assert not Project.objects.filter(slug="keep-me").exists()


@pytest.mark.django_db
def test_htmx_validates_one_field_alone(owner_client):
    response = owner_client.post(
        reverse("projects:create"),
        {"name": "X", "slug": "Not A Slug", "gpu_quota": "1", "_validate": "slug"},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="field-slug"' in html and "lowercase letters" in html
    assert 'id="field-name"' not in html  # only the asked field comes back


@pytest.mark.django_db
def test_duplicate_slug_is_refused_with_a_message(owner_client, tenants):
    response = owner_client.post(reverse("projects:create"), {"name": "Other", "slug": "research", "gpu_quota": "1"})
    assert "is taken in Acme" in response.content.decode()


@pytest.mark.django_db
def test_viewer_cannot_create_projects(tenants):
    response = login(tenants.viewer).post(reverse("projects:create"), {"name": "V", "slug": "v", "gpu_quota": "1"})
    assert response.status_code == 403
    assert not Project.objects.filter(slug="v").exists()


@pytest.mark.django_db
def test_quota_below_current_use_is_refused_on_edit(owner_client, tenants):
    from projects.services import quota_reserve

    quota_reserve(project=tenants.project, holder="deployment:9", gpus=5)
    response = owner_client.post(
        reverse("projects:edit", args=[tenants.project.pk]),
        {"name": "Research", "description": "", "gpu_quota": "2"},
    )
    assert "hold 5 GPUs" in response.content.decode()
    tenants.project.refresh_from_db()
    assert tenants.project.gpu_quota == 8


@pytest.mark.django_db
def test_outsider_gets_404_on_every_project_url(outsider_client, tenants):
    pk = tenants.project.pk
    for name, method in [
        ("projects:detail", "get"), ("projects:edit", "get"), ("projects:edit", "post"),
        ("projects:delete", "post"), ("projects:integrations", "get"), ("projects:integrations", "post"),
    ]:
        response = getattr(outsider_client, method)(reverse(name, args=[pk]), {"name": "x", "gpu_quota": "1", "kind": "huggingface", "secret": "hf_x"})
        assert response.status_code == 404, (name, method, response.status_code)
    for name in ["projects:integration_check", "projects:integration_delete"]:
        assert outsider_client.post(reverse(name, args=[pk, "huggingface"])).status_code == 404
    assert Project.objects.filter(pk=pk).exists()
    assert "Research" not in outsider_client.get(reverse("projects:list")).content.decode()


@pytest.mark.django_db
def test_integration_secret_is_encrypted_at_rest_and_never_shown(owner_client, tenants):
    from django.db import connection

    secret = "hf_supersecretvalue4f2a"
    owner_client.post(reverse("projects:integrations", args=[tenants.project.pk]), {"kind": "huggingface", "secret": secret})
    integration = Integration.objects.get(project=tenants.project, kind="huggingface")
    assert integration.secret == secret
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM projects_integration WHERE id = %s", [integration.pk])
        stored = cursor.fetchone()[0]
    assert secret not in stored and stored.startswith("gAAAA")  # Fernet token
    page = owner_client.get(reverse("projects:integrations", args=[tenants.project.pk])).content.decode()
    assert secret not in page and "…4f2a" in page


@pytest.mark.django_db
def test_dashboard_and_pages_render_for_members(owner_client):
    for url in ["/", reverse("projects:list"), reverse("projects:create"), reverse("settings")]:
        assert owner_client.get(url).status_code == 200, url


@pytest.mark.django_db
def test_anonymous_is_sent_to_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_org_switch_only_to_own_organizations(owner_client, tenants):
    owner_client.post(reverse("org-switch"), {"organization": tenants.other_org.pk})
    page = owner_client.get("/").content.decode()
    assert "Globex" not in page


@pytest.mark.django_db
def test_project_and_integration_changes_are_audited_without_secrets(owner_client, tenants):
    from sharing.models import AuditEntry

    owner_client.post(reverse("projects:edit", args=[tenants.project.pk]), {"name": "Research", "description": "", "gpu_quota": "6"})
    entry = AuditEntry.objects.get(action="quota_change", object_id=str(tenants.project.pk))
    assert entry.actor == tenants.owner and entry.diff["gpu_quota"] == [8, 6]
    owner_client.post(reverse("projects:integrations", args=[tenants.project.pk]), {"kind": "ngc", "secret": "nvapi-topsecret-9z9z"})
    change = AuditEntry.objects.get(action="integration_change")
    assert "topsecret" not in str(change.before) + str(change.after) + str(change.diff)
    assert change.after["secret_last4"] == "9z9z"


@pytest.mark.django_db
def test_project_list_and_dashboard_do_not_query_once_per_project(owner_client, tenants):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from projects.services import quota_reserve
    from tests.factories import ProjectFactory

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert owner_client.get(url).status_code == 200
        return len(ctx)

    def add_projects(n: int) -> None:
        for _ in range(n):
            project = ProjectFactory(organization=tenants.org, gpu_quota=4)
            quota_reserve(project=project, holder=f"deployment:p{project.pk}", gpus=1)

    add_projects(2)
    before = {url: queries(url) for url in ("/", reverse("projects:list"))}
    add_projects(10)
    after = {url: queries(url) for url in before}
    assert after == before
    assert "1 / 4 GPUs" in owner_client.get(reverse("projects:list")).content.decode()
