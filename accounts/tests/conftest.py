"""Fixtures for the accounts tests: API clients signed in with real RS256 tokens."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient


def _forget_throttles() -> None:
    """Delete this worker's throttle counters only (never flush: other workers share Redis)."""
    client = getattr(cache, "_cache", None)
    if client is None or not hasattr(client, "get_client"):
        cache.clear()  # a local-memory cache belongs to this process alone
        return
    redis = client.get_client(write=True)
    keys = [
        key
        for pattern in ("throttle_*", "prekey_budget:*")
        for key in redis.scan_iter(match=cache.make_key(pattern), count=1000)
    ]
    if keys:
        redis.delete(*keys)


@pytest.fixture(autouse=True)
def fresh_throttles() -> None:
    """Rate-limit and prekey-budget counters outlive the test database (ids restart): start
    every test clean."""
    _forget_throttles()


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def bearer() -> Callable[[str], APIClient]:
    """An API client carrying exactly ``token``."""

    def build(token: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    return build
