"""Groups on real server processes: removal takes effect at once everywhere; reconnect rejoins."""

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async

from accounts.tests.factories import DoctorFactory, PatientFactory
from groups import services as group_services
from messaging import services
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def servers(live_server_factory):
    return live_server_factory(), live_server_factory()


def token_for(make_token, user):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number)


def team():
    owner, colleague, patient = DoctorFactory(), DoctorFactory(), PatientFactory()
    services.conversation_open_direct(user=patient, peer_id=owner.pk)
    group = group_services.group_create(creator=owner, name="Team", member_ids=[colleague.pk, patient.pk])
    return owner, colleague, patient, group


def test_removed_member_receives_nothing_after_removal_on_any_process(servers, make_token):
    s1, s2 = servers
    owner, colleague, patient, group = team()

    async def scenario():
        o = await WsClient.connect(s1.ws_url, token_for(make_token, owner))
        c = await WsClient.connect(s2.ws_url, token_for(make_token, colleague))
        p_phone = await WsClient.connect(s1.ws_url, token_for(make_token, patient))
        p_tablet = await WsClient.connect(s2.ws_url, token_for(make_token, patient))
        _, cursor, _ = await p_tablet.sync()
        await o.send_message(group.pk, "before removal")
        for device in (p_phone, p_tablet, c):
            assert (await device.expect("message.new"))["data"]["message"]["body"] == "before removal"
        await sync_to_async(group_services.member_remove)(actor=owner, group_id=group.pk, user_id=patient.pk)
        for device in (p_phone, p_tablet):
            removed = await device.expect("member.removed")
            assert removed["data"]["user_id"] == patient.pk
            assert removed["data"]["message"]["system"]["event"] == "member.removed"
        await o.send_message(group.pk, "after removal")
        await c.send_message(group.pk, "after removal too")
        assert await c.expect("message.new", lambda f: f["data"]["message"]["body"] == "after removal")
        await asyncio.sleep(0.5)  # anything misrouted would have arrived by now
        for device in (p_phone, p_tablet):
            while True:
                try:
                    frame = await device.recv(timeout=0.3)
                except TimeoutError:
                    break
                assert "after removal" not in str(frame), frame
            assert not [f for f in device.inbox if "after removal" in str(f)]
        frames, _, _ = await p_tablet.sync(cursor)
        bodies = [f["data"]["message"]["body"] for f in frames if f["type"] == "message.new"]
        assert bodies == ["before removal"]
        assert [f["type"] for f in frames][-1] == "member.removed"
        refused = await p_phone.send_message(group.pk, "can I still post?")
        assert refused["error"]["code"] == "conversation_not_found"
        for s in (o, c, p_phone, p_tablet):
            await s.close()

    asyncio.run(scenario())


def test_reconnect_rejoins_every_group_and_sync_brings_membership_changes(servers, make_token):
    s1, s2 = servers
    owner, colleague, patient, group = team()

    async def scenario():
        p = await WsClient.connect(s1.ws_url, token_for(make_token, patient))
        _, cursor, _ = await p.sync()
        await p.close()
        # While the patient is offline: a new group, messages in both groups.
        second = await sync_to_async(group_services.group_create)(
            creator=owner, name="Second", member_ids=[patient.pk]
        )
        o = await WsClient.connect(s2.ws_url, token_for(make_token, owner))
        await o.send_message(group.pk, "in team")
        await o.send_message(second.pk, "in second")
        p = await WsClient.connect(s1.ws_url, token_for(make_token, patient))
        frames, _, _ = await p.sync(cursor)
        seen = [
            (f["type"], f["data"]["message"]["conversation_id"], f["data"]["message"]["body"]) for f in frames
        ]
        assert ("message.new", group.pk, "in team") in seen
        assert ("member.added", second.pk, "") in seen
        assert ("message.new", second.pk, "in second") in seen
        # Live delivery in both groups right after reconnecting, nothing to re-subscribe.
        await o.send_message(second.pk, "live in second")
        await c_send(colleague, group.pk, "live in team")
        bodies = {(await p.expect("message.new"))["data"]["message"]["body"] for _ in range(2)}
        assert bodies == {"live in second", "live in team"}
        await o.close()
        await p.close()

    async def c_send(user, group_id, body):
        await sync_to_async(services.message_send)(
            sender=user, conversation_id=group_id, client_id=uuid.uuid4(), body=body
        )

    asyncio.run(scenario())


def test_added_member_receives_live_without_reconnecting(servers, make_token):
    s1, _s2 = servers
    owner, _colleague, _patient, group = team()
    newcomer = DoctorFactory()

    async def scenario():
        n = await WsClient.connect(s1.ws_url, token_for(make_token, newcomer))
        await sync_to_async(group_services.member_add)(actor=owner, group_id=group.pk, user_id=newcomer.pk)
        added = await n.expect("member.added")
        assert added["data"]["user_id"] == newcomer.pk
        await sync_to_async(services.message_send)(
            sender=owner, conversation_id=group.pk, client_id=uuid.uuid4(), body="welcome"
        )
        assert (await n.expect("message.new"))["data"]["message"]["body"] == "welcome"
        await n.close()

    asyncio.run(scenario())
