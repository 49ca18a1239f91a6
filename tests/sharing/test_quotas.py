"""GPU quotas page: use vs quota per project, near/over highlighted, holders linked, inline edits by admins."""

from __future__ import annotations

import pytest
from django.urls import reverse

from projects.models import GpuReservation
from sharing.models import AuditEntry
from tests.conftest import login
from tests.factories import ProjectFactory
from tests.sharing import factories as f


@pytest.mark.django_db
def test_page_shows_use_holders_and_highlights_near_and_over(tenants):
    f.deployment(tenants.project, name="llama-chat", revisions=[f.spec(gpus=7)])  # 7/8 near
    full = ProjectFactory(organization=tenants.org, name="Vision", gpu_quota=2)
    GpuReservation.objects.create(project=full, holder="notebook:1", gpus=2)  # 2/2 over
    calm = ProjectFactory(organization=tenants.org, name="Calm", gpu_quota=10)
    html = login(tenants.viewer).get(reverse("sharing:quotas")).content.decode()
    research = html.split(f'id="quota-project-{tenants.project.pk}"')[1].split("</tr>")[0]
    vision = html.split(f'id="quota-project-{full.pk}"')[1].split("</tr>")[0]
    calm_row = html.split(f'id="quota-project-{calm.pk}"')[1].split("</tr>")[0]
    assert "near quota" in research and "llama-chat" in research and "7 / 8 GPUs" in research
    assert "at or over quota" in vision and "notebook:1" in vision
    assert "quota" not in calm_row.split("</td>")[0].replace("Calm", "")  # no badge
    assert "9 / 16 GPUs" in html  # organization total
    assert "Only organization admins can change quotas." in html and 'name="gpu_quota"' not in html


@pytest.mark.django_db
def test_admin_edits_a_project_quota_inline_and_it_is_audited(tenants):
    client = login(tenants.owner)
    response = client.post(
        reverse("sharing:quota_project", args=[tenants.project.pk]), {"gpu_quota": "12"}
    )
    assert response.status_code == 302
    tenants.project.refresh_from_db()
    assert tenants.project.gpu_quota == 12
    entry = AuditEntry.objects.get(action="quota_change", object_type="project")
    assert entry.diff == {"gpu_quota": [8, 12]} and entry.actor == tenants.owner


@pytest.mark.django_db
def test_quota_below_use_is_refused_with_the_numbers(tenants):
    GpuReservation.objects.create(project=tenants.project, holder="deployment:999", gpus=5)
    client = login(tenants.owner)
    response = client.post(
        reverse("sharing:quota_project", args=[tenants.project.pk]), {"gpu_quota": "2"}, follow=True
    )
    html = response.content.decode()
    assert "hold 5 GPUs; the quota cannot go below that" in html
    tenants.project.refresh_from_db()
    assert tenants.project.gpu_quota == 8 and not AuditEntry.objects.exists()
    response = client.post(
        reverse("sharing:quota_project", args=[tenants.project.pk]),
        {"gpu_quota": "many"},
        follow=True,
    )
    assert "whole number" in response.content.decode()


@pytest.mark.django_db
def test_quota_error_is_shown_once_under_its_field_in_good_english(tenants):
    GpuReservation.objects.create(project=tenants.project, holder="deployment:999", gpus=1)
    client = login(tenants.owner)
    response = client.post(reverse("sharing:quota_project", args=[tenants.project.pk]), {"gpu_quota": "0"})
    assert response.status_code == 400  # the page again, the refused field focused (scrolled to)
    html = response.content.decode()
    assert html.count("Deployments in this project hold 1 GPU; the quota cannot go below that.") == 1
    row = html.split(f'id="quota-project-{tenants.project.pk}"')[1].split("</tr>")[0]
    assert "hold 1 GPU;" in row and 'class="messages"' not in html and "autofocus" in row
    # The organization's quota: the same words, in its own card.
    response = client.post(reverse("sharing:quota_organization"), {"gpu_quota": "0"}, follow=True)
    html = response.content.decode()
    assert html.count("The organization already uses 1 GPU; the quota cannot go below that.") == 1
    assert "already uses 1 GPU;" in html.split('id="org-quota"')[1].split("</ul>")[0]
    # A saved quota says so in the banner, in the singular where it is one.
    response = client.post(reverse("sharing:quota_project", args=[tenants.project.pk]), {"gpu_quota": "1"}, follow=True)
    assert "Project “Research” may now hold 1 GPU." in response.content.decode()
    assert "still caps" not in response.content.decode()
    # Above the organization's quota: allowed (it caps all projects together), and said so.
    tenants.org.refresh_from_db()
    above = tenants.org.gpu_quota + 92
    response = client.post(reverse("sharing:quota_project", args=[tenants.project.pk]), {"gpu_quota": str(above)}, follow=True)
    assert (f"may now hold {above} GPUs. The organization&#x27;s quota of {tenants.org.gpu_quota} GPUs still caps all "
            "its projects together.") in response.content.decode()


@pytest.mark.django_db
def test_quotas_beyond_gpus_say_which_row_is_the_organization(tenants):
    # The audit's sandbox: organization "demo" with a project "demo".
    tenants.org.name = "Research"
    tenants.org.save(update_fields=["name"])
    html = login(tenants.owner).get(reverse("sharing:quotas")).content.decode()
    limits = html.split('id="quota-limits"')[1]
    org_row = limits.split('id="quota-limits-organization"')[1].split("</td>")[0]
    project_row = limits.split(f'id="quota-limits-{tenants.project.pk}"')[1].split("</td>")[0]
    assert "Organization</span> Research" in org_row
    assert "Project</span> Research" in project_row
    assert 'aria-label="CPU cores quota of project Research"' in limits


@pytest.mark.django_db
def test_admin_edits_the_organization_quota(tenants):
    client = login(tenants.owner)
    client.post(reverse("sharing:quota_organization"), {"gpu_quota": "32"})
    tenants.org.refresh_from_db()
    assert tenants.org.gpu_quota == 32
    assert AuditEntry.objects.get(object_type="organization").diff == {"gpu_quota": [16, 32]}


@pytest.mark.django_db
def test_members_and_viewers_cannot_change_quotas(tenants):
    for user in (tenants.member, tenants.viewer):
        client = login(user)
        assert (
            client.post(
                reverse("sharing:quota_project", args=[tenants.project.pk]), {"gpu_quota": "1"}
            ).status_code
            == 403
        )
        assert (
            client.post(reverse("sharing:quota_organization"), {"gpu_quota": "1"}).status_code
            == 403
        )
    tenants.project.refresh_from_db()
    tenants.org.refresh_from_db()
    assert tenants.project.gpu_quota == 8 and tenants.org.gpu_quota == 16


@pytest.mark.django_db
def test_outsider_cannot_see_or_change_another_organizations_quotas(tenants):
    client = login(tenants.outsider)
    html = client.get(reverse("sharing:quotas")).content.decode()
    assert "Research" not in html and "Secret" in html
    assert (
        client.post(
            reverse("sharing:quota_project", args=[tenants.project.pk]), {"gpu_quota": "1"}
        ).status_code
        == 404
    )


def _field(html: str, marker: str) -> str:
    """The <input …> tag that contains ``marker``."""
    return "<input" + html.split(marker)[0].rsplit("<input", 1)[1] + marker + html.split(marker)[1].split(">")[0]


@pytest.mark.django_db
def test_a_refused_quota_stays_in_its_field_as_typed_with_the_reason_under_it(tenants):
    """A refused quota showed the stored value again (8), not what was typed: every quota form
    keeps the typed text, marks the field invalid and says why under it."""
    GpuReservation.objects.create(project=tenants.project, holder="deployment:999", gpus=5)
    client = login(tenants.owner)
    project_url = reverse("sharing:quota_project", args=[tenants.project.pk])
    for typed, reason in (("2", "hold 5 GPUs; the quota cannot go below that"),
                          ("two", "whole number"),
                          ("99999999999999999999", "At most 100,000 GPUs.")):  # fmt: skip
        response = client.post(project_url, {"gpu_quota": typed})
        assert response.status_code == 400, typed
        html = response.content.decode()
        field = _field(html, f'aria-label="GPU quota of {tenants.project.name}"')
        assert f'value="{typed}"' in field and 'aria-invalid="true"' in field, field
        row = html.split(f'id="quota-project-{tenants.project.pk}"')[1].split("</tr>")[0]
        assert reason in row and "Ensure this value" not in html
    tenants.project.refresh_from_db()
    assert tenants.project.gpu_quota == 8

    response = client.post(reverse("sharing:quota_organization"), {"gpu_quota": "3"})
    assert response.status_code == 400
    card = response.content.decode().split('id="org-quota"')[1].split('class="card flush"')[0]
    assert 'value="3"' in _field(card, 'id="org-quota-input"') and "already uses 5 GPUs" in card

    response = client.post(reverse("sharing:quota_limits_project", args=[tenants.project.pk]),
                           {"cpu_quota": "", "memory_quota_gib": "64", "deployment_quota": "99999999999"})  # fmt: skip
    assert response.status_code == 400
    row = response.content.decode().split(f'id="quota-limits-{tenants.project.pk}"')[1].split("</tr>")[0]
    memory = _field(row, 'aria-label="GiB of memory quota of project Research"')
    deployments = _field(row, 'aria-label="active deployments quota of project Research"')
    assert 'value="64"' in memory and "aria-invalid" not in memory
    assert 'value="99999999999"' in deployments and 'aria-invalid="true"' in deployments
    assert "Active deployments: Give a whole number from 0 to 1,000,000,000, or nothing for no limit." in row
    tenants.project.refresh_from_db()
    assert tenants.project.memory_quota_gib is None


@pytest.mark.django_db
def test_settings_page_keeps_a_refused_organization_quota_as_typed(tenants):
    GpuReservation.objects.create(project=tenants.project, holder="deployment:999", gpus=5)
    response = login(tenants.owner).post(reverse("settings"), {"gpu_quota": "3"})
    assert response.status_code == 400
    html = response.content.decode()
    field = _field(html, 'aria-label="Organization GPU quota"')
    assert 'value="3"' in field and 'aria-invalid="true"' in field
    assert "The organization already uses 5 GPUs; the quota cannot go below that." in html.split('id="org-quota-error"')[1]
    tenants.org.refresh_from_db()
    assert tenants.org.gpu_quota == 16


@pytest.mark.django_db
def test_project_edit_keeps_a_refused_quota_as_typed(tenants):
    GpuReservation.objects.create(project=tenants.project, holder="deployment:999", gpus=5)
    response = login(tenants.owner).post(
        reverse("projects:edit", args=[tenants.project.pk]),
        {"name": tenants.project.name, "description": "", "gpu_quota": "2"},
    )
    html = response.content.decode()
    assert 'value="2"' in _field(html, 'name="gpu_quota"')
    assert "hold 5 GPUs; the quota cannot go below that." in html
