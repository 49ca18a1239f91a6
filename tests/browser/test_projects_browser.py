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


def test_s3_credentials_refused_keep_what_was_typed_and_say_which_field(page, live_server, tenants, screenshot):
    """QA: a refused S3 secret cleared the access key id, endpoint and region, said "It cannot
    contain spaces" without naming the field, and the three text inputs were unstyled (no type)."""
    sign_in(page, live_server, "owner")
    page.goto(f"{live_server.url}/projects/{tenants.project.pk}/integrations/")
    page.fill("#s3-access-key-id", "AKIAEXAMPLE")
    page.fill("#s3-secret-access-key", "has a space")
    page.fill("#s3-endpoint-url", "https://minio.example.com")
    page.fill("#s3-region", "eu-west-1")
    page.locator("form:has(#s3-region) button:has-text('Save')").click()
    expect(page.locator(".messages").first).to_contain_text(
        "Secret access key: It cannot contain spaces"
    )
    expect(page.locator(".field:has(#s3-secret-access-key) .errorlist")).to_contain_text("cannot contain spaces")
    expect(page.locator("#s3-access-key-id")).to_have_value("AKIAEXAMPLE")
    expect(page.locator("#s3-endpoint-url")).to_have_value("https://minio.example.com")
    expect(page.locator("#s3-region")).to_have_value("eu-west-1")
    expect(page.locator("#s3-secret-access-key")).to_have_value("")  # a secret is never sent back
    widths = {i: page.locator(i).bounding_box()["width"] for i in ("#s3-access-key-id", "#s3-secret-access-key", "#s3-region")}
    assert widths["#s3-access-key-id"] == widths["#s3-secret-access-key"] == widths["#s3-region"], widths
    screenshot("integrations-s3-refused")
    assert not tenants.project.integrations.exists()

    page.fill("#s3-secret-access-key", "wJalrXUtnFEMI")
    page.locator("form:has(#s3-region) button:has-text('Save')").click()
    expect(page.locator(".messages").first).to_contain_text("S3 credentials saved.")
    assert tenants.project.integrations.get().kind == "s3"
