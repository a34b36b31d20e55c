"""Calls REST: history for participants only (cursor pagination, query counts), TURN credentials
(format, HMAC checked against an independent computation, expiry), production refusal."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from accounts.tests.factories import DoctorFactory
from calls import services, turn
from calls.tests.conftest import SDP_ANSWER, SDP_OFFER
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def make_calls(n: int):
    """``n`` finished calls (cancelled) between a patient and a doctor, oldest first."""
    patient, doctor, conversation = pair()
    ids = []
    for _ in range(n):
        call = services.call_start(
            caller=patient, conversation_id=conversation.pk, media="audio", sdp=SDP_OFFER
        ).call
        services.call_cancel(user=patient, call_id=call.pk)
        ids.append(call.pk)
    return patient, doctor, conversation, ids


def test_history_lists_a_participants_calls_newest_first_with_cursor_pages(api):
    patient, doctor, conversation, ids = make_calls(5)
    seen = []
    url = "/api/v1/calls?limit=2"
    while url:
        response = api(doctor).get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        seen += [c["id"] for c in body["results"]]
        url = body["next"]
    assert seen == sorted(ids, reverse=True)
    first = api(patient).get("/api/v1/calls").json()["results"][0]
    assert first["conversation_id"] == conversation.pk
    assert first["state"] == "cancelled"
    assert first["end_reason"] == "cancelled"
    assert [p["user_id"] for p in first["participants"]] == [patient.pk, doctor.pk]
    assert "channel_name" not in first["participants"][0]
    assert "device_id" not in first["participants"][0]


def test_history_filters(api):
    patient, doctor, conversation, ids = make_calls(2)
    ringing = services.call_start(
        caller=patient, conversation_id=conversation.pk, media="video", sdp=SDP_OFFER
    ).call
    active = api(doctor).get("/api/v1/calls?active=true").json()["results"]
    assert [c["id"] for c in active] == [ringing.pk]
    over = api(doctor).get("/api/v1/calls?active=false").json()["results"]
    assert sorted(c["id"] for c in over) == sorted(ids)
    _p, _d, other_conversation, _ = make_calls(1)
    mine = api(doctor).get(f"/api/v1/calls?conversation_id={conversation.pk}").json()["results"]
    assert len(mine) == 3
    assert api(doctor).get(f"/api/v1/calls?conversation_id={other_conversation.pk}").json()["results"] == []
    assert api(doctor).get("/api/v1/calls?conversation_id=abc").status_code == 400


def test_only_participants_see_a_call(api):
    patient, doctor, _conversation, [call_id] = make_calls(1)
    assert api(patient).get(f"/api/v1/calls/{call_id}").json()["id"] == call_id
    assert api(doctor).get(f"/api/v1/calls/{call_id}").status_code == 200
    stranger = DoctorFactory()
    response = api(stranger).get(f"/api/v1/calls/{call_id}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "call_not_found"
    assert api(stranger).get("/api/v1/calls").json()["results"] == []
    assert APIClient().get(f"/api/v1/calls/{call_id}").status_code == 401
    assert api(patient).get("/api/v1/calls/99999999").status_code == 404


def test_history_reads_in_a_fixed_number_of_queries(api, django_assert_num_queries):
    patient, _doctor, _conversation, _ids = make_calls(3)
    client = api(patient)
    client.get("/api/v1/calls")  # warm up authentication caches
    # the user, the calls page, their participants, the audit row (call.list)
    with django_assert_num_queries(4):
        response = client.get("/api/v1/calls")
    assert len(response.json()["results"]) == 3


def test_answered_call_detail_shows_the_duration(api):
    patient, doctor, conversation = pair()
    call = services.call_start(
        caller=patient, conversation_id=conversation.pk, media="audio", sdp=SDP_OFFER
    ).call
    services.call_accept(user=doctor, call_id=call.pk, sdp=SDP_ANSWER, channel_name="specific.x!1")
    services.call_hangup(user=patient, call_id=call.pk)
    body = api(doctor).get(f"/api/v1/calls/{call.pk}").json()
    assert body["state"] == "ended"
    assert body["answered_at"]
    assert body["ended_at"]
    assert body["duration"] >= 0


# --- TURN credentials --------------------------------------------------------------------------
def independent_password(secret: str, username: str) -> str:
    """The TURN REST API password computed here, without the code under test."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def test_turn_credentials_follow_the_turn_rest_api(api, settings):
    settings.TURN_SECRET = "s3cret-shared-with-coturn"
    settings.TURN_URLS = [
        "turn:turn.example.org:3478?transport=udp",
        "turn:turn.example.org:3478?transport=tcp",
    ]
    settings.STUN_URLS = ["stun:turn.example.org:3478"]
    settings.TURN_TTL_SECONDS = 600
    patient, _doctor, _conversation = pair()
    before = int(time.time())
    response = api(patient).get("/api/v1/calls/turn-credentials")
    after = int(time.time())
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    expiry, user_id = body["username"].split(":")
    assert user_id == str(patient.pk)
    assert before + 600 <= int(expiry) <= after + 600
    assert body["password"] == independent_password("s3cret-shared-with-coturn", body["username"])
    assert body["ttl"] == 600
    assert dt.datetime.fromisoformat(body["expires_at"]).timestamp() == int(expiry)
    assert body["uris"] == settings.TURN_URLS
    assert body["ice_servers"] == [
        {"urls": ["stun:turn.example.org:3478"]},
        {"urls": settings.TURN_URLS, "username": body["username"], "credential": body["password"]},
    ]
    # A different secret gives a different password: the server must share ours.
    assert body["password"] != independent_password("another-secret", body["username"])


def test_turn_credentials_expire_and_belong_to_one_user(settings):
    settings.TURN_SECRET = "k"
    settings.TURN_URLS = ["turn:127.0.0.1:3478"]
    settings.TURN_TTL_SECONDS = 60
    old = turn.turn_credentials(user_id=7, now=1_000_000)
    assert old["username"] == "1000060:7"
    assert old["password"] == independent_password("k", "1000060:7")
    assert turn.turn_credentials(user_id=8, now=1_000_000)["password"] != old["password"]


def test_turn_without_a_secret(api, settings):
    patient, _doctor, _conversation = pair()
    settings.TURN_SECRET = ""
    settings.TURN_URLS = []
    settings.STUN_URLS = ["stun:stun.example.org:3478"]
    body = api(patient).get("/api/v1/calls/turn-credentials").json()
    assert body["username"] is None
    assert body["password"] is None
    assert body["ice_servers"] == [{"urls": ["stun:stun.example.org:3478"]}]
    settings.TURN_URLS = ["turn:turn.example.org:3478"]
    response = api(patient).get("/api/v1/calls/turn-credentials")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "turn_unavailable"
    assert APIClient().get("/api/v1/calls/turn-credentials").status_code == 401


@pytest.mark.django_db(databases=[])
def test_production_refuses_turn_urls_without_a_secret():
    good = {
        "SECRET_KEY": "x" * 50,
        "ALLOWED_HOSTS": "api.example.org",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/healthchat",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "FIREBASE_PROJECT_ID": "healthchat-prod",
        "STRIPE_SECRET_KEY": "sk_live_test",
        "STRIPE_WEBHOOK_SECRET": "whsec_test",
        "DJANGO_SETTINGS_MODULE": "healthchat.settings.production",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FIREBASE", "TURN", "STUN", "DEBUG"))}

    def check(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy"],
            cwd=ROOT,
            env={**base, **good, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = check({"TURN_URLS": "turn:turn.example.org:3478"})
    assert refused.returncode != 0
    assert "TURN_SECRET" in refused.stderr
    assert "refuse to start" in refused.stderr
    assert check({"TURN_URLS": "turn:turn.example.org:3478", "TURN_SECRET": "x" * 32}).returncode == 0
    assert check({}).returncode == 0  # no TURN at all: allowed (STUN only, or none)
