"""Presence, typing and receipts end with the relationship that allowed them (trust finding 9):
removal, leaving and blocks reach the subscriptions of every socket on every server process;
blocks are checked for typing and receipts. Real uvicorn processes, real WebSocket clients; the
changes are made over REST on one process while the watchers sit on the other."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import requests

from accounts.tests.factories import DoctorFactory, PatientFactory
from groups import services as group_services
from messaging import services
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ENV = {"HEALTHCHAT_PRESENCE_TTL": "2", "HEALTHCHAT_PRESENCE_HEARTBEAT": "0.5"}
QUIET = 1.0  # seconds in which a frame that should not come would have come


@pytest.fixture(scope="module")
def servers(live_server_factory):
    return live_server_factory(ENV), live_server_factory(ENV)


def rest(server: Any, token: str, method: str, path: str, payload: dict[str, Any] | None = None) -> int:
    response = requests.request(
        method,
        f"{server.base_url}/api/v1/{path}",
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code < 300, response.text
    return response.status_code


async def nothing_of(client: WsClient, type_: str, user_id: int) -> None:
    """No ``type_`` frame about ``user_id`` arrives within ``QUIET`` seconds."""
    try:
        frame = await client.expect(type_, lambda f: f["data"]["user_id"] == user_id, timeout=QUIET)
    except TimeoutError:
        return
    pytest.fail(f"unexpected {frame}")


def test_removal_ends_presence_subscriptions_both_ways_on_every_process(servers, make_token):
    s1, s2 = servers
    owner, colleague, patient = DoctorFactory(), DoctorFactory(), PatientFactory()
    services.conversation_open_direct(user=patient, peer_id=owner.pk)
    group = group_services.group_create(creator=owner, name="Team", member_ids=[colleague.pk, patient.pk])
    token = {
        u.pk: make_token(uid=u.firebase_uid, phone_number=u.phone_number) for u in (owner, colleague, patient)
    }

    async def scenario() -> None:
        # The colleague (only the group in common with the patient) watches from both processes.
        watchers = [await WsClient.connect(s.ws_url, token[colleague.pk]) for s in (s2, s1)]
        for w in watchers:
            ack = await w.request("presence.subscribe", {"user_ids": [patient.pk]})
            assert ack["data"]["subscribed"] == [patient.pk]
            await w.expect("presence")
        p = await WsClient.connect(s1.ws_url, token[patient.pk])
        ack = await p.request("presence.subscribe", {"user_ids": [colleague.pk]})
        assert ack["data"]["subscribed"] == [colleague.pk]
        await p.expect("presence")
        for w in watchers:  # the subscription works while they share the group
            assert (await w.expect("presence", lambda f: f["data"]["user_id"] == patient.pk))["data"][
                "online"
            ]
        await p.close()
        for w in watchers:
            await w.expect(
                "presence", lambda f: f["data"]["user_id"] == patient.pk and not f["data"]["online"]
            )

        await asyncio.to_thread(
            rest, s1, token[owner.pk], "DELETE", f"groups/{group.pk}/members/{patient.pk}"
        )
        await asyncio.sleep(0.3)
        p = await WsClient.connect(s2.ws_url, token[patient.pk])
        for w in watchers:
            await nothing_of(w, "presence", patient.pk)
        again = await watchers[0].request("presence.subscribe", {"user_ids": [patient.pk]})
        assert again["data"] == {"subscribed": [], "refused": [patient.pk]}
        await p.close()
        for w in watchers:
            await w.close()

    asyncio.run(scenario())


def test_leaving_ends_the_leavers_subscriptions(servers, make_token):
    s1, s2 = servers
    owner, colleague, patient = DoctorFactory(), DoctorFactory(), PatientFactory()
    services.conversation_open_direct(user=patient, peer_id=owner.pk)
    group = group_services.group_create(creator=owner, name="Team", member_ids=[colleague.pk, patient.pk])
    token = {u.pk: make_token(uid=u.firebase_uid, phone_number=u.phone_number) for u in (colleague, patient)}

    async def scenario() -> None:
        p = await WsClient.connect(s2.ws_url, token[patient.pk])
        ack = await p.request("presence.subscribe", {"user_ids": [colleague.pk]})
        assert ack["data"]["subscribed"] == [colleague.pk]
        await p.expect("presence")
        await asyncio.to_thread(rest, s1, token[patient.pk], "POST", f"groups/{group.pk}/leave")
        await asyncio.sleep(0.3)
        c = await WsClient.connect(s1.ws_url, token[colleague.pk])
        await nothing_of(p, "presence", colleague.pk)
        await c.close()
        await p.close()

    asyncio.run(scenario())


def blocked_team(make_token):
    """A doctor and a patient (direct conversation) who also share a group with a colleague."""
    doctor, patient, colleague = DoctorFactory(), PatientFactory(), DoctorFactory()
    services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    group = group_services.group_create(creator=doctor, name="Team", member_ids=[colleague.pk, patient.pk])
    message = services.message_send(
        sender=doctor, conversation_id=group.pk, client_id=uuid.uuid4(), body="hi"
    )
    users = (doctor, patient, colleague)
    token = {u.pk: make_token(uid=u.firebase_uid, phone_number=u.phone_number) for u in users}
    return doctor, patient, colleague, group, message.message.seq, token


def test_a_block_ends_presence_subscriptions_both_ways(servers, make_token):
    s1, s2 = servers
    doctor, patient, _colleague, _group, _seq, token = blocked_team(make_token)

    async def scenario() -> None:
        d = await WsClient.connect(s2.ws_url, token[doctor.pk])
        ack = await d.request("presence.subscribe", {"user_ids": [patient.pk]})
        assert ack["data"]["subscribed"] == [patient.pk]
        await d.expect("presence")
        p = await WsClient.connect(s1.ws_url, token[patient.pk])
        assert (await d.expect("presence", lambda f: f["data"]["user_id"] == patient.pk))["data"]["online"]
        ack = await p.request("presence.subscribe", {"user_ids": [doctor.pk]})
        assert ack["data"]["subscribed"] == [doctor.pk]
        await p.expect("presence")

        await asyncio.to_thread(rest, s1, token[doctor.pk], "POST", "blocks", {"user_id": patient.pk})
        await asyncio.sleep(0.3)
        # The blocker no longer hears of the blocked user, nor the other way round.
        await p.close()
        await nothing_of(d, "presence", patient.pk)
        refused = await d.request("presence.subscribe", {"user_ids": [patient.pk]})
        assert refused["data"]["refused"] == [patient.pk]
        p = await WsClient.connect(s1.ws_url, token[patient.pk])
        refused = await p.request("presence.subscribe", {"user_ids": [doctor.pk]})
        assert refused["data"]["refused"] == [doctor.pk]
        await d.close()
        await nothing_of(p, "presence", doctor.pk)
        await p.close()

    asyncio.run(scenario())


def test_a_block_stops_typing_and_receipts_between_the_two(servers, make_token):
    s1, s2 = servers
    doctor, patient, colleague, group, seq, token = blocked_team(make_token)

    async def scenario() -> None:
        d = await WsClient.connect(s2.ws_url, token[doctor.pk])
        d_tablet = await WsClient.connect(s1.ws_url, token[doctor.pk])
        _, cursor, _ = await d.sync()
        p = await WsClient.connect(s1.ws_url, token[patient.pk])
        c = await WsClient.connect(s2.ws_url, token[colleague.pk])
        await asyncio.to_thread(rest, s2, token[doctor.pk], "POST", "blocks", {"user_id": patient.pk})
        # In the group they still share the colleague gets them, the blocker does not (live, on
        # either process, nor through sync).
        await p.send("typing", {"conversation_id": group.pk, "active": True})
        assert (await c.expect("typing"))["data"]["user_id"] == patient.pk
        await p.request("message.read", {"conversation_id": group.pk, "seq": seq})
        receipt = await c.expect("receipt", lambda f: f["data"]["user_id"] == patient.pk)
        assert receipt["data"]["read_seq"] == seq
        for device in (d, d_tablet):
            await nothing_of(device, "typing", patient.pk)
            await nothing_of(device, "receipt", patient.pk)
        frames, _, _ = await d.sync(cursor)
        assert [f for f in frames if f["type"] == "receipt" and f["data"]["user_id"] == patient.pk] == []
        # Nor does the blocker's typing reach the blocked user.
        await d.send("typing", {"conversation_id": group.pk, "active": True})
        assert (await c.expect("typing"))["data"]["user_id"] == doctor.pk
        await nothing_of(p, "typing", doctor.pk)
        for s in (d, d_tablet, p, c):
            await s.close()

    asyncio.run(scenario())
