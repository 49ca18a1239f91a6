"""An admin adds a member, puts them in a group, and an access policy on that group admits them
at the gateway; removing the member (after the confirmation) revokes their key."""

from __future__ import annotations

import httpx
import pytest
from django.urls import reverse
from playwright.sync_api import expect

from projects.models import Membership, OrganizationGroup
from tests.browser.conftest import sign_in
from tests.factories import UserFactory
from tests.gateway.conftest import (  # noqa: F401 - fixtures
    _clean_redis,
    engine,
    engine_server,
    gateway,
    make_deployment,
    make_key,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _sharing_urls(settings):
    settings.ROOT_URLCONF = "tests.sharing.urls_for_tests"


def call(gateway, secret: str) -> int:  # noqa: F811
    return httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "team-chat", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {secret}"}, timeout=30,
    ).status_code  # fmt: skip


def test_admin_adds_a_member_to_a_group_and_the_groups_policy_admits_them(
    page, live_server, tenants, gateway, screenshot  # noqa: F811
):
    newbie = UserFactory(username="newbie", email="newbie@example.com")
    deployment = make_deployment(tenants.project, "team-llm", served_model_name="team-chat")
    sign_in(page, live_server, "owner")

    page.goto(live_server.url + reverse("org:members"))
    page.fill("#member-add-form input[name=username]", "newbie@example.com")
    page.select_option("#member-add-form select[name=role]", "member")
    page.click("#member-add-form button:has-text('Add member')")
    expect(page.locator(".messages")).to_contain_text("newbie added as member")
    expect(page.locator("#members-table")).to_contain_text("newbie")
    membership = Membership.objects.get(organization=tenants.org, user=newbie)

    page.goto(live_server.url + reverse("org:groups"))
    page.fill("#group-form input[name=name]", "ML team")
    page.click("#group-form button:has-text('Create group')")
    expect(page.locator("h1")).to_contain_text("ML team")
    page.select_option("#group-member-form select[name=user]", label="newbie")
    page.click("#group-member-form button:has-text('Add to group')")
    expect(page.locator("#group-members-table")).to_contain_text("newbie")
    screenshot("org-group-with-member")
    group = OrganizationGroup.objects.get(organization=tenants.org, name="ML team")

    page.goto(live_server.url + reverse("sharing:deployment_sharing", args=[deployment.pk]))
    page.check("#access-form input[name=kind][value=groups]")
    page.check("#access-form label:has-text('ML team') input")
    page.click("#access-form button:has-text('Save access policy')")
    expect(page.locator(".messages")).to_contain_text("saved")

    newbie_key = make_key(newbie, tenants.org)
    assert call(gateway, newbie_key) == 200
    assert call(gateway, make_key(tenants.member, tenants.org)) == 403  # not in the group
    assert newbie.groups.filter(pk=group.group_id).exists()

    page.goto(live_server.url + reverse("org:members"))
    page.locator(f"form[action='{reverse('org:member_remove', args=[membership.pk])}'] button").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("API keys in it are revoked")
    dialog.locator("[data-confirm-ok]").click()
    expect(page.locator(".messages")).to_contain_text("newbie removed from Acme; 1 of their API keys revoked")
    assert call(gateway, newbie_key) == 401
