"""The socket on a real uvicorn process, real Redis channel layer, real PostgreSQL."""

import asyncio
import json
import uuid

import pytest

from accounts.tests.factories import DeviceFactory, PatientFactory
from messaging.models import Message
from messaging.tests.factories import pair
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

LIVE_ENV = {"HEALTHCHAT_WS_AUTH_TIMEOUT": "1.5", "HEALTHCHAT_WS_RATE": "200", "HEALTHCHAT_WS_BURST": "100"}


@pytest.fixture(scope="module")
def server(live_server_factory):
    return live_server_factory(LIVE_ENV)


def token_for(make_token, user, **kw):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number, **kw)


def test_message_round_trip_with_receipts(server, make_token):
    patient, doctor, conversation = pair()

    async def scenario():
        a = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        b = await WsClient.connect(server.ws_url, token_for(make_token, doctor))
        ack = await a.send_message(conversation.pk, "hello doctor")
        assert ack["type"] == "ack"
        message = ack["data"]["message"]
        assert message["seq"] == 1
        assert message["sender_id"] == patient.pk
        got = await b.expect("message.new")
        assert got["data"]["message"]["id"] == message["id"]
        assert got["data"]["message"]["body"] == "hello doctor"
        delivered = await b.request("message.delivered", {"conversation_id": conversation.pk, "seq": 1})
        assert delivered["type"] == "ack"
        receipt = await a.expect("receipt", lambda f: "delivered_seq" in f["data"])
        assert receipt["data"] == {
            "conversation_id": conversation.pk,
            "user_id": doctor.pk,
            "delivered_seq": 1,
        }
        await b.request("message.read", {"conversation_id": conversation.pk, "seq": 1})
        receipt = await a.expect("receipt", lambda f: "read_seq" in f["data"])
        assert receipt["data"]["read_seq"] == 1
        reply = await b.send_message(conversation.pk, "hello patient")
        assert reply["data"]["message"]["seq"] == 2
        assert (await a.expect("message.new"))["data"]["message"]["body"] == "hello patient"
        await a.close()
        await b.close()

    asyncio.run(scenario())
    assert list(
        Message.objects.filter(conversation=conversation).values_list("seq", flat=True).order_by("seq")
    ) == [1, 2]


def test_sender_other_devices_get_the_message(server, make_token):
    patient, _doctor, conversation = pair()

    async def scenario():
        phone = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        tablet = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        ack = await phone.send_message(conversation.pk, "from my phone")
        got = await tablet.expect("message.new")
        assert got["data"]["message"]["id"] == ack["data"]["message"]["id"]
        await phone.close()
        await tablet.close()

    asyncio.run(scenario())


def test_auth_frame_and_ping(server, make_token):
    patient = PatientFactory()
    device = DeviceFactory(user=patient)

    async def scenario():
        c = await WsClient.connect(server.ws_url)
        early = await c.request("ping")
        assert early["type"] == "error"
        assert early["error"]["code"] == "not_authenticated"
        ref = await c.send("auth", {"token": token_for(make_token, patient), "device_id": device.pk})
        ready = await c.expect("ready")
        assert ready["ref"] == ref
        assert ready["data"] == {
            "user_id": patient.pk,
            "device_id": device.pk,
            "reconnect": {"min_ms": 500, "max_ms": 5000},
        }
        pong = await c.request("ping")
        assert pong["type"] == "pong"
        again = await c.request("auth", {"token": token_for(make_token, patient)})
        assert again["error"]["code"] == "already_authenticated"
        await c.close()

    asyncio.run(scenario())


def test_auth_timeout_closes_4401(server):
    async def scenario():
        c = await WsClient.connect(server.ws_url)
        frame = await c.expect("error", timeout=5)
        assert frame["error"]["code"] == "auth_timeout"
        await c.ws.wait_closed()
        assert c.close_code == 4401

    asyncio.run(scenario())


def test_someone_elses_device_is_refused(server, make_token):
    patient = PatientFactory()
    other_device = DeviceFactory()

    async def scenario():
        c = await WsClient.connect(
            server.ws_url, token_for(make_token, patient), device_id=other_device.pk, wait_ready=False
        )
        frame = await c.expect("error")
        assert frame["error"]["code"] == "device_not_found"
        await c.ws.wait_closed()
        assert c.close_code == 4403

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("expired", "token_expired"),
        ("wrong_audience", "invalid_token"),
        ("wrong_issuer", "invalid_token"),
        ("unknown_kid", "invalid_token"),
        ("bad_signature", "invalid_token"),
        ("alg_none", "invalid_token"),
    ],
)
def test_bad_tokens_are_refused_on_the_socket(server, make_token, token_minter, kind, code):
    import base64

    patient = PatientFactory()
    uid, phone = patient.firebase_uid, patient.phone_number
    if kind == "expired":
        token = make_token(uid=uid, phone_number=phone, lifetime=-10)
    elif kind == "wrong_audience":
        token = make_token(uid=uid, phone_number=phone, aud="someone-else")
    elif kind == "wrong_issuer":
        token = make_token(uid=uid, phone_number=phone, iss="https://securetoken.google.com/someone-else")
    elif kind == "unknown_kid":
        token = make_token(uid=uid, phone_number=phone, kid="no-such-key")
    elif kind == "bad_signature":
        token = make_token(uid=uid, phone_number=phone, key=token_minter.other_key)
    else:

        def b64(d):
            return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

        token = (
            b64({"alg": "none", "typ": "JWT", "kid": "healthchat-test-key"})
            + "."
            + b64(token_minter.claims(uid, phone))
            + "."
        )

    async def scenario():
        c = await WsClient.connect(server.ws_url, token, wait_ready=False)
        frame = await c.expect("error")
        assert frame["error"]["code"] == code
        await c.ws.wait_closed()
        assert c.close_code == 4401

    asyncio.run(scenario())


def test_bad_input_gets_error_frames_and_the_socket_stays_open(server, make_token, settings):
    patient, _doctor, conversation = pair()
    _stranger, _d, stranger_conversation = pair()

    async def scenario():
        c = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        cases = [
            ("not json", "invalid_json"),
            ("[1, 2]", "invalid_frame"),
            (json.dumps({"type": "launch.rockets", "ref": "x"}), "unknown_type"),
            (
                json.dumps(
                    {"type": "message.send", "ref": "x", "data": {"conversation_id": conversation.pk}}
                ),
                "invalid_frame",
            ),
            (json.dumps({"type": "ping", "ref": "x", "data": {}, "extra": 1}), "invalid_frame"),
            (
                json.dumps(
                    {
                        "type": "message.send",
                        "ref": "x",
                        "data": {"conversation_id": "abc", "client_id": "nope", "body": "x"},
                    }
                ),
                "invalid_frame",
            ),
            (
                json.dumps(
                    {
                        "type": "message.send",
                        "ref": "x",
                        "data": {
                            "conversation_id": conversation.pk,
                            "client_id": str(uuid.uuid4()),
                            "body": "x",
                            "sneaky": True,
                        },
                    }
                ),
                "invalid_frame",
            ),
            (
                json.dumps(
                    {
                        "type": "message.send",
                        "ref": "x",
                        "data": {
                            "conversation_id": conversation.pk,
                            "client_id": str(uuid.uuid4()),
                            "body": "   ",
                        },
                    }
                ),
                "empty_message",
            ),
            (
                json.dumps(
                    {
                        "type": "message.send",
                        "ref": "x",
                        "data": {
                            "conversation_id": conversation.pk,
                            "client_id": str(uuid.uuid4()),
                            "body": "x" * 9000,
                        },
                    }
                ),
                "message_too_long",
            ),
            (
                json.dumps(
                    {
                        "type": "message.send",
                        "ref": "x",
                        "data": {
                            "conversation_id": stranger_conversation.pk,
                            "client_id": str(uuid.uuid4()),
                            "body": "hi",
                        },
                    }
                ),
                "conversation_not_found",
            ),
            (
                json.dumps(
                    {
                        "type": "message.read",
                        "ref": "x",
                        "data": {"conversation_id": conversation.pk, "seq": 99},
                    }
                ),
                "seq_out_of_range",
            ),
            (json.dumps({"type": "sync", "ref": "x", "data": {"cursor": "garbage!"}}), "invalid_cursor"),
            ("x" * 70000, "frame_too_large"),
        ]
        for payload, code in cases:
            await c.send_raw(payload)
            frame = await c.expect("error")
            assert frame["error"]["code"] == code, (payload[:80], frame)
        await c.send_raw(b"\x00\x01binary")
        assert (await c.expect("error"))["error"]["code"] == "binary_not_supported"
        assert (await c.request("ping"))["type"] == "pong"
        await c.close()

    asyncio.run(scenario())
    assert not Message.objects.exists()


def test_editing_someone_elses_message_is_refused(server, make_token):
    patient, doctor, conversation = pair()

    async def scenario():
        a = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        b = await WsClient.connect(server.ws_url, token_for(make_token, doctor))
        ack = await a.send_message(conversation.pk, "original")
        message_id = ack["data"]["message"]["id"]
        refused = await b.request("message.edit", {"message_id": message_id, "body": "hacked"})
        assert refused["error"]["code"] == "not_message_sender"
        edited = await a.request("message.edit", {"message_id": message_id, "body": "edited"})
        assert edited["data"]["message"]["body"] == "edited"
        update = await b.expect("message.updated")
        assert update["data"]["message"]["body"] == "edited"
        assert update["data"]["message"]["edited_at"]
        deleted = await a.request("message.delete", {"message_id": message_id})
        assert deleted["data"]["message"]["deleted"] is True
        tomb = await b.expect("message.updated", lambda f: f["data"]["message"]["deleted"])
        assert tomb["data"]["message"]["body"] == ""
        assert tomb["data"]["message"]["seq"] == 1
        await a.close()
        await b.close()

    asyncio.run(scenario())
    message = Message.objects.get()
    assert message.body == ""
    assert message.deleted_at is not None


def test_lost_ack_resend_returns_the_original(server, make_token):
    patient, _doctor, conversation = pair()
    client_id = str(uuid.uuid4())

    async def scenario():
        a = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        first = await a.send_message(conversation.pk, "once", client_id=client_id)
        await a.close()  # the ack "was lost": the client reconnects and sends again
        a = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        second = await a.send_message(conversation.pk, "once", client_id=client_id)
        assert second["data"]["message"]["id"] == first["data"]["message"]["id"]
        assert second["data"]["message"]["seq"] == first["data"]["message"]["seq"]
        assert second["data"]["duplicate"] is True
        await a.close()

    asyncio.run(scenario())
    assert Message.objects.filter(conversation=conversation).count() == 1


def test_concurrent_duplicates_over_two_sockets_make_one_row(server, make_token):
    patient, _doctor, conversation = pair()
    client_id = str(uuid.uuid4())

    async def scenario():
        sockets = [await WsClient.connect(server.ws_url, token_for(make_token, patient)) for _ in range(2)]
        refs = []
        for i in range(5):
            s = sockets[i % 2]
            refs.append(
                (
                    s,
                    await s.send(
                        "message.send",
                        {"conversation_id": conversation.pk, "client_id": client_id, "body": "dup"},
                    ),
                )
            )
        replies = [await s.reply(ref) for s, ref in refs]
        ids = {r["data"]["message"]["id"] for r in replies}
        assert len(ids) == 1, replies
        assert {r["data"]["message"]["seq"] for r in replies} == {1}
        for s in sockets:
            await s.close()

    asyncio.run(scenario())
    assert Message.objects.filter(conversation=conversation).count() == 1


def test_offline_recipient_gets_200_messages_through_sync(server, make_token):
    patient, doctor, conversation = pair()

    async def scenario():
        b = await WsClient.connect(server.ws_url, token_for(make_token, doctor))
        _, cursor, _ = await b.sync()
        await b.close()
        a = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        for i in range(200):
            client_id = str(uuid.uuid4())
            ack = await a.send_message(conversation.pk, f"m{i}", client_id=client_id)
            while ack["type"] == "error" and ack["error"]["code"] == "rate_limited":
                # 200 sends outrun the socket's frame rate (HEALTHCHAT_WS_RATE): the app waits
                # and sends the same client_id again, as a client does on rate_limited
                await asyncio.sleep(0.2)
                ack = await a.send_message(conversation.pk, f"m{i}", client_id=client_id)
            assert ack["type"] == "ack", ack
        await a.close()
        b = await WsClient.connect(server.ws_url, token_for(make_token, doctor))
        frames, cursor2, more = await b.sync(cursor)
        assert not more
        bodies = [f["data"]["message"]["body"] for f in frames if f["type"] == "message.new"]
        seqs = [f["data"]["message"]["seq"] for f in frames if f["type"] == "message.new"]
        assert bodies == [f"m{i}" for i in range(200)]
        assert seqs == list(range(1, 201))
        again, _, _ = await b.sync(cursor2)
        assert again == []
        await b.close()

    asyncio.run(scenario())


def test_flood_gets_rate_limited_then_4429(server, make_token):
    patient = PatientFactory()

    async def scenario():
        c = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        for _ in range(600):
            try:
                await c.send("ping")
            except Exception:
                break
        codes = []
        try:
            while True:
                frame = await c.recv(timeout=3)
                if frame["type"] == "error":
                    codes.append(frame["error"]["code"])
        except Exception:
            pass
        await c.ws.wait_closed()
        assert "rate_limited" in codes
        assert c.close_code == 4429

    asyncio.run(scenario())


def test_typing_reaches_the_other_member_and_is_not_stored(server, make_token):
    patient, doctor, conversation = pair()

    async def scenario():
        a = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        b = await WsClient.connect(server.ws_url, token_for(make_token, doctor))
        await a.send("typing", {"conversation_id": conversation.pk, "active": True})
        frame = await b.expect("typing")
        assert frame["data"] == {"conversation_id": conversation.pk, "user_id": patient.pk, "active": True}
        await a.close()
        await b.close()

    asyncio.run(scenario())
    assert not Message.objects.exists()


def test_presence_subscribe_and_changes(server, make_token):
    patient, doctor, _conversation = pair()
    stranger = PatientFactory()

    async def scenario():
        a = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        ack = await a.request("presence.subscribe", {"user_ids": [doctor.pk, stranger.pk]})
        assert ack["data"] == {"subscribed": [doctor.pk], "refused": [stranger.pk]}
        now = await a.expect("presence")
        assert now["data"]["user_id"] == doctor.pk
        assert now["data"]["online"] is False
        b = await WsClient.connect(server.ws_url, token_for(make_token, doctor))
        online = await a.expect("presence", lambda f: f["data"]["online"])
        assert online["data"]["user_id"] == doctor.pk
        await b.close()
        offline = await a.expect("presence", lambda f: not f["data"]["online"])
        assert offline["data"]["last_seen"]
        await a.close()

    asyncio.run(scenario())


def test_deleted_user_socket_is_closed_at_once(server, make_token, firebase_admin_api):
    from asgiref.sync import sync_to_async

    from accounts import services as account_services

    patient = PatientFactory()
    token = token_for(make_token, patient)

    async def scenario():
        c = await WsClient.connect(server.ws_url, token)
        await sync_to_async(account_services.user_delete)(user=patient, actor=patient)
        await asyncio.wait_for(c.ws.wait_closed(), 3)
        assert c.close_code == 4403

    asyncio.run(scenario())
    assert any(url.endswith("accounts:delete") for url, _ in firebase_admin_api)


def test_sockets_reconnecting_together_each_sync_exactly_their_own(server, make_token):
    """A reconnect storm in small: 40 sockets sign in and ``sync`` at the same moment (their
    sign-ins, syncs, presence and subscriptions are batched in the server). Each gets every
    message of its own conversations it missed, in order, once, and nothing of anyone else's;
    each sign-in and sync is one audit entry; a watcher sees its contacts come online."""
    from audit import actions
    from audit.models import AuditEntry
    from messaging import services

    pairs = [pair() for _ in range(20)]
    users = [u for patient, doctor, _c in pairs for u in (patient, doctor)]
    conversation_of = {u.pk: c.pk for patient, doctor, c in pairs for u in (patient, doctor)}
    watcher_patient, watcher_doctor, _c = pairs[0]

    async def first_sync(user):
        client = await WsClient.connect(server.ws_url, token_for(make_token, user))
        _frames, cursor, _more = await client.sync()
        await client.close()
        return cursor

    async def cursors():
        return await asyncio.gather(*(first_sync(u) for u in users))

    cursor_of = dict(zip([u.pk for u in users], asyncio.run(cursors()), strict=True))
    sent: dict[int, list[str]] = {}
    for n, (patient, doctor, conversation) in enumerate(pairs):
        bodies = [f"c{conversation.pk}-{i}" for i in range(1 + n % 3)]
        for i, body in enumerate(bodies):
            sender = patient if i % 2 == 0 else doctor
            services.message_send(
                sender=sender, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body
            )
        sent[conversation.pk] = bodies
    before = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0

    async def reconnect(user):
        client = await WsClient.connect(server.ws_url, token_for(make_token, user))
        frames, _cursor, more = await client.sync(cursor_of[user.pk])
        await client.close()
        return user, frames, more

    async def storm():
        watcher = await WsClient.connect(server.ws_url, token_for(make_token, watcher_doctor))
        await watcher.request("presence.subscribe", {"user_ids": [watcher_patient.pk]})
        await watcher.expect("presence")  # the current state
        results = await asyncio.gather(*(reconnect(u) for u in users if u != watcher_doctor))
        online = await watcher.expect("presence", lambda f: f["data"]["online"], timeout=10)
        await watcher.close()
        return results, online

    results, online = asyncio.run(storm())
    assert online["data"]["user_id"] == watcher_patient.pk
    assert len(results) == len(users) - 1
    for user, frames, more in results:
        assert not more
        assert all(f["type"] == "message.new" for f in frames), frames
        messages = [f["data"]["message"] for f in frames]
        assert {m["conversation_id"] for m in messages} <= {conversation_of[user.pk]}
        assert [m["body"] for m in messages] == sent[conversation_of[user.pk]]
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    rows = list(
        AuditEntry.objects.filter(id__gt=before).values_list("action", "actor_id", "outcome", "channel")
    )
    expected_users = sorted(u.pk for u in users if u != watcher_doctor)
    for action in (actions.AUTH_SIGNIN, actions.HISTORY_SYNC):
        mine = sorted(
            actor for a, actor, outcome, channel in rows if a == action and actor != watcher_doctor.pk
        )
        assert mine == expected_users, action
        assert {(o, ch) for a, _actor, o, ch in rows if a == action} == {("ok", "socket")}
