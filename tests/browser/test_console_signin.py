"""Sign-in to the console in Chromium with the Firebase Web SDK's phone flow against the Auth
emulator (npm firebase-tools; the vendored firebase-auth.js, the emulator's mock reCAPTCHA): the
code the emulator "sent" is typed in, the console gets an ID token, the server (firebase-admin in
emulator mode) accepts it, and the socket is ready. Also: axe and a screenshot of the sign-in
screen, the page's Content-Security-Policy as the browser received it, and a refused token
shown as an error."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from conftest import unique_phone
from tests.browser import TIMEOUT_MS, Timings, assert_accessible, screenshot
from tests.browser.conftest import LIVE_ENV

pytestmark = [
    pytest.mark.live,
    pytest.mark.browser,
    pytest.mark.emulator,
    pytest.mark.django_db(transaction=True),
]

firebase_emulator: Any = importlib.import_module("scripts.firebase_emulator")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    handle = firebase_emulator.start_auth_emulator(0, workdir=tmp_path_factory.mktemp("firebase-emulator"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def console_server(live_server_factory: Any, emulator: Any) -> Any:
    """The live server in emulator mode: it verifies the emulator's tokens, and its console page
    points the Firebase Web SDK at the emulator."""
    return live_server_factory({**LIVE_ENV, "FIREBASE_AUTH_EMULATOR_HOST": emulator.host})


def test_phone_sign_in_through_the_auth_emulator(new_page: Any, console_server: Any, emulator: Any) -> None:
    t = Timings()
    phone = unique_phone()
    # The account exists on our side (registered with a token of the same emulator user).
    token = firebase_emulator.phone_sign_in(emulator.host, phone, emulator.project)
    registered = requests.post(
        f"{console_server.base_url}/api/v1/auth/register",
        json={"role": "patient", "display_name": "Pat Emulator"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert registered.status_code == 201, registered.text
    t.mark("emulator account + register")

    page = new_page()
    response = page.goto(f"{console_server.base_url}/console/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert f"http://{emulator.host}" in policy  # the page may talk to the emulator, nothing else
    page.wait_for_selector("body[data-loaded='true']")
    expect(page.locator("#phone-form")).to_be_visible()
    screenshot(page, "console-sign-in")
    assert_accessible(page, "sign-in")

    # a refused token is an error on the screen, not a silent failure
    page.fill("#token", "not-a-token")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#signin-error")).not_to_be_empty()

    page.fill("#phone", phone)
    page.click("#send-code")
    expect(page.locator("#code-step")).to_be_visible()
    codes = requests.get(
        f"http://{emulator.host}/emulator/v1/projects/{emulator.project}/verificationCodes", timeout=10
    ).json()["verificationCodes"]
    code = next(c["code"] for c in reversed(codes) if c["phoneNumber"] == phone)
    page.fill("#code", code)
    page.click("#confirm-code")
    page.wait_for_selector("body[data-ready='true']", timeout=TIMEOUT_MS)
    expect(page.locator("#me-name")).to_have_text("Pat Emulator")
    expect(page.locator("#connection")).to_have_text("online")
    t.mark("phone flow in the browser")
    # a reload keeps the tab signed in (Firebase's session persistence: sessionStorage)
    page.reload()
    page.wait_for_selector("body[data-ready='true']", timeout=TIMEOUT_MS)
    t.mark("reload")
    print(f"\nconsole sign-in timings: {t.report()}")
