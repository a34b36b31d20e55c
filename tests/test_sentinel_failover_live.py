"""Redis Sentinel failover under traffic: a master, a replica and three sentinels (real engines on
loopback), two server processes and a Celery worker, all configured through Sentinel only.

Pairs exchange messages, each side on its own server process; the master is killed (``kill -9``)
mid-exchange; Sentinel promotes the replica. Then, with no restart and no new configuration:
every acked message is stored once and shown once, in order (the database and the clients'
received ids agree); every socket that stayed open was told ``sync.required`` and caught up by
syncing; live delivery works again; every open socket's presence is written to the new master by
the heartbeats; and a push task queued after the failover is consumed by the worker."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts.tests.factories import DeviceFactory
from messaging import presence
from messaging.tests.factories import pair
from notifications.models import PushDelivery
from notifications.tests.fake_fcm_server import FakeFcmServer
from tests.faults import Ledger, Peer, check_exactly_once
from tests.live import celery_worker
from tests.sentinel import SentinelSet

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 4
PER_USER = 60  # 4 pairs x 2 users x 60 = 480 messages
HEARTBEAT = 1.0  # seconds: presence is written again soon after the failover
TTL = 6.0


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: Any) -> Iterator[SentinelSet]:
    engines = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    engines.start()
    yield engines
    engines.stop()


@pytest.fixture(scope="module")
def fcm_server() -> Iterator[FakeFcmServer]:
    server = FakeFcmServer().start()
    yield server
    server.stop()


def _env(sentinel_set: SentinelSet) -> dict[str, str]:
    return {
        **sentinel_set.env(db=0),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "HEALTHCHAT_PRESENCE_HEARTBEAT": str(HEARTBEAT),
        "HEALTHCHAT_PRESENCE_TTL": str(TTL),
        "PUSH_GRACE_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def servers(live_server_factory: Any, sentinel_set: SentinelSet) -> tuple[Any, Any]:
    env = _env(sentinel_set)
    return live_server_factory(env), live_server_factory(env)


@pytest.fixture
def worker(sentinel_set: SentinelSet, fcm_server: FakeFcmServer, tmp_path: Path) -> Iterator[Path]:
    """A real Celery worker (solo pool) whose broker is the Sentinel-managed Redis."""
    env = {
        **_env(sentinel_set),
        "PUSH_BACKEND": "fcm",
        "FIREBASE_CREDENTIALS": "",
        "FIREBASE_PROJECT_ID": "demo-healthchat",
        "HC_TEST_FCM_FAKE": fcm_server.url,
    }
    log_path = tmp_path / "worker.log"
    launcher = [sys.executable, str(ROOT / "notifications" / "tests" / "worker_boot.py")]
    with celery_worker(env, log_path, "failover", launcher=launcher):
        yield log_path


def test_master_killed_mid_exchange_sentinel_promotes_and_nothing_is_lost(
    servers: tuple[Any, Any],
    sentinel_set: SentinelSet,
    worker: Path,
    fcm_server: FakeFcmServer,
    make_token: Any,
) -> None:
    s1, s2 = servers
    pairs = [pair() for _ in range(PAIRS)]
    members = {c.pk: [p.pk, d.pk] for p, d, c in pairs}
    # A user with a phone and no socket: a message to them after the failover is pushed.
    offline, writer, push_conversation = pair()
    DeviceFactory(user=offline, fcm_token="failover-phone", installation_id=None)
    members[push_conversation.pk] = [writer.pk]
    ledger = Ledger()
    store = presence.RedisPresence(prefix=os.environ["CHANNEL_LAYER_PREFIX"])

    def token(user: Any) -> str:
        return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number))

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        peers: list[Peer] = []
        work = []
        for patient, doctor, conversation in pairs:
            for user, server in ((patient, s1), (doctor, s2)):
                peer = Peer(user.pk, token(user), [server.ws_url], ledger)
                peers.append(peer)
                work.append((peer, [ledger.plan(conversation.pk, f"{user.pk}:{i}") for i in range(PER_USER)]))
        pusher = Peer(writer.pk, token(writer), [s1.ws_url], ledger)
        await asyncio.gather(*(p.connect() for p in [*peers, pusher]))
        deadline = loop.time() + 90
        senders = asyncio.gather(
            *(peer.deliver(items, deadline=deadline, pause=0.01) for peer, items in work)
        )
        await ledger.until(lambda: len(ledger.acked()) >= 150, 40, stop=senders)
        before = len(ledger.acked())
        old_port = sentinel_set.master_address()[1]
        killed_wall = time.time()
        killed = await asyncio.to_thread(sentinel_set.kill_master)
        promoted = await asyncio.to_thread(sentinel_set.wait_promoted, old_port)
        figures: dict[str, Any] = {
            "acked_before_kill": before,
            "acked_until_promotion": len(ledger.acked()) - before,
            "promotion_s": round(promoted - killed, 2),
        }
        await senders
        assert len(ledger.acked()) > before + 10, "the exchange did not go on after the kill"

        # Live delivery works again (at most three tries: the live path is at-most-once).
        patient_peer, doctor_peer = peers[0], peers[1]
        live_again = False
        for attempt in range(3):
            if not doctor_peer.connected:
                await doctor_peer.reconnect()
            last = ledger.plan(pairs[0][2].pk, f"live again {attempt}")
            await patient_peer.deliver([last], deadline=loop.time() + 20)
            assert last.ack is not None
            shown = (doctor_peer.user_id, last.ack["id"])

            def arrived(shown: tuple[int, int] = shown) -> bool:
                return shown in ledger.first_shown

            if await ledger.until(arrived, 10):
                live_again = ledger.first_shown[shown] == "live"
            if live_again:
                break
        assert live_again, "no message reached an open socket live after the failover"
        figures["live_again_s"] = round(time.monotonic() - killed, 2)

        # Every socket that stayed open through the failover was told to sync.
        stayed = [peer for peer in peers if peer.connected and peer.reconnects == 0]
        assert stayed, "every socket reconnected: the hint was not exercised"
        told = await ledger.until(lambda: all(peer.sync_required >= 1 for peer in stayed), 10)
        assert told, [p.sync_required for p in peers]
        figures["told_to_sync"] = sum(1 for peer in peers if peer.sync_required)

        # Presence rebuilt on the new master: each open socket's entry written after the kill.
        async def presence_rebuilt() -> bool:
            client = sentinel_set.master_client(db=0)
            for peer in peers:
                if not peer.connected:
                    continue
                entries: Any = client.zrange(store._key(peer.user_id), 0, -1, withscores=True)
                if not entries or max(score for _, score in entries) <= killed_wall + TTL:
                    return False
            return True

        rebuilt = False
        for _ in range(100):
            if await presence_rebuilt():
                rebuilt = True
                break
            await asyncio.sleep(0.1)
        assert rebuilt, "presence entries were not written to the new master"

        # Celery keeps consuming: a push task queued after the failover reaches (fake) FCM.
        item = ledger.plan(push_conversation.pk, "after the failover")
        await pusher.deliver([item], deadline=loop.time() + 20)
        assert item.ack is not None
        figures["push_message_id"] = item.ack["id"]

        # What the app does on a seq gap or a reconnect: sync from the stored cursor.
        for peer in [*peers, pusher]:
            await (peer.sync() if peer.connected else peer.reconnect())
        await asyncio.gather(*(p.close() for p in [*peers, pusher]))
        return figures

    started = time.monotonic()
    figures = asyncio.run(scenario())
    counts = check_exactly_once(ledger, members)
    assert counts["stored"] == len(ledger.acked())
    deadline = time.monotonic() + 30
    while not fcm_server.requests and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fcm_server.requests, f"no push after the failover:\n{worker.read_text(errors='replace')[-3000:]}"
    delivery = PushDelivery.objects.get(message_id=figures["push_message_id"])
    assert delivery.state == PushDelivery.State.SENT
    assert [m["data"]["message_id"] for m in fcm_server.messages()] == [str(figures["push_message_id"])]
    print(figures, counts, f"{time.monotonic() - started:.1f}s")
