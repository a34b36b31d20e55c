"""An exception inside the real socket consumer reaches Sentry, scrubbed (issue 21).

A real uvicorn serves ``tests/socket_fault.py``: the project's application with
``message.edit``'s service broken so that it raises the way a database error does, quoting the
new text and the author's phone number. sentry-sdk runs for real in the server (``SENTRY_DSN``)
and posts its envelopes to a local HTTP endpoint standing in for Sentry's ingest
(``tests/sentry_ingest.py``). A real WebSocket client edits a message with canary text:

- the client gets an ``error`` frame (``internal_error``, its ``ref``) and the socket stays open
  (a ``ping`` and a ``message.send`` are answered after it, and the peer gets the message);
- one event arrives for the failure, with the exception's type and the logging mechanism;
- no canary, the author's phone number or the token is in any envelope, nor in any line the
  server logged (JSON, at debug); the exception's message is there with the client's text
  replaced (``core.logs.hiding``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from messaging.tests.factories import pair
from tests.sentry_ingest import CANARIES, CANARY_FILE, CANARY_PHONE, CANARY_TEXT, Ingest
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

FAULT_APP = "tests.socket_fault:application"
EDITED_BODY = f"{CANARY_TEXT}: call me on {CANARY_PHONE}, the scan is {CANARY_FILE}"


def exception_events(ingest: Ingest) -> list[dict[str, Any]]:
    return [
        item
        for body in ingest.bodies()
        for item in ingest.items(body)
        if (item.get("exception") or {}).get("values")
    ]


def failures(ingest: Ingest) -> list[dict[str, Any]]:
    return [
        event
        for event in exception_events(ingest)
        if any(value.get("type") == "FailingRowError" for value in event["exception"]["values"])
    ]


async def edit_with_canaries(server: Any, token: str, peer_token: str, conversation_id: int) -> None:
    client = await WsClient.connect(server.ws_url, token)
    peer = await WsClient.connect(server.ws_url, peer_token)
    sent = await client.send_message(conversation_id, "before the failure")
    assert sent["type"] == "ack", sent
    message_id = sent["data"]["message"]["id"]

    ref = await client.send("message.edit", {"message_id": message_id, "body": EDITED_BODY})
    failed = await client.reply(ref, timeout=20)
    assert failed["type"] == "error", failed
    assert failed["ref"] == ref
    assert failed["error"]["code"] == "internal_error", failed
    assert not any(canary.lower() in json.dumps(failed).lower() for canary in CANARIES), failed

    # The socket is still open and serves the next frames.
    assert (await client.request("ping", {}, timeout=20))["type"] == "pong"
    after = await client.send_message(conversation_id, "after the failure")
    assert after["type"] == "ack", after
    delivered = await peer.expect(
        "message.new", lambda frame: frame["data"]["message"]["body"] == "after the failure", timeout=20
    )
    assert delivered["data"]["message"]["id"] == after["data"]["message"]["id"]
    assert client.close_code is None
    await client.close()
    await peer.close()


def test_a_socket_handler_exception_reaches_sentry_scrubbed_and_the_socket_stays_open(
    live_server_factory, make_token
):
    patient, doctor, conversation = pair()
    token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
    peer_token = make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number)
    with Ingest() as ingest:
        server = live_server_factory(
            {
                "SENTRY_DSN": f"http://publickey@127.0.0.1:{ingest.port}/1",
                "SENTRY_ENVIRONMENT": f"test-{uuid.uuid4().hex[:8]}",
                "HC_TEST_ASGI_APP": FAULT_APP,
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "DEBUG",
            },
            access_log=True,
        )
        asyncio.run(edit_with_canaries(server, token, peer_token, conversation.pk))
        deadline = time.monotonic() + 30
        while not failures(ingest) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # anything else the failure would send (a second report) arrives too
        events = failures(ingest)
        bodies = ingest.bodies()
        server.stop()

    assert len(events) == 1, exception_events(ingest)
    event = events[0]
    (value,) = [value for value in event["exception"]["values"] if value["type"] == "FailingRowError"]
    assert value.get("mechanism", {}).get("type") == "logging", value
    assert value["module"] == "tests.socket_fault", value
    # The error's message is reported, with the client's text and the phone number filtered out.
    assert value["value"].startswith("new row for message "), value
    assert "[redacted]" in value["value"], value
    assert (event.get("logentry") or {}).get("message") == "socket handler failed for %s", event
    frames = [str(frame.get("function")) for frame in value["stacktrace"]["frames"]]
    assert any(name.endswith("receive") for name in frames), frames  # ChatConsumer.receive
    assert any(name.endswith("broken_message_edit") for name in frames), frames
    assert not any("vars" in frame for frame in value["stacktrace"]["frames"])
    assert "user" not in event
    assert "extra" not in event

    secrets = [*CANARIES, token, token.split(".")[2], patient.phone_number, patient.phone_number.lstrip("+")]
    text = "\n".join(bodies)
    leaks = [secret for secret in secrets if secret.lower() in text.lower()]
    assert leaks == [], (leaks, text[:3000])

    lines = [line for line in server.log_path.read_text(errors="replace").splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    failed = [r for r in records if r.get("event") == "socket handler failed for message.edit"]
    assert len(failed) == 1, records[-10:]
    assert "FailingRowError" in failed[0]["exc_info"], failed
    assert "[redacted]" in failed[0]["exc_info"], failed
    leaks = [line for line in lines for secret in secrets if secret.lower() in line.lower()]
    assert leaks == [], "\n".join(leaks[:10])
