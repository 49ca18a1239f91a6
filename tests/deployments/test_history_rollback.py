"""The History tab's revision table: "Roll back to this revision" on each older revision, confirmed,
through the same view and service as the Deployment tab's rollback (QA audit, N2)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.models import ModelDeployment, Revision
from deployments.services import deployment_update
from tests.conftest import login

pytestmark = pytest.mark.django_db

BUTTON = "Roll back to this revision"


def _three_revisions(deploy, tenants) -> ModelDeployment:
    deployment = deploy("chat")
    deployment_update(user=tenants.owner, deployment=deployment, spec={"context_length": 2048}, reason="Shorter")
    deployment_update(user=tenants.owner, deployment=deployment, spec={"context_length": 1024}, reason="Shorter still")
    # r2 serves while r3 rolls out: rolling back to r2 is offered (it stops the rollout), r3 is not.
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        serving_revision=deployment.revisions.get(number=2)
    )
    deployment.refresh_from_db()
    return deployment


def _rollback_forms(html: str) -> dict[int, str]:
    table = html[html.index('id="history-revisions-table"'):html.index("</table>", html.index('id="history-revisions-table"'))]
    forms = re.findall(r"<form .*?</form>", table, re.S)
    return {int(re.search(r'name="revision" value="(\d+)"', f).group(1)): f for f in forms}


def test_history_tab_offers_a_confirmed_rollback_on_older_revisions(owner_client, deploy, tenants):
    deployment = _three_revisions(deploy, tenants)
    html = owner_client.get(deployment.get_absolute_url() + "?tab=history").content.decode()
    forms = _rollback_forms(html)
    assert set(forms) == {1, 2}  # not on r3 (current); r2 (serving) is, as on the Deployment tab
    form = forms[1]
    assert 'method="post"' in form and BUTTON in form and "csrfmiddlewaretoken" in form
    assert f'action="{reverse("deployments:deployment_rollback", args=[deployment.pk])}"' in form
    assert 'data-confirm="Roll “chat” back to revision 1?' in form and 'data-confirm-ok="Roll back"' in form

    response = owner_client.post(
        reverse("deployments:deployment_rollback", args=[deployment.pk]), {"revision": "1", "tab": "history"}
    )
    assert response.status_code == 302 and response["Location"].endswith("?tab=history")
    deployment.refresh_from_db()
    current = deployment.current_revision
    assert current.number == 4 and current.reason == "Rollback to revision 1"
    assert current.spec == deployment.revisions.get(number=1).spec
    page = owner_client.get(response["Location"]).content.decode()
    assert "Rolled back to revision 1 as revision 4." in page
    assert set(_rollback_forms(page)) == {1, 2, 3}  # r4 is current now


def test_history_tab_rollback_pages_with_the_revision_table(owner_client, deploy):
    deployment = deploy("chat")
    spec = deployment.current_revision.spec
    Revision.objects.bulk_create(
        Revision(deployment=deployment, number=n, spec=spec, reason=f"Scale {n}") for n in range(2, 31)
    )
    url = deployment.get_absolute_url() + "?tab=history"
    first = owner_client.get(url).content.decode()
    assert "1–25 of 30" in first and set(_rollback_forms(first)) == set(range(6, 31))  # current is r1
    second = owner_client.get(url + "&rev_page=2").content.decode()
    assert set(_rollback_forms(second)) == {2, 3, 4, 5}
    assert re.search(r'rel="prev" href="[^"]*tab=history', second)  # the pager stays on the tab


def test_viewer_sees_no_rollback_and_outsider_gets_404(deploy, tenants, outsider_client):
    deployment = _three_revisions(deploy, tenants)
    viewer = login(tenants.viewer)
    html = viewer.get(deployment.get_absolute_url() + "?tab=history").content.decode()
    assert 'id="history-revisions-table"' in html and BUTTON not in html
    url = reverse("deployments:deployment_rollback", args=[deployment.pk])
    assert viewer.post(url, {"revision": "1", "tab": "history"}).status_code == 403
    assert outsider_client.get(deployment.get_absolute_url() + "?tab=history").status_code == 404
    assert outsider_client.post(url, {"revision": "1", "tab": "history"}).status_code == 404
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 3


def test_summary_gives_the_current_revisions_own_author_and_time(owner_client, deploy, tenants):
    """It gave the deployment's creation for every revision (QA: "r8 · deployed by admin on" the
    day r1 was made)."""
    deployment = _three_revisions(deploy, tenants)
    made = timezone.now() - timedelta(days=3)
    deployment.revisions.filter(number=1).update(created_at=made - timedelta(days=1))
    ModelDeployment.objects.filter(pk=deployment.pk).update(created_at=made - timedelta(days=1))
    deployment.revisions.filter(number=3).update(created_at=made, created_by=tenants.member)
    html = owner_client.get(deployment.get_absolute_url()).content.decode()
    summary = html[html.index('id="summary-revision"'):html.index("</dd>", html.index('id="summary-revision"'))]
    assert f"r3 · by {tenants.member} on {timezone.localtime(made):%Y-%m-%d %H:%M}" in summary
    assert "r2 serves until it is ready" in summary


def test_a_rollback_whose_blue_green_surge_does_not_fit_is_offered_by_recreating(owner_client, deploy, tenants):
    """QA: the refusal said to choose the "recreate" strategy, which the console didn't offer."""
    deployment = _three_revisions(deploy, tenants)
    held = deployment.gpus_held()
    tenants.project.gpu_quota = held  # room for one revision's pods, not for two at once
    tenants.project.save()
    url = reverse("deployments:deployment_rollback", args=[deployment.pk])

    response = owner_client.post(url, {"revision": "1", "tab": "history"})
    assert response.status_code == 302 and response["Location"].endswith("?tab=history&recreate=1")
    page = owner_client.get(response["Location"]).content.decode()
    assert "A blue-green update holds" in page and "by other deployments" in page
    offer = page[page.index('id="offer-recreate"'):page.index("</form>", page.index('id="offer-recreate"'))]
    assert 'name="strategy" value="recreate"' in offer and 'name="revision" value="1"' in offer
    assert "data-confirm=" in offer and "requests are refused" in offer
    assert deployment.revisions.count() == 3  # nothing changed yet

    response = owner_client.post(url, {"revision": "1", "tab": "history", "strategy": "recreate"})
    assert response.status_code == 302 and "recreate=" not in response["Location"]
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 4
    assert deployment.current_revision.spec == deployment.revisions.get(number=1).spec
    # Only an offer for a revision of this deployment that isn't current is drawn.
    for number in ("4", "99", "x"):
        page = owner_client.get(deployment.get_absolute_url() + f"?tab=history&recreate={number}").content.decode()
        assert 'id="offer-recreate"' not in page


def test_the_rollback_confirm_on_the_serving_revision_says_the_rollout_stops(owner_client, deploy, tenants):
    deployment = _three_revisions(deploy, tenants)
    forms = _rollback_forms(owner_client.get(deployment.get_absolute_url() + "?tab=history").content.decode())
    assert "which serves now? The rollout of revision 3 stops" in forms[2]
    assert "rolled out like an update" in forms[1] and "serves now" not in forms[1]
