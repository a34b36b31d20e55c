"""The no-services path: `make run`'s server on embedded defaults (SQLite, in-memory layer).

It grows with the features: health, docs, development sign-in, registration, ...
"""

import os
import subprocess
import sys

import pytest
import requests

from tests.live import ROOT, ServerProcess, free_port

EMBEDDED_STRIP = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "FIREBASE_AUTH_EMULATOR_HOST")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedded")
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_STRIP and not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="healthchat.settings.local",
        # Same embedded engine as the default, in a scratch file so the developer's db is untouched.
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        DEV_TOKEN_KEY_PATH=str(tmp / "dev-key.pem"),
        MEDIA_ROOT=str(tmp / "media"),
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    port = free_port()
    server = ServerProcess(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env,
        port,
        tmp / "server.log",
    )
    try:
        server.wait_ready()
        yield server, env
    finally:
        server.stop()


def dev_token(env, phone: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "dev_token", phone],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_healthz_and_docs_on_embedded_defaults(embedded):
    server, _ = embedded
    health = requests.get(f"{server.base_url}/healthz", timeout=5)
    assert health.status_code == 200
    checks = health.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "embedded"
    assert checks["broker"]["status"] == "embedded"
    assert requests.get(f"{server.base_url}/api/docs/", timeout=5).status_code == 200
    assert requests.get(f"{server.base_url}/api/schema/", timeout=5).status_code == 200


def test_dev_sign_in_register_and_me(embedded):
    server, env = embedded
    token = dev_token(env, "+14155550100")
    headers = {"Authorization": f"Bearer {token}"}
    created = requests.post(
        f"{server.base_url}/api/v1/auth/register",
        json={"role": "patient", "display_name": "Ann"},
        headers=headers,
        timeout=5,
    )
    assert created.status_code in (200, 201), created.text
    me = requests.get(f"{server.base_url}/api/v1/me", headers=headers, timeout=5)
    assert me.status_code == 200
    assert me.json()["phone_number"] == "+14155550100"


def test_socket_message_between_patient_and_doctor(embedded):
    import asyncio
    import uuid

    from tests.wsclient import WsClient

    server, env = embedded
    patient_token = dev_token(env, "+14155550111")
    doctor_token = dev_token(env, "+14155550122")
    base = f"{server.base_url}/api/v1"
    doctor = requests.post(
        f"{base}/auth/register",
        json={
            "role": "doctor",
            "display_name": "Dr Amina",
            "specialty": "general-practice",
            "licence_number": "GMC-1",
            "jurisdiction": "GB",
            "consultation_fee": 2500,
            "currency": "GBP",
        },
        headers={"Authorization": f"Bearer {doctor_token}"},
        timeout=5,
    ).json()
    subprocess.run(
        [sys.executable, "manage.py", "verify_doctor", str(doctor["id"])],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )
    patient_headers = {"Authorization": f"Bearer {patient_token}"}
    requests.post(
        f"{base}/auth/register",
        json={"role": "patient", "display_name": "Pat"},
        headers=patient_headers,
        timeout=5,
    )
    conversation = requests.post(
        f"{base}/conversations", json={"peer_id": doctor["id"]}, headers=patient_headers, timeout=5
    )
    assert conversation.status_code == 201, conversation.text
    conversation_id = conversation.json()["id"]
    ws_url = f"ws://127.0.0.1:{server.port}/ws/v1/"

    async def scenario():
        a = await WsClient.connect(ws_url, patient_token)
        b = await WsClient.connect(ws_url, doctor_token)
        ack = await a.request(
            "message.send",
            {"conversation_id": conversation_id, "client_id": str(uuid.uuid4()), "body": "hello"},
        )
        assert ack["type"] == "ack", ack
        got = await b.expect("message.new")
        assert got["data"]["message"]["body"] == "hello"
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_video_upload_is_stripped_inside_the_request_with_eager_celery(embedded):
    """``make run`` has no worker: the eager task strips the video before the upload answers."""
    from messaging.tests import media_corpus as mc

    server, env = embedded
    token = dev_token(env, "+14155550133")
    headers = {"Authorization": f"Bearer {token}"}
    registered = requests.post(
        f"{server.base_url}/api/v1/auth/register",
        json={"role": "patient", "display_name": "Ben"},
        headers=headers,
        timeout=5,
    )
    assert registered.status_code in (200, 201), registered.text
    sample = mc.mov()
    uploaded = requests.post(
        f"{server.base_url}/api/v1/attachments",
        files={"file": (sample.name, sample.data, "application/octet-stream")},
        headers=headers,
        timeout=60,
    )
    assert uploaded.status_code == 201, uploaded.text
    assert (uploaded.json()["state"], uploaded.json()["rejection"]) == ("ready", None)
    link = requests.get(
        f"{server.base_url}/api/v1/attachments/{uploaded.json()['id']}", headers=headers, timeout=5
    )
    data = requests.get(link.json()["url"], timeout=30).content
    assert mc.metadata_problems(data, "mov") == []


def test_booking_on_sqlite_refuses_a_taken_slot(embedded):
    """The embedded SQLite has no exclusion constraint: the booking service's overlap check
    (``appointments.services.ensure_free``) gives the second booking the same ``slot_taken``."""
    import datetime as dt

    server, env = embedded
    base = f"{server.base_url}/api/v1"
    doctor_headers = {"Authorization": f"Bearer {dev_token(env, '+14155550144')}"}
    doctor = requests.post(
        f"{base}/auth/register",
        json={
            "role": "doctor",
            "display_name": "Dr Okafor",
            "specialty": "general-practice",
            "licence_number": "GMC-2",
            "jurisdiction": "GB",
            "consultation_fee": 2500,
            "currency": "GBP",
        },
        headers=doctor_headers,
        timeout=5,
    ).json()
    subprocess.run(
        [sys.executable, "manage.py", "verify_doctor", str(doctor["id"])],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )
    every_day = [{"weekday": d, "start": "00:00", "end": "23:40"} for d in range(7)]
    schedule = requests.put(
        f"{base}/schedule",
        json={"timezone": "UTC", "min_notice_minutes": 0, "weekly_hours": every_day},
        headers=doctor_headers,
        timeout=5,
    )
    assert schedule.status_code == 200, schedule.text
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    patients = []
    for phone in ("+14155550155", "+14155550166"):
        headers = {"Authorization": f"Bearer {dev_token(env, phone)}"}
        requests.post(
            f"{base}/auth/register", json={"role": "patient", "display_name": "P"}, headers=headers, timeout=5
        )
        patients.append(headers)
    slots = requests.get(
        f"{base}/doctors/{doctor['id']}/slots",
        params={"start": tomorrow, "end": tomorrow, "tz": "UTC"},
        headers=patients[0],
        timeout=5,
    )
    assert slots.status_code == 200, slots.text
    first = slots.json()[0]["start"]
    booking = {"doctor_id": doctor["id"], "starts_at": first, "kind": "chat"}
    won = requests.post(f"{base}/appointments", json=booking, headers=patients[0], timeout=10)
    assert won.status_code == 201, won.text
    assert won.json()["appointment"]["state"] in ("held", "confirmed")
    lost = requests.post(f"{base}/appointments", json=booking, headers=patients[1], timeout=10)
    assert lost.status_code == 409, lost.text
    assert lost.json()["error"]["code"] == "slot_taken", lost.text
