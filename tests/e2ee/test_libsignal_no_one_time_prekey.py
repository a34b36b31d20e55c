"""The official Signal library establishes a session from a bundle without a one-time prekey:
what a requester over its prekey budget gets (trust finding 4, docs/e2ee.md "Prekey budgets").

``signal_clients.mjs`` (scenario ``no_one_time_prekey``) runs a patient and a doctor against a
live uvicorn process whose budget is one fetch per (requester, target): the patient's second
fetch comes without a one-time prekey and with the last-resort Kyber key; libsignal's
``processPreKeyBundle`` builds a PQXDH session from it, the doctor decrypts the PreKey message,
and the patient decrypts the doctor's reply.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from messaging import services

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "signal_clients.mjs"


@pytest.fixture(scope="module")
def server(live_server_factory):
    return live_server_factory({"HEALTHCHAT_PREKEY_BUDGET_PER_PAIR": "1", "HEALTHCHAT_WS_RATE": "200"})


def test_libsignal_session_from_a_bundle_without_a_one_time_prekey(server, make_token):
    patient = PatientFactory.create()
    doctor = DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=True)
    phone = DeviceFactory.create(user=patient)
    doctor_phone = DeviceFactory.create(user=doctor)

    def client(name: str, user: Any, device: Any) -> dict[str, Any]:
        token = make_token(uid=user.firebase_uid, phone_number=user.phone_number)
        return {"name": name, "user_id": user.pk, "device_id": device.pk, "token": token}

    config = {
        "scenario": "no_one_time_prekey",
        "base_url": server.base_url,
        "ws_url": server.ws_url,
        "conversation_id": conversation.pk,
        "markers": [f"M-{secrets.token_hex(8)}" for _ in range(2)],
        "clients": [client("patient", patient, phone), client("doctor", doctor, doctor_phone)],
    }
    env = {**os.environ, "HC_E2EE_CONFIG": json.dumps(config)}
    run = subprocess.run(
        ["node", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"node printed nothing\nstdout:{run.stdout}\nstderr:{run.stderr}\nserver:{server.log()}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{result}\nstderr:{run.stderr}\nserver log:\n{server.log()}"
    steps = {s["step"]: s for s in result["steps"]}
    assert "bundle without one-time prekey" in steps
    assert "decrypted PreKey message without one-time prekey" in steps
    assert "decrypted reply" in steps
    # The doctor published 5 + 5 one-time keys; only the first, budgeted fetch took one of each.
    assert steps["doctor stock"]["counts"] == {"one_time_prekeys": 4, "kyber_prekeys": 4}
