"""The server's PostgreSQL connections killed (``pg_terminate_backend``) again and again while
several pairs send: a send whose transaction died gets an ``error`` frame, never an ack; the
server replaces its connections; the clients send again with the same ``client_id`` and end
with every message stored once, in order."""

import asyncio
import threading
import time

import psycopg
import pytest
from django.db import connection

from conftest import LIVE_SERVER_APPLICATION_NAME
from messaging.tests.factories import pair
from tests.faults import Ledger, Peer, check_exactly_once

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

PAIRS = 4
PER_USER = 60
KILLS = 12
KILL_EVERY = 0.25


@pytest.fixture(scope="module")
def server(live_server_factory):
    return live_server_factory()


def token_for(make_token, user):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number)


class Killer(threading.Thread):
    """Terminates the live server's sessions on the test database, and only those: the test
    process's own connections (this thread's, asgiref's executor threads') stay alive, so no
    later test in this worker inherits a dead one."""

    def __init__(self, dsn: str, spare_pid: int) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.spare_pid = spare_pid
        self.rounds = 0
        self.terminated = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while self.rounds < KILLS and not self.stop.wait(KILL_EVERY):
                killed = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> %s"
                    " AND backend_type = 'client backend' AND application_name = %s",
                    [self.spare_pid, LIVE_SERVER_APPLICATION_NAME],
                ).fetchone()
                self.terminated += int(killed[0]) if killed else 0
                self.rounds += 1


def test_killed_database_connections_give_errors_never_false_acks(server, make_token):
    pairs = [pair() for _ in range(PAIRS)]
    members = {c.pk: [p.pk, d.pk] for p, d, c in pairs}
    ledger = Ledger()
    db = connection.settings_dict
    dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]
    killer = Killer(dsn, own_pid)

    async def scenario() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        peers: list[Peer] = []
        work = []
        for patient, doctor, conversation in pairs:
            for user in (patient, doctor):
                peer = Peer(user.pk, token_for(make_token, user), [server.ws_url], ledger)
                peers.append(peer)
                work.append((peer, [ledger.plan(conversation.pk, f"{user.pk}:{i}") for i in range(PER_USER)]))
        await asyncio.gather(*(p.connect() for p in peers))
        killer.start()
        deadline = loop.time() + 60
        await asyncio.gather(*(peer.deliver(items, deadline=deadline, pause=0.02) for peer, items in work))
        killer.stop.set()
        await asyncio.to_thread(killer.join, 10)
        during = {"errors": sum(ledger.errors.values())}
        # Recovered: with the killing over, every send succeeds at the first attempt.
        after = [
            (peer, [ledger.plan(c, "after") for c in [items[0].conversation_id]]) for peer, items in work
        ]
        for peer, items in after:
            if not peer.connected:
                await peer.reconnect()
            assert await peer.send_once(items[0]), items[0].errors
        for peer in peers:
            await (peer.sync() if peer.connected else peer.reconnect())
        await asyncio.gather(*(p.close() for p in peers))
        return during

    started = time.monotonic()
    during = asyncio.run(scenario())
    counts = check_exactly_once(ledger, members)
    assert killer.rounds >= 4, killer.rounds
    assert killer.terminated >= 4, killer.terminated
    # Sends met killed connections: a batch whose connection died before its commit is retried
    # once on a new connection (logged: the worker thread's writer; the event loop's writer hands
    # the batch to the thread's), else its sends get an error frame (never an ack).
    log = server.log_path.read_text(errors="replace")
    retried = log.count("retrying the batch on a new one") + log.count("batch handed to the worker thread")
    assert during["errors"] + retried > 0, "no send ever met a killed connection: the test proved nothing"
    assert set(ledger.errors) <= {"internal_error", "unavailable"}, ledger.errors
    assert counts["stored"] == PAIRS * 2 * (PER_USER + 1)
    assert time.monotonic() - started < 60
    print(killer.rounds, killer.terminated, dict(ledger.errors), retried, counts)
