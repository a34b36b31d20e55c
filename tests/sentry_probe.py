"""Run by tests/test_ops_live.py in its own process with SENTRY_DSN set: raises errors that
carry canaries (in the message, local variables, the request body, query, headers and cookies,
a logged error, and an exception in an asyncio task), then flushes sentry-sdk's queue and exits.

Django is set up inside a running event loop, as uvicorn does it (the app is imported by the
server's coroutine): sentry-sdk's asyncio integration patches the loop it is started in."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import django
from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.sentry_ingest import (
    CANARY_CIPHERTEXT,
    CANARY_FILE,
    CANARY_PHONE,
    CANARY_SECRET,
    CANARY_TEXT,
    CANARY_TOKEN,
)


def boom(request: HttpRequest) -> HttpResponse:
    body = request.body.decode()  # a local variable holding the canaries
    ciphertext = CANARY_CIPHERTEXT
    raise RuntimeError(
        f"could not store {CANARY_FILE} for {CANARY_PHONE}: {CANARY_SECRET} {len(body)} {ciphertext}"
    )


urlpatterns = [path("boom", boom)]


async def background_delivery() -> None:
    """A background task of the event loop that fails (as a socket's task would)."""
    token = CANARY_TOKEN  # a local variable holding a canary
    await asyncio.sleep(0)
    raise LookupError(f"no device of {CANARY_PHONE} for {CANARY_FILE}: {token}")


async def main_async() -> None:
    django.setup()  # inside the running loop, as under uvicorn
    import sentry_sdk

    assert sentry_sdk.get_client().is_active(), "SENTRY_DSN did not start sentry-sdk"
    await asyncio.to_thread(django_errors)
    task = asyncio.get_running_loop().create_task(background_delivery())
    with contextlib.suppress(LookupError):
        await task
    sentry_sdk.flush(timeout=10)


def django_errors() -> None:
    from django.test import Client, override_settings

    with override_settings(ROOT_URLCONF="tests.sentry_probe", ALLOWED_HOSTS=["*"]):
        client = Client(raise_request_exception=False)
        answer = client.post(
            f"/boom?phone={CANARY_PHONE}&token={CANARY_TOKEN}",
            data={"body": CANARY_TEXT, "file": CANARY_FILE, "ciphertext": CANARY_CIPHERTEXT},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {CANARY_TOKEN}",
            HTTP_COOKIE=f"sessionid={CANARY_SECRET}",
            HTTP_X_PHONE=CANARY_PHONE,
        )
        assert answer.status_code == 500, answer.status_code
    try:
        raise ValueError(f"push to {CANARY_PHONE} failed")
    except ValueError:
        logging.getLogger("probe").exception("delivery of %s failed for %s", CANARY_FILE, CANARY_PHONE)


def main() -> None:
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
