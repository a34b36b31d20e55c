"""Canary: real Signal-protocol clients (official libsignal, Node) through a live server; the
markers they encrypt never appear in the database, Redis, logs, stored files or push payloads.

``signal_clients.mjs`` runs three libsignal clients (two devices of a patient, one of a doctor)
against a real uvicorn process: they publish keys (``PUT keys``; a forged signature is refused),
fetch bundles, hit ``devices_mismatch`` and repair it, exchange PreKey and ratchet messages over
the socket with per-device ``ciphertexts`` (and an encrypted attachment), and decrypt what they
receive. Then every place the server writes to is searched for the markers (raw, hex, base64).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as dj_settings

from accounts.models import DeviceIdentity
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from messaging import services
from messaging.models import Message, MessageCiphertext
from notifications.models import PushDelivery
from tests.e2ee.canary import database_dump, encodings, redis_dump

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "signal_clients.mjs"
LIBSIGNAL = ROOT / "node_modules" / "@signalapp" / "libsignal-client"


def test_the_search_finds_a_marker_in_every_encoding():
    marker = b"CANARY-0123456789abcdef01234567"
    for prefix in (b"", b"a", b"ab", b"abc"):
        data = prefix + marker + b"tail"
        for encoded in (
            data,
            data.hex().encode(),
            base64.b64encode(data),
            base64.urlsafe_b64encode(b"\xff\xfe" + data),
        ):
            assert any(needle in b"<" + encoded + b">" for needle in encodings(marker)), (prefix, encoded)


def files_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def media_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("canary-media")


@pytest.fixture(scope="module")
def server(live_server_factory, media_root):
    return live_server_factory(
        {
            "HEALTHCHAT_WS_RATE": "200",
            "HEALTHCHAT_WS_BURST": "100",
            "MEDIA_ROOT": str(media_root),
            "LOG_LEVEL": "DEBUG",
            "PUSH_GRACE_SECONDS": "0",
        }
    )


@pytest.mark.skipif(not LIBSIGNAL.exists(), reason="npm ci has not installed @signalapp/libsignal-client")
def test_libsignal_clients_exchange_messages_and_the_server_never_sees_the_text(
    server, make_token, media_root
):
    patient = PatientFactory.create()
    doctor = DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=True)
    phone = DeviceFactory.create(user=patient, fcm_token=f"fcm-{secrets.token_hex(8)}")
    tablet = DeviceFactory.create(user=patient)
    doctor_phone = DeviceFactory.create(user=doctor, fcm_token=f"fcm-{secrets.token_hex(8)}")
    markers = [f"CANARY-{secrets.token_hex(12)}" for _ in range(4)]

    def client(name: str, user: Any, device: Any) -> dict[str, Any]:
        token = make_token(uid=user.firebase_uid, phone_number=user.phone_number)
        return {"name": name, "user_id": user.pk, "device_id": device.pk, "token": token}

    config = {
        "base_url": server.base_url,
        "ws_url": server.ws_url,
        "conversation_id": conversation.pk,
        "markers": markers,
        "clients": [
            client("alice1", patient, phone),
            client("alice2", patient, tablet),
            client("bob", doctor, doctor_phone),
        ],
    }
    env = {**os.environ, "HC_E2EE_CONFIG": json.dumps(config)}
    run = subprocess.run(
        ["node", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"node printed nothing\nstdout:{run.stdout}\nstderr:{run.stderr}\nserver:{server.log()}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{result}\nstderr:{run.stderr}\nserver log:\n{server.log()}"
    steps = [s["step"] for s in result["steps"]]
    assert steps.count("keys published") == 3
    assert "devices_mismatch" in steps
    assert "decrypted attachment" in steps
    assert steps.count("decrypted PreKey message") == 2
    assert "decrypted ratchet message" in steps
    assert "plaintext refused" in steps

    # What the server holds: keys, ciphertexts per device, empty bodies, push rows.
    assert DeviceIdentity.objects.filter(device__in=[phone, tablet, doctor_phone]).count() == 3
    messages = list(Message.objects.filter(conversation=conversation, kind="text").order_by("seq"))
    assert len(messages) == 3
    assert all(m.body == "" for m in messages)
    assert MessageCiphertext.objects.filter(message__in=messages).count() == 6
    assert PushDelivery.objects.filter(message__in=messages).exists()  # the push path ran

    # The canary: nowhere, in any encoding.
    haystacks = {
        "database dump": database_dump(),
        "redis": redis_dump(dj_settings.REDIS_URL or "redis://127.0.0.1:6379/0"),
        "server log": server.log_path.read_bytes(),
        "stored files": files_under(media_root),
        "push payloads": json.dumps(
            list(PushDelivery.objects.filter(message__in=messages).values()), default=str
        ).encode(),
    }
    if (
        dj_settings.CELERY_BROKER_URL.startswith("redis")
        and dj_settings.CELERY_BROKER_URL != dj_settings.REDIS_URL
    ):
        haystacks["celery broker"] = redis_dump(dj_settings.CELERY_BROKER_URL)
    assert files_under(media_root), "the encrypted attachment was not stored"
    assert len(haystacks["database dump"]) > 10_000
    for marker in markers:
        for needle in encodings(marker.encode()):
            for where, data in haystacks.items():
                assert needle not in data, f"marker {marker} found in {where} as {needle!r}"
    # The search itself works: a value the server does store is found in the dump.
    first = MessageCiphertext.objects.filter(message=messages[0]).first()
    assert first is not None
    stored = bytes(first.ciphertext)
    assert stored.hex().encode() in haystacks["database dump"]
