"""Three server processes behind HAProxy running ``deploy/haproxy.cfg`` (WebSockets through it,
health checks on ``/readyz``). HAProxy reloaded (``-sf``): open sockets stay with the old
process until they close. One process is drained (no new connections) and stopped (SIGTERM,
as a deploy does) during steady sends. Its sockets are closed with 1012, wait the ``ready``
frame's reconnect hint, come back through HAProxy to the other two processes and ``sync``;
every message is acked, stored once and shown once to each member, in order."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from messaging.tests.factories import pair
from tests.faults import Ledger, Peer, check_exactly_once
from tests.haproxy import HAProxy
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

# A short hint keeps the test short; the clients follow it as apps do.
ENV = {"HEALTHCHAT_WS_RECONNECT_MIN_MS": "200", "HEALTHCHAT_WS_RECONNECT_MAX_MS": "800"}
PAIRS = 15  # 30 sockets, ~10 per process
PER_USER = 12


@pytest.fixture(scope="module")
def fleet(live_server_factory: Any) -> Iterator[tuple[list[Any], HAProxy]]:
    servers = [live_server_factory(ENV) for _ in range(3)]
    proxy = HAProxy([s.port for s in servers])
    proxy.start()
    yield servers, proxy
    proxy.close()


def token_for(make_token: Any, user: Any) -> str:
    return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number))


def test_http_and_health_through_haproxy(fleet: tuple[list[Any], HAProxy]) -> None:
    _servers, proxy = fleet
    assert requests.get(f"{proxy.base_url}/readyz", timeout=10).json()["status"] == "ok"
    assert requests.get(f"{proxy.base_url}/haproxy-health", timeout=10).status_code == 200
    rows = proxy.servers()
    assert sorted(rows) == proxy.used
    assert all(row["status"].startswith("UP") for row in rows.values()), proxy.summary(rows)
    # Layer-7 checks (/readyz answering 200), not just a port that accepts.
    assert all(row["check_status"].lstrip("* ") in {"L7OK", "INI"} for row in rows.values()), rows
    assert any(row["check_status"].lstrip("* ") == "L7OK" for row in rows.values()), rows


def test_a_reload_of_haproxy_keeps_open_websockets(fleet: tuple[list[Any], HAProxy], make_token: Any) -> None:
    """``haproxy -sf``: the old process stops listening but keeps serving the sockets it holds;
    new sockets go to the new process; the old one exits once its last socket closed."""
    _servers, proxy = fleet
    patient, doctor, conversation = pair()

    async def scenario() -> subprocess.Popen[bytes]:
        a = await WsClient.connect(proxy.ws_url, token_for(make_token, patient))
        b = await WsClient.connect(proxy.ws_url, token_for(make_token, doctor))
        assert (await a.send_message(conversation.pk, "before the reload"))["type"] == "ack"
        old = await asyncio.to_thread(proxy.reload)
        # The sockets opened before the reload still work, through the old process ...
        ack = await a.send_message(conversation.pk, "after the reload, old socket")
        assert ack["type"] == "ack", ack
        got = await b.expect(
            "message.new", lambda f: f["data"]["message"]["id"] == ack["data"]["message"]["id"]
        )
        assert got["data"]["message"]["seq"] == 2
        assert old.poll() is None  # still serving them
        # ... and a new socket is served by the new process.
        c = await WsClient.connect(proxy.ws_url, token_for(make_token, doctor))
        assert (await c.send_message(conversation.pk, "new socket"))["type"] == "ack"
        assert (await a.expect("message.new"))["data"]["message"]["seq"] == 3
        for client in (a, b, c):
            await client.close()
        return old

    old = asyncio.run(scenario())
    try:
        old.wait(timeout=30)  # its last sockets closed: it is gone, long before hard-stop-after
    finally:
        if old.poll() is None:
            old.kill()
            old.wait(5)
    assert old.returncode == 0


def test_a_drained_and_stopped_process_loses_nothing(
    fleet: tuple[list[Any], HAProxy], make_token: Any
) -> None:
    servers, proxy = fleet
    doomed = servers[0]  # web1
    pairs = [pair() for _ in range(PAIRS)]
    members = {c.pk: [p.pk, d.pk] for p, d, c in pairs}
    ledger = Ledger()
    seen: dict[str, Any] = {}

    async def scenario() -> list[Peer]:
        loop = asyncio.get_running_loop()
        peers: list[Peer] = []
        work = []
        for patient, doctor, conversation in pairs:
            for user in (patient, doctor):
                peer = Peer(user.pk, token_for(make_token, user), [proxy.ws_url], ledger, follow_hint=True)
                peers.append(peer)
                work.append((peer, [ledger.plan(conversation.pk, f"{user.pk}:{i}") for i in range(PER_USER)]))
        await asyncio.gather(*(p.connect() for p in peers))
        seen["before"] = proxy.summary(proxy.servers())
        deadline = loop.time() + 90
        senders = asyncio.gather(
            *(peer.deliver(items, deadline=deadline, pause=0.05) for peer, items in work)
        )
        await ledger.until(lambda: len(ledger.acked()) >= len(ledger.outgoing) // 3, 30, stop=senders)
        seen["acked_at_drain"] = len(ledger.acked())
        proxy.drain("web1")
        seen["drained"] = proxy.summary(await asyncio.to_thread(proxy.wait_status, {"web1": "DRAIN"}))
        await asyncio.to_thread(doomed.stop, signal.SIGTERM)  # the deploy: 1012 to its sockets
        seen["stopped"] = proxy.summary(await asyncio.to_thread(proxy.wait_status, {"web1": "DOWN"}))
        await senders
        for peer in peers:
            await (peer.sync() if peer.connected else peer.reconnect())
        seen["after"] = proxy.summary(proxy.servers())
        await asyncio.gather(*(p.close() for p in peers))
        return peers

    started = time.monotonic()
    peers = asyncio.run(scenario())
    counts = check_exactly_once(ledger, members)
    on_doomed = int(seen["before"]["web1"][1])
    assert on_doomed >= 1, seen  # leastconn put sockets on every process
    assert all(int(seen["before"][name][1]) >= 1 for name in proxy.used), seen
    assert 0 < seen["acked_at_drain"] < len(ledger.outgoing)
    # Its sockets were closed 1012, waited the hint and reconnected elsewhere.
    moved = [p for p in peers if 1012 in p.close_codes]
    assert len(moved) == on_doomed, (len(moved), seen)
    assert all(p.hinted_waits and 0.2 <= p.hinted_waits[0] <= 0.8 for p in moved)
    assert counts["reconnects"] >= on_doomed
    assert seen["after"]["web1"][1] == "0", seen
    assert sum(int(seen["after"][name][1]) for name in ("web2", "web3")) == 2 * PAIRS, seen
    assert counts["stored"] == 2 * PAIRS * PER_USER
    assert time.monotonic() - started < 90
    print("haproxy drain:", seen, counts)
