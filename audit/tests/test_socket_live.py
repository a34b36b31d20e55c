"""The audit log on a real uvicorn socket: sign-ins, one row per sync, refusals; sends write none."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from asgiref.sync import sync_to_async

from accounts.tests.factories import DeviceFactory, PatientFactory
from audit import actions
from audit.models import AuditEntry
from messaging import services
from messaging.tests.factories import pair
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SECRET_TEXT = "the scan shows a shadow"


@pytest.fixture(scope="module")
def server(live_server_factory):
    return live_server_factory({"HEALTHCHAT_WS_RATE": "200", "HEALTHCHAT_WS_BURST": "100"})


def token_for(make_token, user, **kw):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number, **kw)


def last_id() -> int:
    return AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def rows_after(since: int, count: int, timeout: float = 5.0) -> list[AuditEntry]:
    """The rows written after ``since`` once there are ``count`` (the server writes some just
    after replying); then a short wait to be sure no more follow."""
    deadline = time.monotonic() + timeout
    while True:
        rows = list(AuditEntry.objects.filter(id__gt=since).order_by("id"))
        if len(rows) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    return list(AuditEntry.objects.filter(id__gt=since).order_by("id"))


def test_sign_in_and_one_row_per_sync_and_none_per_send(server, make_token):
    patient, doctor, conversation = pair()
    for i in range(30):
        services.message_send(
            sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=f"{SECRET_TEXT} {i}"
        )
    token = token_for(make_token, patient)
    before = last_id()

    async def scenario():
        c = await WsClient.connect(server.ws_url, token)
        signed_in = await sync_to_async(last_id)()
        frames, _cursor, more = await c.sync()
        assert len(frames) == 30
        assert more is False
        synced = await sync_to_async(last_id)()
        for _ in range(5):
            assert (await c.send_message(conversation.pk, SECRET_TEXT))["type"] == "ack"
        await c.close()
        return signed_in, synced

    signed_in, synced = asyncio.run(scenario())
    signin = rows_after(before, 1)[0]
    assert (signin.action, signin.outcome, signin.actor_id, signin.channel) == (
        actions.AUTH_SIGNIN,
        "ok",
        patient.pk,
        "socket",
    )
    assert signin.ip == "127.0.0.1"
    assert signin.user_agent.startswith("Python/")  # the websockets client's
    assert signin.id == signed_in
    sync_rows = list(AuditEntry.objects.filter(id__gt=signed_in, id__lte=synced))
    assert [(r.action, r.actor_id, r.outcome) for r in sync_rows] == [
        (actions.HISTORY_SYNC, patient.pk, "ok")
    ]
    # Written after the handshake: the headers it reads outlive the scope's trimming (issue 26).
    assert (sync_rows[0].ip, sync_rows[0].user_agent) == (signin.ip, signin.user_agent)
    assert list(AuditEntry.objects.filter(id__gt=synced)) == []  # five sends: no rows
    for row in AuditEntry.objects.filter(id__gt=before):
        assert SECRET_TEXT not in str(row.__dict__)
        assert token not in str(row.__dict__)
        assert patient.phone_number not in str(row.__dict__)


def test_socket_refusals_are_logged(server, make_token):
    patient, doctor, conversation = pair()
    _a, _b, elsewhere = pair()
    message = services.message_send(
        sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=SECRET_TEXT
    ).message

    async def scenario():
        c = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        before = await sync_to_async(last_id)()
        refused = await c.send_message(elsewhere.pk, "let me in")
        assert refused["error"]["code"] == "conversation_not_found"
        edit = await c.request("message.edit", {"message_id": message.pk, "body": "changed"})
        assert edit["error"]["code"] == "not_message_sender"
        bad = await c.request("message.read", {"conversation_id": conversation.pk, "seq": 999})
        assert bad["error"]["code"] == "seq_out_of_range"  # a 400: not a refusal, not logged
        await c.close()
        return before

    before = asyncio.run(scenario())
    rows = rows_after(before, 2)
    assert [
        (r.action, r.outcome, r.actor_id, r.object_type, r.object_id, r.code, r.channel) for r in rows
    ] == [
        (
            actions.AUTHZ_DENIED,
            "denied",
            patient.pk,
            "conversation",
            str(elsewhere.pk),
            "conversation_not_found",
            "socket",
        ),
        (
            actions.AUTHZ_DENIED,
            "denied",
            patient.pk,
            "message",
            str(message.pk),
            "not_message_sender",
            "socket",
        ),
    ]


def test_failed_socket_sign_ins_are_logged(server, make_token):
    patient = PatientFactory()
    other_device = DeviceFactory()
    expired = token_for(make_token, patient, lifetime=-10)
    before = last_id()

    async def scenario():
        c = await WsClient.connect(server.ws_url, expired, wait_ready=False)
        assert (await c.expect("error"))["error"]["code"] == "token_expired"
        await c.ws.wait_closed()
        d = await WsClient.connect(
            server.ws_url, token_for(make_token, patient), device_id=other_device.pk, wait_ready=False
        )
        assert (await d.expect("error"))["error"]["code"] == "device_not_found"
        await d.ws.wait_closed()

    asyncio.run(scenario())
    rows = rows_after(before, 2)
    assert [(r.action, r.outcome, r.actor_id, r.code) for r in rows] == [
        (actions.AUTH_SIGNIN, "denied", None, "token_expired"),
        (actions.AUTH_SIGNIN, "denied", patient.pk, "device_not_found"),
    ]
    assert all(expired not in str(r.__dict__) for r in rows)
