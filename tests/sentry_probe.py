"""Run by tests/test_ops_live.py in its own process with SENTRY_DSN set: raises errors that
carry canaries (in the message, local variables, the request body, query, headers and cookies,
and a logged error), then flushes sentry-sdk's queue and exits."""

from __future__ import annotations

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


def main() -> None:
    django.setup()
    import sentry_sdk
    from django.test import Client, override_settings

    assert sentry_sdk.get_client().is_active(), "SENTRY_DSN did not start sentry-sdk"
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
    sentry_sdk.flush(timeout=10)


if __name__ == "__main__":
    main()
