"""REST rate limits: every limited endpoint answers 429 ``rate_limited`` with ``Retry-After``,
counted in Redis (a sliding window per caller and scope under the cache's key prefix)."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.tests.factories import PatientFactory
from accounts.tests.helpers import assert_error
from conftest import unique_phone
from core.throttling import _redis

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_per_minute(settings):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {
        **rest["DEFAULT_THROTTLE_RATES"],
        **dict.fromkeys(("register", "export", "upload", "keys"), "1/minute"),
    }
    settings.REST_FRAMEWORK = rest


def _upload(client: APIClient):
    return client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile("notes.txt", b"some notes", content_type="text/plain")},
        format="multipart",
    )


CASES = {
    "register": lambda c, user: c.post("/api/v1/auth/register", {"role": "patient", "display_name": "Ann"}),
    "export": lambda c, user: c.get("/api/v1/me/export"),
    "upload": lambda c, user: _upload(c),
    "keys": lambda c, user: c.get(f"/api/v1/keys/{user.pk}"),
}


@pytest.mark.parametrize("scope", sorted(CASES))
def test_limited_endpoint_answers_429_rate_limited_with_retry_after(
    scope, one_per_minute, client_for, bearer, make_token, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    if scope == "register":
        user = None
        client = bearer(make_token(phone_number=unique_phone()))
    else:
        user = PatientFactory()
        client = client_for(user)
    first = CASES[scope](client, user)
    assert first.status_code in (200, 201), first.content
    response = CASES[scope](client, user)
    error = assert_error(response, 429, "rate_limited")
    retry_after = int(response["Retry-After"])
    assert error["retry_after"] == retry_after
    assert 55 <= retry_after <= 60
    # Another caller has their own bucket.
    other = PatientFactory()
    if scope == "register":
        fresh = CASES[scope](bearer(make_token(phone_number=unique_phone())), None)
    else:
        fresh = CASES[scope](client_for(other), other)
    assert fresh.status_code in (200, 201)


def test_counters_are_a_sliding_window_in_redis(client_for, one_per_minute):
    user = PatientFactory()
    assert client_for(user).get("/api/v1/me/export").status_code == 200
    key = cache.make_key(f"throttle_export_{user.pk}")
    redis = _redis(key)
    assert redis is not None  # the test settings use the Redis cache, as production does
    assert redis.type(key) == b"zset"
    assert redis.zcard(key) == 1
    assert 0 < redis.pttl(key) <= 60_000


def test_general_user_limit_applies_to_every_other_endpoint(client_for, settings):
    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], "user": "2/minute"}
    settings.REST_FRAMEWORK = rest
    client = client_for(PatientFactory())
    assert [client.get("/api/v1/me").status_code for _ in range(2)] == [200, 200]
    assert_error(client.get("/api/v1/conversations"), 429, "rate_limited")


@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
def test_without_redis_drf_counting_still_limits(client_for, one_per_minute):
    """The embedded defaults (no REDIS_URL) count in process memory, with the same answers."""
    client = client_for(PatientFactory())
    assert client.get("/api/v1/me/export").status_code == 200
    response = client.get("/api/v1/me/export")
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 60


def test_while_redis_is_unreachable_requests_pass_uncounted_not_500(client_for, one_per_minute, settings):
    """A Redis restart or a Sentinel failover (no master for ~2 s): the limit fails open."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    dead_cache = {
        "default": {**settings.CACHES["default"], "LOCATION": dead, "OPTIONS": {"socket_connect_timeout": 1}}
    }
    client = client_for(PatientFactory())
    with override_settings(CACHES=dead_cache):
        for _ in range(2):  # over the 1/minute limit: nothing is counted
            assert client.get("/api/v1/me/export").status_code == 200
