"""Operations, live (issue 21): a real uvicorn with JSON logs at debug and /metrics behind a
token. The test drives every client frame type (each once with canary strings in every field,
so most are refused, and the common ones validly with canary text) and REST writes carrying
canaries (a file name, a display name, a phone number, a token-shaped string), then:

- every log line is one JSON object with the documented fields, and no canary is in any line;
- ``/metrics`` is 401 without the bearer token and shows the traffic, and every label value of
  every series is in the allow-list (``tests/metrics_labels.py``).

The account's erasure (``DELETE /me``) asks Firebase to delete the user: it is driven against a
server pointed at the Firebase Auth emulator (offline, npm ``firebase-tools``), signed in through
the emulator's phone flow with a canary phone number and display name, and its log scanned the
same way (``test_account_deletion_through_the_firebase_emulator_logs_no_canary``).

Error tracking end to end is ``test_sentry_envelope_arrives_scrubbed``: sentry-sdk runs for real
in a Django process and posts its envelopes to a local HTTP endpoint standing in for Sentry.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from accounts.tests.factories import DeviceFactory
from conftest import PROJECT_ID
from messaging import protocol
from messaging.tests.factories import pair
from tests.metrics_labels import label_violations
from tests.sentry_ingest import (
    CANARIES,
    CANARY_FILE,
    CANARY_PHONE,
    CANARY_SECRET,
    CANARY_TEXT,
    CANARY_TOKEN,
    Ingest,
)
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "metrics-" + uuid.uuid4().hex
ROOT = Path(__file__).resolve().parent.parent
LOG_FIELDS = {"timestamp", "level", "logger", "event"}


@pytest.fixture(scope="module")
def server(live_server_factory, tmp_path_factory):
    env = {
        "MEDIA_ROOT": str(tmp_path_factory.mktemp("media")),
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        "METRICS_TOKEN": METRICS_TOKEN,
        "STRIPE_WEBHOOK_SECRET": "whsec_" + uuid.uuid4().hex,  # the canary signature is checked, refused
    }
    return live_server_factory(env, access_log=True)


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 20, 20)).save(out, format="JPEG")
    return out.getvalue()


def canary_value(name: str, schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A value of ``schema``'s type carrying a canary fitting the field's name."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    kind = schema.get("type")
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [canary_value(name, schema.get("items", {}), components)]
    if kind == "object" or "properties" in schema:
        return canary_body(schema, components) or {"note": CANARY_TEXT}
    lowered = name.lower()
    if "phone" in lowered:
        return CANARY_PHONE
    if "token" in lowered or "key" in lowered or "signature" in lowered:
        return CANARY_TOKEN
    if "file" in lowered or ("name" in lowered and "display" not in lowered):
        return CANARY_FILE
    return CANARY_TEXT


def canary_body(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return {
        name: canary_value(name, field, components)
        for name, field in (schema.get("properties") or {}).items()
        if not field.get("readOnly")
    }


def rest_writes(conversation_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Every REST write of docs/openapi.yaml (JSON bodies) with canaries in every field, but
    the account's own erasure (DELETE /me: it ends the account, and it asks Firebase: its own
    test below, against the Firebase Auth emulator)."""
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    components = spec["components"]["schemas"]
    writes = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "put", "patch", "delete") or (method, path) == ("delete", "/api/v1/me"):
                continue
            content = (operation.get("requestBody") or {}).get("content", {})
            schema = (content.get("application/json") or {}).get("schema", {})
            url = path.replace("{conversation_id}", str(conversation_id))
            url = re.sub(r"\{[a-z_]+\}", "1", url)
            writes.append((method, url, canary_body(schema, components) if schema else {}))
    return writes


def canary_data(conversation_id: int) -> dict[str, Any]:
    """Every field name the client frames use, filled with canaries (most frames refuse it)."""
    return {
        "conversation_id": conversation_id,
        "client_id": str(uuid.uuid4()),
        "body": CANARY_TEXT,
        "token": CANARY_TOKEN,
        "cursor": CANARY_TOKEN,
        "message_id": 1,
        "user_ids": [1],
        "sdp": f"v=0 {CANARY_TEXT}",
        "candidate": CANARY_TEXT,
        "call_id": CANARY_TEXT,
        "phone_number": CANARY_PHONE,
        "file_name": CANARY_FILE,
        "reason": CANARY_TEXT,
    }


async def drive_sockets(
    server: Any, patient_token: str, doctor_token: str, conversation_id: int, doctor_id: int
) -> None:
    patient = await WsClient.connect(server.ws_url, patient_token)
    doctor = await WsClient.connect(server.ws_url, doctor_token)
    for frame_type in protocol.CLIENT_FRAMES:
        await patient.request(frame_type, canary_data(conversation_id), timeout=20)
    sent = await patient.send_message(conversation_id, f"{CANARY_TEXT} {CANARY_PHONE} {CANARY_FILE}")
    assert sent["type"] == "ack", sent
    await doctor.expect("message.new", timeout=20)
    message_id = sent["data"]["message"]["id"]
    valid: list[tuple[str, dict[str, Any]]] = [
        ("ping", {}),
        ("typing", {"conversation_id": conversation_id}),
        ("message.edit", {"message_id": message_id, "body": f"{CANARY_TEXT} edited"}),
        ("presence.subscribe", {"user_ids": [doctor_id]}),
        ("auth.refresh", {"token": CANARY_TOKEN}),
    ]
    for frame_type, data in valid:
        await patient.request(frame_type, data, timeout=20)
    await doctor.sync()
    await patient.send_raw(f"not json {CANARY_TEXT} {CANARY_TOKEN}")
    await patient.close()
    await doctor.close()


def test_logs_and_metrics_under_traffic(server, make_token):
    patient, doctor, conversation = pair()
    patient_token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
    doctor_token = make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number)
    DeviceFactory(user=patient)
    headers = {"Authorization": f"Bearer {patient_token}", "X-Request-ID": "req-canary-check-0001"}
    base = f"{server.base_url}/api/v1"
    # An upload whose file name is a canary.
    uploaded = requests.post(
        f"{base}/attachments",
        files={"file": (CANARY_FILE, jpeg(), "image/jpeg")},
        headers=headers,
        timeout=20,
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.headers["X-Request-ID"] == "req-canary-check-0001"
    asyncio.run(drive_sockets(server, patient_token, doctor_token, conversation.pk, doctor.pk))
    # Every REST write of the contract, canaries in every field (most are refused: the test
    # looks at what gets logged, whatever the answer).
    writes = rest_writes(conversation.pk)
    assert len(writes) >= 25
    signed = {**headers, "Stripe-Signature": f"t=1,v1={CANARY_SECRET}"}
    for method, path, body in writes:
        answer = requests.request(method, f"{server.base_url}{path}", json=body, headers=signed, timeout=20)
        assert answer.status_code < 500, (method, path, answer.status_code, answer.text)

    # /metrics: a bearer token, then the figures of this traffic (frame counts are applied
    # once a second: core.metrics.LoopTally).
    time.sleep(1.5)
    assert requests.get(f"{server.base_url}/metrics", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(f"{server.base_url}/metrics", headers=wrong, timeout=10).status_code == 401
    scraped = requests.get(
        f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert scraped.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))

    assert value("healthchat_frames_in_total", type="message.send") >= 1
    assert value("healthchat_frame_seconds_count", type="message.send") >= 1
    assert value("healthchat_frames_out_total", type="message.new") >= 1
    assert value("healthchat_delivery_seconds_count") >= 1
    assert value("healthchat_socket_connects_total") >= 2
    assert value("healthchat_socket_disconnects_total") >= 1
    assert value("healthchat_errors_total") >= 5
    assert value("healthchat_batch_size_count") >= 1
    assert value("healthchat_batch_seconds_count") >= 1
    assert value("healthchat_batch_seconds_count", batcher="loop_writer") >= 1  # the send's writer
    assert value("healthchat_layer_publishes_total", result="ok") >= 1
    assert value("healthchat_sync_requests_total") >= 1
    assert value("healthchat_http_requests_total", route="api/v1/attachments", status="201") == 1
    assert value("healthchat_http_request_seconds_count", route="api/v1/me") >= 1
    assert value("healthchat_payment_webhooks_total", outcome="refused") >= 1
    assert not any(CANARY_TEXT in line or CANARY_PHONE in line for line in scraped.text.splitlines())
    violations = label_violations(scraped.text)
    assert violations == [], sorted(set(violations))[:20]

    # Logs: JSON, one object per line, with context; no canary anywhere.
    time.sleep(0.5)
    server.stop()
    lines = [line for line in server.log_path.read_text(errors="replace").splitlines() if line.strip()]
    records = []
    not_json = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            not_json.append(line)
    assert not_json == [], not_json[:10]
    assert all(set(record) >= LOG_FIELDS for record in records), [r for r in records if LOG_FIELDS - set(r)][
        :3
    ]
    requests_logged = [r for r in records if r["event"] == "request"]
    assert any(
        r.get("route") == "api/v1/attachments"
        and r.get("status") == 201
        and r.get("request_id") == "req-canary-check-0001"
        and len(r.get("user", "")) == 16
        and "duration_ms" in r
        for r in requests_logged
    ), requests_logged[:5]
    assert any("conn_id" in r for r in records), "no log line carries a connection id"
    leaks = [line for line in lines for canary in CANARIES if canary.lower() in line.lower()]
    assert leaks == [], "\n".join(leaks[:10])


def json_records(lines: list[str]) -> list[dict[str, Any]]:
    not_json = [line for line in lines if not line.startswith("{")]
    assert not_json == [], not_json[:10]
    return [json.loads(line) for line in lines]


def emulator_tooling() -> Any:
    """``scripts/firebase_emulator.py`` (a script directory, loaded by name as
    accounts/tests/test_emulator.py does: mypy also sees it as a top-level script)."""
    return importlib.import_module("scripts.firebase_emulator")


@pytest.fixture(scope="module")
def firebase_emulator(tmp_path_factory):
    """The Firebase Auth emulator (npm firebase-tools, offline) for this module's servers."""
    handle = emulator_tooling().start_auth_emulator(
        0,
        PROJECT_ID,
        workdir=tmp_path_factory.mktemp("firebase-emulator"),
        timeout=180,  # Node's start-up on a loaded machine
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.emulator
def test_account_deletion_through_the_firebase_emulator_logs_no_canary(
    live_server_factory, firebase_emulator, tmp_path
):
    """DELETE /me for real: the server deletes the Firebase user in the emulator; no canary (the
    phone number, the display name) nor the ID token is in any line it logged."""
    tooling = emulator_tooling()
    server = live_server_factory(
        {
            "MEDIA_ROOT": str(tmp_path / "media"),
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "json",
            "FIREBASE_AUTH_EMULATOR_HOST": firebase_emulator.host,
        },
        access_log=True,
    )
    id_token = tooling.phone_sign_in(firebase_emulator.host, CANARY_PHONE, PROJECT_ID)
    headers = {"Authorization": f"Bearer {id_token}", "X-Request-ID": "req-canary-delete-0001"}
    registered = requests.post(
        f"{server.base_url}/api/v1/auth/register",
        json={"role": "patient", "display_name": CANARY_TEXT},
        headers=headers,
        timeout=20,
    )
    assert registered.status_code == 201, registered.text
    uid = json.loads(base64.urlsafe_b64decode(id_token.split(".")[1] + "=="))["user_id"]

    def firebase_knows_the_user() -> bool:
        looked_up = requests.post(
            f"{firebase_emulator.base_url}/identitytoolkit.googleapis.com/v1/projects/{PROJECT_ID}/accounts:lookup",
            json={"localId": [uid]},
            headers={"Authorization": "Bearer owner"},
            timeout=10,
        )
        looked_up.raise_for_status()
        return bool(looked_up.json().get("users"))

    assert firebase_knows_the_user()
    deleted = requests.delete(f"{server.base_url}/api/v1/me", headers=headers, timeout=30)
    assert deleted.status_code == 204, deleted.text
    assert not firebase_knows_the_user()  # the real deletion went through firebase-admin
    assert requests.get(f"{server.base_url}/api/v1/me", headers=headers, timeout=10).status_code in (401, 403)

    time.sleep(0.5)
    server.stop()
    lines = [line for line in server.log_path.read_text(errors="replace").splitlines() if line.strip()]
    records = json_records(lines)
    assert any(
        r.get("event") == "request" and r.get("route") == "api/v1/me" and r.get("status") == 204
        for r in records
    ), [r for r in records if r.get("event") == "request"][-5:]
    secrets = [*CANARIES, id_token, id_token.split(".")[1], uid]
    leaks = [line for line in lines for secret in secrets if secret.lower() in line.lower()]
    assert leaks == [], "\n".join(leaks[:10])


def test_sentry_envelope_arrives_scrubbed(tmp_path):
    """sentry-sdk (Django, Celery, asyncio integrations) in a real Django process posts its
    envelopes to a local ingest; the errors arrive (a view's, a logged one, an asyncio task's)
    and no canary is in them. The Celery integration: tests/test_ops_worker_live.py."""
    with Ingest() as ingest:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "healthchat.settings.test",
            "SENTRY_DSN": f"http://publickey@127.0.0.1:{ingest.port}/1",
            "DATABASE_POOL_MAX_SIZE": "0",
        }
        run = subprocess.run(
            [sys.executable, "-m", "tests.sentry_probe"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        ingest.wait_for(3, timeout=20)
        bodies = ingest.bodies()
    events = [
        item
        for body in bodies
        for item in ingest.items(body)
        if item.get("exception") or item.get("logentry")
    ]
    types = {value["type"] for event in events for value in (event.get("exception") or {}).get("values", [])}
    assert "RuntimeError" in types, events
    # The asyncio integration: the background task's exception, reported as unhandled in a task.
    assert any(
        value["type"] == "LookupError" and value.get("mechanism", {}).get("type") == "asyncio"
        for event in events
        for value in (event.get("exception") or {}).get("values", [])
    ), events
    assert any(event.get("logentry") or event.get("message") for event in events), events
    text = "\n".join(bodies)
    leaks = [canary for canary in CANARIES if canary.lower() in text.lower()]
    assert leaks == [], (leaks, text[:3000])
