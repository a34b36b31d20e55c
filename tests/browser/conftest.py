"""Fixtures of the browser tests: one Chromium per module (Debian's /usr/bin/chromium with fake
media devices, driven by Playwright), one live server per module (uvicorn on the test database),
and signed-in console pages."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, sign_in_with_token

LIVE_ENV = {
    "HEALTHCHAT_WS_RECONNECT_MIN_MS": "100",
    "HEALTHCHAT_WS_RECONNECT_MAX_MS": "500",
    "HEALTHCHAT_E2EE_POLICY": "optional",
}


@pytest.fixture(scope="module", autouse=True)
def _orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an asyncio loop on the test's thread; the ORM calls the tests
    make between browser steps are plain synchronous calls (no loop is running while they
    execute). Allowed for this module only: a process started by a later test on the same xdist
    worker (``manage.py check --deploy``) must not inherit the switch."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium"
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def console_server(live_server_factory: Any) -> Any:
    """One live server for the module (the console's static files come from the app finders)."""
    return live_server_factory(LIVE_ENV)


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """Pages in fresh browser contexts (one user each), closed after the test."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.log = []
        page.on("pageerror", lambda e: page.log.append(f"error: {e}"))
        page.on("console", lambda m: page.log.append(f"{m.type}: {m.text}"))
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def signed_in(new_page: Callable[[], Any], console_server: Any, make_token: Any) -> Callable[[Any], Any]:
    """A console page signed in as ``user`` (a real RS256 token for their uid and phone)."""

    def open_as(user: Any) -> Any:
        page = new_page()
        token = make_token(uid=user.firebase_uid, phone_number=user.phone_number)
        sign_in_with_token(page, console_server.base_url, token)
        return page

    return open_as
