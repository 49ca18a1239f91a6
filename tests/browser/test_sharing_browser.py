"""An admin shares a deployment with a second organization; that organization's user finds it in the Developer Hub."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from sharing.models import AuditEntry
from sharing.selectors import shared_deployments_for_org
from tests.browser.conftest import sign_in
from tests.sharing import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _sharing_urls(settings):
    settings.ROOT_URLCONF = "tests.sharing.urls_for_tests"


def test_share_with_a_second_organization_and_its_user_sees_it(
    page, live_server, tenants, screenshot
):
    dep = f.deployment(tenants.project, name="llama-chat", revisions=[f.spec(served="llama-chat")])
    sign_in(page, live_server, "owner")
    page.goto(live_server.url + reverse("sharing:deployment_sharing", args=[dep.pk]))
    expect(page.locator("h1")).to_contain_text("Manage sharing — llama-chat")

    # "Specific" without an organization: the error lands on the field.
    page.check("#share-form input[name=mode][value=specific]")
    page.click("#share-form button:has-text('Save sharing')")
    expect(page.locator("#field-organizations .errorlist")).to_contain_text(
        "Choose at least one other organization"
    )

    page.check("#share-form input[name=mode][value=specific]")
    page.check("#share-form label:has-text('Globex') input")
    page.click("#share-form button:has-text('Save sharing')")
    expect(page.locator(".messages")).to_contain_text("Sharing saved.")
    # The history fragment loads by htmx and shows the change.
    expect(page.locator(".object-history")).to_contain_text("globex")
    screenshot("sharing-shared-with-globex")
    assert list(shared_deployments_for_org(tenants.other_org)) == [dep]
    assert AuditEntry.objects.filter(action="share", object_id=str(dep.pk)).count() == 1

    # Public access warns that no key is needed.
    page.check("#access-form input[name=kind][value=public]")
    page.click("#access-form button:has-text('Save access policy')")
    # Going public asks first; cancelling keeps the policy as it was.
    expect(page.locator("#confirm-dialog")).to_contain_text("without an API key")
    page.click("#confirm-dialog [data-confirm-cancel]")
    expect(page.locator("#public-warning")).to_have_count(0)
    page.click("#access-form button:has-text('Save access policy')")
    page.click("#confirm-dialog [data-confirm-ok]")
    expect(page.locator("#public-warning")).to_contain_text("without an API key")
    screenshot("sharing-public-warning")

    page.context.clear_cookies()
    sign_in(page, live_server, "outsider")
    page.goto(live_server.url + reverse("devhub:models"))
    expect(page.locator("main")).to_contain_text("llama-chat")
    expect(page.locator("main")).to_contain_text("Shared by Acme")
    screenshot("devhub-models-shared")


def test_audit_log_search_and_quota_edit(page, live_server, tenants, screenshot):
    from sharing import services

    dep = f.deployment(tenants.project, name="llama-chat", revisions=[f.spec(gpus=7)])  # 7/8: near
    other = f.deployment(tenants.project, name="embedder", revisions=[f.spec(gpus=0)])  # on CPUs
    services.deployment_share_set(user=tenants.owner, deployment=dep, mode="all")
    services.access_policy_set(user=tenants.member, deployment=other, kind="public")

    sign_in(page, live_server, "owner")
    page.goto(live_server.url + reverse("sharing:quotas"))
    row = page.locator(f"#quota-project-{tenants.project.pk}")
    expect(row).to_contain_text("near quota")
    expect(row).to_contain_text("llama-chat")
    screenshot("quotas-near")
    row.locator("input[name=gpu_quota]").fill("20")
    row.locator("button:has-text('Save')").click()
    expect(page.locator(".messages")).to_contain_text("may now hold 20 GPUs")
    expect(page.locator(f"#quota-project-{tenants.project.pk}")).not_to_contain_text("near quota")

    page.goto(live_server.url + reverse("sharing:audit"))
    expect(page.locator("#audit-table tbody tr")).to_have_count(3)
    page.fill("input[name=q]", "embed")
    # htmx swaps the results as the user types; the other rows go away.
    expect(page.locator("#audit-table tbody tr")).to_have_count(1)
    expect(page.locator("#audit-table")).to_contain_text("authenticated → public")
    screenshot("audit-log-search")
    page.fill("input[name=q]", "")
    page.select_option("select[name=action]", "quota_change")
    expect(page.locator("#audit-table tbody tr")).to_have_count(1)
    expect(page.locator("#audit-table")).to_contain_text("gpu_quota: 8 → 20")


def test_create_environment_and_promotion_is_refused_by_its_policy(
    page, live_server, tenants, screenshot
):
    from projects.models import Environment

    pool = f.pool(tenants.org, name="prod-east")
    staging = f.environment(tenants.project, name="Staging")
    dep = f.deployment(tenants.project, name="llama", environment=staging, pool_=pool,
                       revisions=[f.spec(replicas=4, served="llama-chat")])  # fmt: skip
    sign_in(page, live_server, "member")
    page.goto(live_server.url + reverse("sharing:environments", args=[tenants.project.pk]))
    page.click("text=New environment")
    page.fill("#id_name", "Production")
    page.fill("#id_slug", "prod")
    page.fill("#id_max_replicas", "0")
    page.locator("#id_max_replicas").blur()
    expect(page.locator("#field-max_replicas .errorlist")).to_contain_text(
        "greater than or equal to 1"
    )
    page.fill("#id_max_replicas", "2")
    page.check("label:has-text('prod-east') input")
    page.fill("#id_allowed_gpu_types", "H100")
    screenshot("environment-form")
    page.click("button:has-text('Create environment')")
    expect(page.locator(".messages")).to_contain_text("Environment “Production” created.")
    expect(page.locator("#environments-table")).to_contain_text("prod-east")
    screenshot("environments-list")
    production = Environment.objects.get(project=tenants.project, slug="prod")

    page.goto(live_server.url + reverse("sharing:deployment_promote", args=[dep.pk]))
    page.select_option("#id_target_environment", str(production.pk))
    page.click("button:has-text('Check against')")
    expect(
        page.locator("#promote-form .form-errors, #promote-form .errorlist").first
    ).to_be_visible()
    expect(page.locator("#promote-form")).to_contain_text(
        "Environment “Production” allows at most 2 replicas; the spec asks for 4."
    )
    screenshot("promotion-refused")


def test_sharing_with_every_organization_asks_first(page, live_server, tenants):
    # QA: one click on "Save sharing" let every organization's users call the deployment; going
    # public asked first, this didn't.
    from sharing.models import DeploymentShare

    dep = f.deployment(tenants.project, name="llama-chat", revisions=[f.spec(served="llama-chat")])
    sign_in(page, live_server, "owner")
    page.goto(live_server.url + reverse("sharing:deployment_sharing", args=[dep.pk]))
    page.check("#share-form input[name=mode][value=all]")
    page.click("#share-form button:has-text('Save sharing')")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Share “llama-chat” with every organization on this ModelDeck")
    expect(dialog).to_contain_text("on Acme's GPUs")
    page.click("#confirm-dialog [data-confirm-cancel]")
    page.wait_for_timeout(300)
    assert not DeploymentShare.objects.filter(deployment=dep, mode="all").exists()  # cancelled: nothing posted
    assert not AuditEntry.objects.filter(action="share", object_id=str(dep.pk)).exists()

    page.click("#share-form button:has-text('Save sharing')")
    page.click("#confirm-dialog [data-confirm-ok]")
    expect(page.locator(".messages")).to_contain_text("Sharing saved.")
    assert DeploymentShare.objects.get(deployment=dep).mode == "all"
    # Already shared with all: saving it again (or narrowing it) asks nothing.
    page.click("#share-form button:has-text('Save sharing')")
    expect(page.locator(".messages")).to_contain_text("Sharing saved.")
    expect(dialog).to_be_hidden()
