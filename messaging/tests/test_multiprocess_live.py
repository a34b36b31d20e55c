"""Two server processes sharing one Redis: every event reaches every device, wherever it is."""

import asyncio
import time

import pytest

from messaging.tests.factories import pair
from tests.faults import Ledger, Peer, check_exactly_once
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ENV = {"HEALTHCHAT_PRESENCE_TTL": "2", "HEALTHCHAT_PRESENCE_HEARTBEAT": "0.5"}
KILL_PAIRS = 100  # 200 sockets on the process that is killed
KILL_PER_USER = 6


@pytest.fixture(scope="module")
def servers(live_server_factory):
    return live_server_factory(ENV), live_server_factory(ENV)


def token_for(make_token, user):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number)


def test_two_users_on_two_processes_exchange_both_ways_with_receipts(servers, make_token):
    s1, s2 = servers
    patient, doctor, conversation = pair()

    async def scenario():
        a = await WsClient.connect(s1.ws_url, token_for(make_token, patient))
        b = await WsClient.connect(s2.ws_url, token_for(make_token, doctor))
        b_tablet = await WsClient.connect(s1.ws_url, token_for(make_token, doctor))
        ack = await a.send_message(conversation.pk, "from process one")
        assert ack["type"] == "ack"
        for device in (b, b_tablet):
            got = await device.expect("message.new")
            assert got["data"]["message"]["body"] == "from process one"
        await b.request("message.read", {"conversation_id": conversation.pk, "seq": 1})
        receipt = await a.expect(
            "receipt", lambda f: f["data"]["user_id"] == doctor.pk and "read_seq" in f["data"]
        )
        assert receipt["data"]["read_seq"] == 1
        # The doctor's other device (other process) learns it was read too.
        await b_tablet.expect("receipt", lambda f: f["data"]["user_id"] == doctor.pk)
        ack2 = await b.send_message(conversation.pk, "from process two")
        assert ack2["data"]["message"]["seq"] == 2
        assert (await a.expect("message.new"))["data"]["message"]["body"] == "from process two"
        assert (await b_tablet.expect("message.new"))["data"]["message"]["seq"] == 2
        await a.request("message.delivered", {"conversation_id": conversation.pk, "seq": 2})
        receipt = await b.expect("receipt", lambda f: f["data"]["user_id"] == patient.pk)
        assert receipt["data"]["delivered_seq"] == 2
        edit = await a.request("message.edit", {"message_id": ack["data"]["message"]["id"], "body": "edited"})
        assert edit["type"] == "ack"
        assert (await b.expect("message.updated"))["data"]["message"]["body"] == "edited"
        for c in (a, b, b_tablet):
            await c.close()

    asyncio.run(scenario())


def test_presence_across_processes_and_expiry_of_a_killed_process(live_server_factory, servers, make_token):
    s1, _s2 = servers
    doomed = live_server_factory(ENV)
    patient, doctor, _conversation = pair()

    async def scenario():
        a = await WsClient.connect(s1.ws_url, token_for(make_token, patient))
        ack = await a.request("presence.subscribe", {"user_ids": [doctor.pk]})
        assert ack["data"]["subscribed"] == [doctor.pk]
        assert (await a.expect("presence"))["data"]["online"] is False
        b = await WsClient.connect(doomed.ws_url, token_for(make_token, doctor))
        online = await a.expect("presence", lambda f: f["data"]["online"])
        assert online["data"]["user_id"] == doctor.pk
        doomed.kill()  # SIGKILL: no disconnect handler runs on that process
        await asyncio.sleep(3)  # > HEALTHCHAT_PRESENCE_TTL
        a2 = await WsClient.connect(s1.ws_url, token_for(make_token, patient))
        await a2.request("presence.subscribe", {"user_ids": [doctor.pk]})
        status = await a2.expect("presence")
        assert (
            status["data"] == {"user_id": doctor.pk, "online": False, "last_seen": None}
            or status["data"]["online"] is False
        )
        for c in (a, a2):
            await c.close()
        del b

    start = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - start < 30


def test_server_killed_with_200_sockets_open_loses_nothing(live_server_factory, servers, make_token):
    """SIGKILL to a server process holding 200 sockets mid-exchange: every client reconnects to
    the other process, syncs from its cursor and re-sends what was not acked (same client_id):
    every acked message is stored once and shown once, in order."""
    _s1, s2 = servers
    doomed = live_server_factory(ENV)
    pairs = [pair() for _ in range(KILL_PAIRS)]
    members = {c.pk: [p.pk, d.pk] for p, d, c in pairs}
    ledger = Ledger()

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        peers: list[Peer] = []
        work = []
        for patient, doctor, conversation in pairs:
            for user in (patient, doctor):
                peer = Peer(user.pk, token_for(make_token, user), [doomed.ws_url, s2.ws_url], ledger)
                peers.append(peer)
                work.append(
                    (peer, [ledger.plan(conversation.pk, f"{user.pk}:{i}") for i in range(KILL_PER_USER)])
                )
        gate = asyncio.Semaphore(50)

        async def connect(peer: Peer) -> None:
            async with gate:
                await peer.connect()

        await asyncio.gather(*(connect(p) for p in peers))
        assert sum(1 for p in peers if p.connected) == 2 * KILL_PAIRS
        deadline = loop.time() + 60
        senders = asyncio.gather(
            *(peer.deliver(items, deadline=deadline, pause=0.05) for peer, items in work)
        )
        await ledger.until(lambda: len(ledger.acked()) >= len(ledger.outgoing) // 3, 30, stop=senders)
        acked_at_kill = len(ledger.acked())
        doomed.kill()
        await senders
        for peer in peers:
            await (peer.sync() if peer.connected else peer.reconnect())
        assert all(p.url_index % 2 == 1 for p in peers)  # every client moved to the other process
        await asyncio.gather(*(p.close() for p in peers))
        return acked_at_kill

    started = time.monotonic()
    acked_at_kill = asyncio.run(scenario())
    counts = check_exactly_once(ledger, members)
    assert 0 < acked_at_kill < len(ledger.outgoing)
    assert counts["reconnects"] >= 2 * KILL_PAIRS
    assert counts["stored"] == 2 * KILL_PAIRS * KILL_PER_USER
    assert time.monotonic() - started < 60
    print(acked_at_kill, counts)
