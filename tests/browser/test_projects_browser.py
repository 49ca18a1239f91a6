"""A person signs in and creates a project through the HTMX form."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from projects.models import Project
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_create_project_with_field_errors_that_keep_the_input(page, live_server, tenants, screenshot):
    sign_in(page, live_server, "owner")
    expect(page.locator("h1")).to_have_text("Dashboard")
    page.click("nav >> text=Projects")
    page.click("text=New project")

    page.fill("#id_name", "Speech")
    page.fill("#id_slug", "speech")
    page.fill("#id_description", "ASR and TTS models")
    page.fill("#id_gpu_quota", "two")
    page.locator("#id_gpu_quota").blur()
    # htmx validates the field alone and swaps in its error
    expect(page.locator("#field-gpu_quota .errorlist")).to_contain_text("whole number")
    expect(page.locator("#id_name")).to_have_value("Speech")
    expect(page.locator("#id_description")).to_have_value("ASR and TTS models")
    screenshot("project-form-field-error")

    page.fill("#id_gpu_quota", "-1")
    page.click("button:has-text('Create project')")
    expect(page.locator("#field-gpu_quota .errorlist")).to_contain_text("A GPU quota can't be negative")
    expect(page.locator("#id_slug")).to_have_value("speech")
    assert not Project.objects.filter(slug="speech").exists()

    page.fill("#id_gpu_quota", "2")
    # The field checks itself when it loses focus (htmx): let that answer land before the submit,
    # or on a loaded machine the swap can race the click.
    page.locator("#id_gpu_quota").blur()
    expect(page.locator("#field-gpu_quota")).not_to_contain_text("negative")
    page.click("button:has-text('Create project')")
    expect(page.locator("h1")).to_have_text("Speech")
    expect(page.locator(".messages")).to_contain_text("acme-speech")
    path = screenshot("project-created")
    assert os.path.getsize(path) > 10_000
    assert Project.objects.get(slug="speech").gpu_quota == 2
