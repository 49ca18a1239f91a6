"""Playwright on Debian's chromium against pytest-django's live server."""

from __future__ import annotations

import os

import pytest

from tests.conftest import TEST_OUTPUT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def browser():
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def phone_and_desktop(browser):
    """open_page("desktop" | "phone"): a page 1280 px or 390 px wide (a phone's at 2× pixels),
    each in a context of its own, all closed after the test."""
    contexts = []

    def open_page(kind: str):
        context = browser.new_context(viewport=WIDTHS[kind], device_scale_factor=1 if kind == "desktop" else 2)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def screenshot(page):
    def take(name: str) -> str:
        path = os.path.join(TEST_OUTPUT, f"{name}.png")
        page.screenshot(path=path, full_page=True)
        return path

    return take


def sign_in(page, live_server, username: str, password: str = "pw-secret-123") -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{live_server.url}/")
