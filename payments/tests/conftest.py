"""Fixtures for payments: a fake Stripe API on 127.0.0.1, signed webhooks, signed-in clients."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from payments.tests.fake_stripe import FakeStripe, sign

WEBHOOK_SECRET = "whsec_healthchat_test_secret"
WEBHOOK_URL = "/api/v1/payments/stripe/webhook"


@pytest.fixture(scope="session")
def fake_stripe_server() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def stripe_fake(fake_stripe_server: FakeStripe, settings: Any) -> FakeStripe:
    """stripe-python pointed at the fake, with the webhook signing secret set."""
    fake_stripe_server.reset()
    settings.PAYMENTS_PROVIDER = "stripe"
    settings.STRIPE_SECRET_KEY = "sk_test_healthchat"
    settings.STRIPE_API_BASE = fake_stripe_server.url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    settings.PLATFORM_FEE_PERCENT = 15
    return fake_stripe_server


def post_event(
    event: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
    payload: str | None = None,
) -> Any:
    body = payload if payload is not None else json.dumps(event)
    header = signature if signature is not None else sign(body, secret, timestamp)
    return APIClient().generic(
        "POST", WEBHOOK_URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )


@pytest.fixture
def deliver(stripe_fake: FakeStripe) -> Callable[..., Any]:
    """POST an event to our webhook endpoint with a real Stripe-style signature."""
    return post_event
