"""The JavaScript SDK (clients/js, @healthchat/client) against a live server: this test starts
uvicorn on the test database, creates a patient and a verified doctor, mints their Firebase
tokens and runs the SDK's Node test suite (``node --test`` in clients/js) with the server's URLs
and the tokens in ``HC_*`` variables. The Node tests open the conversation over REST through the
generated client, then cover connect/auth, send/ack, exactly-once in-order delivery, the outbox
across a forced disconnect, sync after reconnect, ``auth.refresh``, bad server frames and close
codes (clients/js/test/live.test.js)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory
from tests.sdk import run_node_suite

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SDK = Path(__file__).resolve().parent.parent / "clients" / "js"

# Node suites with a Python runner of their own (they need a different server set-up).
OWN_RUNNERS = {
    "restart.live.test.js",
    "e2ee.unit.test.js",
    "e2ee.live.test.js",
    "features.live.test.js",
    "features.unit.test.js",
    "calls.live.test.js",
    "appointments.live.test.js",
    "appointments.unit.test.js",
    "chat-features.live.test.js",
}

ENV = {
    "HEALTHCHAT_WS_RECONNECT_MIN_MS": "50",
    "HEALTHCHAT_WS_RECONNECT_MAX_MS": "300",
    "HEALTHCHAT_E2EE_POLICY": "optional",
}


def test_sdk_node_suite_against_a_live_server(live_server_factory: Any, make_token: Any) -> None:
    assert (SDK / "node_modules" / "ws").is_dir(), "run `npm ci` in clients/js (make test does)"
    server = live_server_factory(ENV)
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()

    def token(user: Any, lifetime: int = 3600) -> str:
        return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number, lifetime=lifetime))

    env = dict(os.environ)
    env.update(
        HC_HTTP_URL=server.base_url,
        HC_WS_URL=server.ws_url,
        HC_PATIENT_ID=str(patient.pk),
        HC_DOCTOR_ID=str(doctor.pk),
        HC_PATIENT_TOKEN=token(patient),
        HC_DOCTOR_TOKEN=token(doctor),
        HC_PATIENT_SHORT_TOKEN=token(patient, lifetime=10),
        HC_UNREGISTERED_TOKEN=str(make_token(phone_number="+12025550123")),
    )
    files = sorted(
        str(p.relative_to(SDK)) for p in (SDK / "test").glob("*.test.js") if p.name not in OWN_RUNNERS
    )
    run_node_suite(files, env, server, timeout=240)
