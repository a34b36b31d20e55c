"""REST rate limits on real uvicorn processes sharing Redis: counters outlive a server restart, are
shared by every process, hold under concurrent requests, and a 429 says when to come back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from accounts.tests.factories import PatientFactory
from conftest import unique_phone

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

LIMITS = {
    "THROTTLE_EXPORT_RATE": "3/hour",
    "THROTTLE_REGISTER_RATE": "4/minute",
    "THROTTLE_KEYS_RATE": "5/minute",
    "THROTTLE_UPLOAD_RATE": "2/minute",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_rate_limited(response: requests.Response, *, window: int) -> int:
    """A 429 in our error format whose ``Retry-After`` header and body agree; returns it."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["message"]
    retry_after = int(response.headers["Retry-After"])
    assert error["retry_after"] == retry_after
    assert 1 <= retry_after <= window
    return retry_after


def test_export_limit_survives_a_server_restart(live_server_factory, make_token):
    user = PatientFactory()
    headers = bearer(make_token(user.firebase_uid, user.phone_number))
    first = live_server_factory(LIMITS)
    url = f"{first.base_url}/api/v1/me/export"
    assert [requests.get(url, headers=headers, timeout=10).status_code for _ in range(3)] == [200] * 3
    assert_rate_limited(requests.get(url, headers=headers, timeout=10), window=3600)
    first.stop()

    second = live_server_factory(LIMITS)  # a new process: nothing in memory, counters in Redis
    response = requests.get(f"{second.base_url}/api/v1/me/export", headers=headers, timeout=10)
    retry_after = assert_rate_limited(response, window=3600)
    assert retry_after > 3600 - 60  # the window started with the first request, moments ago
    # Another user is not affected.
    other = PatientFactory()
    fresh = bearer(make_token(other.firebase_uid, other.phone_number))
    assert requests.get(f"{second.base_url}/api/v1/me/export", headers=fresh, timeout=10).status_code == 200


def test_concurrent_sign_ups_across_two_processes_get_exactly_the_limit(live_server_factory, make_token):
    servers = [live_server_factory(LIMITS), live_server_factory(LIMITS)]
    uid = f"burst-{time.time_ns()}"
    tokens = [make_token(uid, unique_phone()) for _ in range(2)]  # one Firebase account

    def register(i: int) -> int:
        url = f"{servers[i % 2].base_url}/api/v1/auth/register"
        body = {"role": "patient", "display_name": "Burst"}
        return requests.post(url, json=body, headers=bearer(tokens[i % 2]), timeout=20).status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        statuses = list(pool.map(register, range(24)))
    assert len([s for s in statuses if s in (200, 201, 409)]) == 4, statuses
    assert statuses.count(429) == 20, statuses
