"""Connection lifecycle on a real uvicorn process: deadlines on loop timers, process-wide presence
heartbeats, the reconnect hint and admission control (server_busy + close 1013)."""

import asyncio
import time

import pytest

from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging import services
from messaging.tests.factories import pair
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ENV = {
    "HEALTHCHAT_PRESENCE_TTL": "2",
    "HEALTHCHAT_PRESENCE_HEARTBEAT": "0.5",
    "HEALTHCHAT_WS_AUTH_TIMEOUT": "1",
    "HEALTHCHAT_WS_RECONNECT_MIN_MS": "100",
    "HEALTHCHAT_WS_RECONNECT_MAX_MS": "900",
}
BUSY_ENV = {"HEALTHCHAT_WS_MAX_PENDING_AUTH": "1", "HEALTHCHAT_WS_RETRY_AFTER_MS": "200"}


@pytest.fixture(scope="module")
def server(live_server_factory):
    return live_server_factory(ENV)


@pytest.fixture(scope="module")
def busy_server(live_server_factory):
    return live_server_factory(BUSY_ENV)


def token_for(make_token, user, **kw):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number, **kw)


def test_ready_carries_the_reconnect_hint(server, make_token):
    patient = PatientFactory()

    async def scenario():
        c = await WsClient.connect(server.ws_url, token_for(make_token, patient), wait_ready=False)
        ready = await c.expect("ready")
        assert ready["data"]["reconnect"] == {"min_ms": 100, "max_ms": 900}
        await c.close()

    asyncio.run(scenario())


def test_the_token_expiry_closes_the_socket_4401(server, make_token):
    patient = PatientFactory()

    async def scenario():
        c = await WsClient.connect(server.ws_url, token_for(make_token, patient, lifetime=2))
        started = time.monotonic()
        assert (await c.request("ping"))["type"] == "pong"
        frame = await c.expect("error", timeout=6)
        assert frame["error"]["code"] == "token_expired"
        assert "ref" not in frame
        await c.ws.wait_closed()
        assert c.close_code == 4401
        assert time.monotonic() - started < 4

    asyncio.run(scenario())


def test_auth_refresh_moves_the_deadline(server, make_token):
    patient = PatientFactory()

    async def scenario():
        c = await WsClient.connect(server.ws_url, token_for(make_token, patient, lifetime=2))
        ack = await c.request("auth.refresh", {"token": token_for(make_token, patient, lifetime=3600)})
        assert ack["type"] == "ack"
        assert ack["data"]["expires_at"] > time.time() + 3000
        await asyncio.sleep(3.5)  # past the first token's exp
        assert (await c.request("ping"))["type"] == "pong"
        assert c.close_code is None
        # A short refresh brings the deadline back in.
        await c.request("auth.refresh", {"token": token_for(make_token, patient, lifetime=1)})
        frame = await c.expect("error", timeout=5)
        assert frame["error"]["code"] == "token_expired"
        await c.ws.wait_closed()
        assert c.close_code == 4401

    asyncio.run(scenario())


def test_auth_deadline_spares_a_socket_that_authenticated(server, make_token):
    patient = PatientFactory()

    async def scenario():
        late = await WsClient.connect(server.ws_url)
        on_time = await WsClient.connect(server.ws_url)
        await on_time.send("auth", {"token": token_for(make_token, patient)})
        await on_time.expect("ready")
        frame = await late.expect("error", timeout=4)
        assert frame["error"]["code"] == "auth_timeout"
        await late.ws.wait_closed()
        assert late.close_code == 4401
        await asyncio.sleep(0.5)
        assert (await on_time.request("ping"))["type"] == "pong"
        await on_time.close()

    asyncio.run(scenario())


def test_heartbeats_keep_idle_sockets_online_past_the_ttl(server, make_token):
    """TTL 2 s, heartbeat 0.5 s: only the process-wide heartbeat keeps these users online."""
    patient, doctor, _conversation = pair()
    doctor2 = DoctorFactory()
    services.conversation_open_direct(user=patient, peer_id=doctor2.pk)

    async def scenario():
        b = await WsClient.connect(server.ws_url, token_for(make_token, doctor))
        b2 = await WsClient.connect(server.ws_url, token_for(make_token, doctor2))
        await asyncio.sleep(4.5)  # more than twice the TTL
        a = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        ack = await a.request("presence.subscribe", {"user_ids": [doctor.pk, doctor2.pk]})
        assert sorted(ack["data"]["subscribed"]) == sorted([doctor.pk, doctor2.pk])
        status = {}
        for _ in range(2):
            frame = await a.expect("presence")
            status[frame["data"]["user_id"]] = frame["data"]["online"]
        assert status == {doctor.pk: True, doctor2.pk: True}
        await b.close()
        offline = await a.expect("presence", lambda f: f["data"]["user_id"] == doctor.pk)
        assert offline["data"]["online"] is False
        # The other one stays online through more heartbeats.
        await asyncio.sleep(2.5)
        a2 = await WsClient.connect(server.ws_url, token_for(make_token, patient))
        await a2.request("presence.subscribe", {"user_ids": [doctor2.pk]})
        assert (await a2.expect("presence"))["data"]["online"] is True
        for c in (a, a2, b2):
            await c.close()

    asyncio.run(scenario())


def test_admission_control_refuses_with_1013_and_retry_after(busy_server, make_token):
    """One authentication at a time: a burst of sockets is partly refused with ``server_busy``
    (``retry_after_ms``: the queue's drain time at the recent rate, at least the 200 ms floor,
    with one socket waiting at most 1 s, times 1-1.5) and close 1013; retrying then gets in."""
    users = [PatientFactory() for _ in range(24)]
    tokens = [token_for(make_token, u) for u in users]

    async def attempt(token):
        c = await WsClient.connect(busy_server.ws_url, token, wait_ready=False)
        first = await c.recv(timeout=10)
        if first["type"] == "ready":
            return c, None
        await c.ws.wait_closed()
        return c, (first, c.close_code)

    async def scenario():
        results = await asyncio.gather(*(attempt(t) for t in tokens))
        refused = [(i, r) for i, (_c, r) in enumerate(results) if r is not None]
        assert refused, "24 simultaneous authentications with a limit of 1: some must be refused"
        assert len(refused) < len(tokens)
        for _i, (frame, code) in refused:
            assert frame["type"] == "error"
            assert frame["error"]["code"] == "server_busy"
            assert 200 <= frame["error"]["retry_after_ms"] <= 1500
            assert code == 1013
        for i, (frame, _code) in refused:
            await asyncio.sleep(frame["error"]["retry_after_ms"] / 1000)
            c, again = await attempt(tokens[i])
            assert again is None, again
            assert (await c.request("ping"))["type"] == "pong"
            await c.close()
        for c, r in results:
            if r is None:
                assert (await c.request("ping"))["type"] == "pong"
                await c.close()

    asyncio.run(scenario())
