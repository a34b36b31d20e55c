"""Two server processes behind a transaction-pooling PgBouncer (Debian's 1.18), configured as
docs/scaling.md says: no pool in the process (``DATABASE_POOL_MAX_SIZE=0``), no named prepared
statements (``DATABASE_PREPARE_THRESHOLD=0``: 1.18 cannot keep them across transactions).

The ordinary paths work through it (sends on the event loop's raw pipeline writer, fan-out to
the other process, edits, receipts, REST history, ``sync``), and PgBouncer restarted again and
again during steady sends (every client and server connection cut) costs error frames and
re-sends, never an acked message lost or stored twice.

Set ``HC_TEST_DATABASE_PROXY=pgbouncer`` to run any other live test module through a PgBouncer
the same way (``conftest.py: live_server_factory``)."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.db import connection

from conftest import LIVE_SERVER_APPLICATION_NAME
from messaging.tests.factories import pair
from tests.faults import Ledger, Peer, check_exactly_once
from tests.pgbouncer import PgBouncer
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "pgbouncer-test-metrics"
PAIRS = 4
PER_USER = 40
RESTARTS = 3


@pytest.fixture(scope="module")
def bouncer(django_db_setup: Any, django_db_blocker: Any) -> Iterator[PgBouncer]:
    """PgBouncer in front of the PostgreSQL of this worker's test database."""
    with django_db_blocker.unblock():
        port = int(connection.settings_dict["PORT"] or 5432)
    proxy = PgBouncer(port, pool_size=8)
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def servers(live_server_factory: Any, bouncer: PgBouncer, django_db_blocker: Any) -> tuple[Any, Any]:
    with django_db_blocker.unblock():
        name = str(connection.settings_dict["NAME"])
    env = {
        "DATABASE_URL": bouncer.url(name, LIVE_SERVER_APPLICATION_NAME),
        "DATABASE_POOL_MAX_SIZE": "0",
        "DATABASE_PREPARE_THRESHOLD": "0",
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    return live_server_factory(env), live_server_factory(env)


def token_for(make_token: Any, user: Any) -> str:
    return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number))


def loop_writer_batches(server: Any) -> float:
    """Batches the event loop's writer committed (``/metrics``)."""
    text = requests.get(
        f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    ).text
    found = re.search(r'^healthchat_batch_size_count\{batcher="loop_writer"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_live_paths_work_through_pgbouncer(servers: tuple[Any, Any], make_token: Any) -> None:
    s1, s2 = servers
    patient, doctor, conversation = pair()
    patient_token, doctor_token = token_for(make_token, patient), token_for(make_token, doctor)
    before = loop_writer_batches(s1)

    async def scenario() -> None:
        a = await WsClient.connect(s1.ws_url, patient_token)
        b = await WsClient.connect(s2.ws_url, doctor_token)
        for i in range(20):
            ack = await a.send_message(conversation.pk, f"through pgbouncer {i}")
            assert ack["type"] == "ack", ack
            assert ack["data"]["message"]["seq"] == i + 1
            got = await b.expect("message.new")
            assert got["data"]["message"]["seq"] == i + 1
        read = await b.request("message.read", {"conversation_id": conversation.pk, "seq": 20})
        assert read["type"] == "ack", read
        receipt = await a.expect("receipt", lambda f: f["data"]["user_id"] == doctor.pk)
        assert receipt["data"]["read_seq"] == 20
        first_id = (await a.send_message(conversation.pk, "to edit"))["data"]["message"]["id"]
        edit = await a.request("message.edit", {"message_id": first_id, "body": "edited"})
        assert edit["type"] == "ack", edit
        assert (await b.expect("message.updated"))["data"]["message"]["body"] == "edited"
        frames, _cursor, more = await b.sync()
        assert not more
        assert {f["data"]["message"]["seq"] for f in frames if f["type"] == "message.new"} >= set(
            range(1, 22)
        )
        for client in (a, b):
            await client.close()

    asyncio.run(scenario())
    history = requests.get(
        f"{s2.base_url}/api/v1/conversations/{conversation.pk}/messages?limit=100",
        headers={"Authorization": f"Bearer {doctor_token}"},
        timeout=10,
    )
    assert history.status_code == 200, history.text
    assert [m["seq"] for m in history.json()["results"]] == list(range(1, 22))
    assert history.json()["results"][-1]["body"] == "edited"
    me = requests.get(
        f"{s1.base_url}/api/v1/me", headers={"Authorization": f"Bearer {patient_token}"}, timeout=10
    )
    assert me.status_code == 200
    assert me.json()["id"] == patient.pk
    # The sends were written by the event loop's raw pipeline writer, through PgBouncer (the hot
    # path's metrics reach /metrics at the loop's next flush, up to a second later).
    deadline = time.monotonic() + 5
    while loop_writer_batches(s1) - before < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert loop_writer_batches(s1) - before >= 1
    logs = s1.log() + s2.log()
    assert "Traceback" not in logs, logs[-3000:]
    assert "DuplicatePreparedStatement" not in logs
    assert "loop writer: cannot connect" not in logs


class TimedLedger(Ledger):
    """The ledger, plus when each ack came: the longest time without any ack is the outage as
    the clients saw it."""

    def __init__(self) -> None:
        super().__init__()
        self.ack_times: list[float] = []

    def record_ack(self, item: Any, message: dict[str, Any]) -> None:
        self.ack_times.append(time.monotonic())
        super().record_ack(item, message)

    def longest_gap(self) -> float:
        times = sorted(self.ack_times)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class Restarter(threading.Thread):
    """Restarts PgBouncer ``RESTARTS`` times, ``every`` seconds, each time down ``down_for``."""

    def __init__(self, proxy: PgBouncer, every: float = 0.8, down_for: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.proxy, self.every, self.down_for = proxy, every, down_for
        self.done = 0
        self.outages: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while self.done < RESTARTS and not self.stop.wait(self.every):
            started = time.monotonic()
            self.proxy.restart(down_for=self.down_for)
            self.outages.append(time.monotonic() - started)  # stop, the pause, start: listening again
            self.done += 1


def test_pgbouncer_restarted_mid_traffic_loses_no_acked_message(
    servers: tuple[Any, Any], bouncer: PgBouncer, make_token: Any
) -> None:
    s1, s2 = servers
    pairs = [pair() for _ in range(PAIRS)]
    members = {c.pk: [p.pk, d.pk] for p, d, c in pairs}
    ledger = TimedLedger()
    restarter = Restarter(bouncer)

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        peers: list[Peer] = []
        work = []
        for index, (patient, doctor, conversation) in enumerate(pairs):
            for side, user in enumerate((patient, doctor)):
                urls = [s1.ws_url, s2.ws_url] if (index + side) % 2 == 0 else [s2.ws_url, s1.ws_url]
                peer = Peer(user.pk, token_for(make_token, user), urls, ledger)
                peers.append(peer)
                work.append((peer, [ledger.plan(conversation.pk, f"{user.pk}:{i}") for i in range(PER_USER)]))
        await asyncio.gather(*(p.connect() for p in peers))
        restarter.start()
        deadline = loop.time() + 90
        await asyncio.gather(*(peer.deliver(items, deadline=deadline, pause=0.03) for peer, items in work))
        # Every restart happens, even when the sends finished first (a fast machine): then the
        # last ones meet idle connections, which the next sends must survive as well.
        await asyncio.to_thread(restarter.join, 30)
        restarter.stop.set()
        during = sum(ledger.errors.values())
        # Every member catches up from its cursor (what it missed live comes through sync).
        for peer in peers:
            await (peer.sync() if peer.connected else peer.reconnect())
        await asyncio.gather(*(p.close() for p in peers))
        return during

    started = time.monotonic()
    errors = asyncio.run(scenario())
    counts = check_exactly_once(ledger, members)
    assert restarter.done == RESTARTS, bouncer.log()
    assert counts["stored"] == PAIRS * 2 * PER_USER
    # Sends did meet the restarts: answered with an error frame (then re-sent with the same
    # client_id), or retried by the server on a new connection; never acked and lost.
    logs = s1.log_path.read_text(errors="replace") + s2.log_path.read_text(errors="replace")
    retried = logs.count("retrying the batch on a new one") + logs.count("batch handed to the worker thread")
    assert errors + retried > 0, "no send met a restart: the test proved nothing"
    assert set(ledger.errors) <= {"internal_error", "unavailable"}, ledger.errors
    assert time.monotonic() - started < 90
    print(
        "pgbouncer restarts:", restarter.done, "down (stop to listening again):",
        [round(t, 2) for t in restarter.outages], "s; errors:",
        dict(ledger.errors), "retried:", retried, "longest time without an ack:",
        round(ledger.longest_gap(), 2), "s;", counts,
    )  # fmt: skip
