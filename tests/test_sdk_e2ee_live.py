"""End-to-end encryption through the JavaScript SDK against a live server.

This test starts uvicorn on the test database, creates a patient (two devices) and a verified
doctor (one device), and runs ``clients/js/test/e2ee.live.test.js`` with Node's test runner: SDK
clients with the libsignal provider (the official ``@signalapp/libsignal-client``, injected)
register keys, open an encrypted conversation, exchange messages both ways (outbox across a lost
ack and a network cut, a second device, a reinstall, a prekey top-up) and a client without a
provider sees placeholders. Every plaintext carries a random canary marker; afterwards the
database holds the messages only as ciphertext: the marker is in no encoding in a dump of it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from messaging.models import Message, MessageCiphertext
from tests.e2ee.canary import database_dump, encodings
from tests.sdk import run_node_suite

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "clients" / "js"
LIBSIGNAL = ROOT / "node_modules" / "@signalapp" / "libsignal-client"

ENV = {
    "HEALTHCHAT_WS_RECONNECT_MIN_MS": "50",
    "HEALTHCHAT_WS_RECONNECT_MAX_MS": "300",
    "HEALTHCHAT_WS_RATE": "200",
    "HEALTHCHAT_WS_BURST": "100",
    "HEALTHCHAT_E2EE_POLICY": "optional",
}


def test_sdk_clients_exchange_encrypted_messages_and_the_database_holds_only_ciphertext(
    live_server_factory: Any, make_token: Any
) -> None:
    assert (SDK / "node_modules" / "ws").is_dir(), "run `npm ci` in clients/js (make test does)"
    assert LIBSIGNAL.is_dir(), "run `npm ci` at the repository root (@signalapp/libsignal-client)"
    server = live_server_factory(ENV)
    patient = PatientFactory.create()
    doctor = DoctorFactory.create()
    phone = DeviceFactory.create(user=patient)
    tablet = DeviceFactory.create(user=patient)
    doctor_phone = DeviceFactory.create(user=doctor)
    canary = f"CANARY-{secrets.token_hex(12)}"

    def token(user: Any) -> str:
        return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number))

    env = dict(os.environ)
    env.update(
        HC_HTTP_URL=server.base_url,
        HC_WS_URL=server.ws_url,
        HC_CANARY=canary,
        HC_PATIENT_ID=str(patient.pk),
        HC_DOCTOR_ID=str(doctor.pk),
        HC_PATIENT_TOKEN=token(patient),
        HC_DOCTOR_TOKEN=token(doctor),
        HC_PATIENT_PHONE=str(phone.pk),
        HC_PATIENT_TABLET=str(tablet.pk),
        HC_DOCTOR_PHONE=str(doctor_phone.pk),
    )
    run_node_suite(
        ["test/e2ee.unit.test.js", "test/e2ee.live.test.js"], env, server, timeout=150, passes=8
    )  # 3 offline + 5 live

    # What the server holds: empty bodies, one ciphertext per recipient device.
    messages = list(Message.objects.filter(conversation__e2ee=True, kind="text").order_by("seq"))
    assert len(messages) == 13
    assert all(m.body == "" for m in messages)
    rows = list(MessageCiphertext.objects.filter(message__in=messages))
    # 9 messages between the two phones, then 4 with the tablet (or its reinstall) in: 2 devices each.
    assert len(rows) == 9 + 4 * 2

    # The canary: nowhere in the database, raw, hex or base64 at any alignment.
    dump = database_dump()
    assert len(dump) > 10_000
    for needle in encodings(canary.encode()):
        assert needle not in dump, f"the canary was found in the database as {needle!r}"
    # The search works: a value the server does store is found in the dump.
    assert bytes(rows[0].ciphertext).hex().encode() in dump
