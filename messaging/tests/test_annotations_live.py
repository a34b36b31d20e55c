"""Reactions, pins and mentions on real server processes: two uvicorn processes sharing one Redis,
the events cross processes to every device of the members, and ``sync`` replays them to a
device that was offline."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from groups import services as group_services
from messaging import services
from messaging.models import Mention, Reaction
from messaging.tests.factories import pair
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

LIMITS = {"HEALTHCHAT_WS_RATE": "500", "HEALTHCHAT_WS_BURST": "500"}


@pytest.fixture(scope="module")
def servers(live_server_factory: Any) -> tuple[Any, Any]:
    return live_server_factory(LIMITS), live_server_factory(LIMITS)


def _token(make_token: Any, user: Any) -> str:
    token: str = make_token(uid=user.firebase_uid, phone_number=user.phone_number)
    return token


def test_reactions_and_pins_reach_every_device_on_both_processes_and_sync_replays_them(
    servers: tuple[Any, Any], make_token: Any
) -> None:
    s1, s2 = servers
    patient, doctor, conversation = pair()

    async def scenario() -> None:
        # The patient's offline tablet syncs first: its cursor is from before everything below.
        tablet = await WsClient.connect(s2.ws_url, _token(make_token, patient))
        _frames, cursor, _more = await tablet.sync()
        await tablet.close()

        doc = await WsClient.connect(s1.ws_url, _token(make_token, doctor))
        doc_laptop = await WsClient.connect(s2.ws_url, _token(make_token, doctor))
        pat = await WsClient.connect(s2.ws_url, _token(make_token, patient))
        sent = await doc.send_message(conversation.pk, "Take one at night")
        message_id = sent["data"]["message"]["id"]
        await pat.expect("message.new")

        # The patient (process two) reacts: the doctor's devices on both processes see it.
        ack = await pat.request("reaction.add", {"message_id": message_id, "emoji": "🙏"})
        assert ack["type"] == "ack", ack
        assert ack["data"]["reactions"] == [{"emoji": "🙏", "count": 1, "user_ids": [patient.pk]}]
        for device in (doc, doc_laptop):
            event = await device.expect("reaction.added")
            assert event["data"]["message_id"] == message_id
            assert event["data"]["reactions"][0]["user_ids"] == [patient.pk]
        # The same reaction again: answered, nothing new sent or stored.
        again = await pat.request("reaction.add", {"message_id": message_id, "emoji": "🙏"})
        assert again["data"]["changed"] is False
        # The doctor (process one) pins, the patient (process two) sees it; then unreacts.
        pinned = await doc.request("message.pin", {"message_id": message_id})
        assert pinned["data"]["pinned"] is True
        assert (await pat.expect("message.pinned"))["data"]["message_id"] == message_id
        assert (await doc_laptop.expect("message.pinned"))["data"]["user_id"] == doctor.pk
        removed = await pat.request("reaction.remove", {"message_id": message_id, "emoji": "🙏"})
        assert removed["data"]["reactions"] == []
        assert (await doc.expect("reaction.removed"))["data"]["reactions"] == []
        # A bad emoji: an error frame, the socket stays open.
        bad = await pat.request("reaction.add", {"message_id": message_id, "emoji": "🤡"})
        assert bad["type"] == "error"
        assert bad["error"]["code"] == "invalid_reaction"
        assert (await pat.request("ping"))["type"] == "pong"

        # The tablet comes back: sync replays the reaction and pin events in log order.
        tablet = await WsClient.connect(s1.ws_url, _token(make_token, patient))
        replayed, _cursor, _more = await tablet.sync(cursor)
        kinds = [f["type"] for f in replayed if f["type"] != "receipt"]
        assert kinds == ["message.new", "reaction.added", "message.pinned", "reaction.removed"], kinds
        events = [f["event"] for f in replayed if "event" in f]
        assert events == sorted(events)
        for client in (doc, doc_laptop, pat, tablet):
            await client.close()

    asyncio.run(scenario())
    assert not Reaction.objects.exists()


def test_a_mention_crosses_processes_and_a_group_member_without_the_role_cannot_pin(
    servers: tuple[Any, Any], make_token: Any
) -> None:
    s1, s2 = servers
    patient, doctor, _conversation = pair()
    services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    group = group_services.group_create(creator=doctor, name="Ward 4", member_ids=[patient.pk])

    async def scenario() -> None:
        doc = await WsClient.connect(s1.ws_url, _token(make_token, doctor))
        pat = await WsClient.connect(s2.ws_url, _token(make_token, patient))
        ack = await pat.request(
            "message.send",
            {
                "conversation_id": group.pk,
                "client_id": str(uuid.uuid4()),
                "body": "@Dr is this ok?",
                "mentions": [{"user_id": doctor.pk, "offset": 0, "length": 3}],
            },
        )
        assert ack["type"] == "ack", ack
        new = await doc.expect("message.new", lambda f: f["data"]["message"]["conversation_id"] == group.pk)
        assert new["data"]["message"]["mentions"] == [{"user_id": doctor.pk, "offset": 0, "length": 3}]
        outsider = await pat.request(
            "message.send",
            {
                "conversation_id": group.pk,
                "client_id": str(uuid.uuid4()),
                "body": "@x",
                "mentions": [{"user_id": 9_000_000_000, "offset": 0, "length": 2}],
            },
        )
        assert outsider["type"] == "error"
        assert outsider["error"]["code"] == "mention_not_member"
        message_id = ack["data"]["message"]["id"]
        refused = await pat.request("message.pin", {"message_id": message_id})
        assert refused["error"]["code"] == "not_group_admin"
        assert (await doc.request("message.pin", {"message_id": message_id}))["type"] == "ack"
        assert (await pat.expect("message.pinned"))["data"]["message_id"] == message_id
        for client in (doc, pat):
            await client.close()

    asyncio.run(scenario())
    assert list(Mention.objects.values_list("user_id", flat=True)) == [doctor.pk]
