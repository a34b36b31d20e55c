"""Redis Sentinel failover: how long until healthchat works again after its Redis master dies.

``flock /tmp/hc-bench.lock python bench/failover.py [--pairs 20] [--rounds 3]`` (from the repository
root; PostgreSQL on 127.0.0.1:5432 as ``postgres``; Debian's redis-server and redis-sentinel,
``make redis-sentinel``).

1. Starts a Redis master, a replica and three sentinels on free loopback ports (tests/sentinel.py:
   ``down-after-milliseconds`` 1000, ``failover-timeout`` 3000), and two server processes (uvicorn)
   configured through Sentinel only (``REDIS_SENTINELS``, ``REDIS_SENTINEL_MASTER``).
2. ``--pairs`` conversations, each side on its own server process, exchange messages steadily
   (one every 20 ms per socket); pair 0's first user also sends a probe every 50 ms.
3. The master is killed (SIGKILL). Measured from the kill: Sentinel's promotion (every sentinel
   names the replica and it answers as master); the first probe delivered LIVE across the two
   processes again (the live path restored: time to recover); every open socket told
   ``sync.required``; sends acked during the failover.
4. The exchange goes on for a few seconds; every socket syncs; the messages the clients saw are
   checked against the database (0 lost, 0 duplicated). ``--rounds`` repeats 2-4 (the replica
   killed in one round is restarted as the new master's replica before the next).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import free_port, uvicorn_args
from perfkit import (
    Target,
    close_django,
    export_source,
    log,
    phone,
    seed_pairs,
    setup_django,
    spawn,
    stop,
    tokens,
    wait_for_quiet,
    wait_healthy,
)

SEND_PAUSE = 0.02
PROBE_PAUSE = 0.05
TAG = 7  # bench users +12037..., +12038... (perfkit.phone)


def server_env(base: dict[str, str], sentinel_env: dict[str, str]) -> dict[str, str]:
    env = {**base, **sentinel_env, "HEALTHCHAT_PRESENCE_HEARTBEAT": "2", "HEALTHCHAT_PRESENCE_TTL": "10"}
    env["CELERY_TASK_ALWAYS_EAGER"] = "true"  # no worker here: the failover of the live path
    return env


async def one_round(
    sentinels: Any, urls: list[str], pairs: list[tuple[int, int, int]], tokens_by_user: dict[int, str]
) -> dict[str, Any]:
    from tests.faults import Ledger, Peer, check_exactly_once, stored_messages

    ledger = Ledger()
    peers: list[Peer] = []
    for _conversation_id, a, b in pairs:
        for user, url in ((a, urls[0]), (b, urls[1])):
            peers.append(Peer(user, tokens_by_user[user], [url], ledger))
    await asyncio.gather(*(p.connect() for p in peers))
    loop = asyncio.get_running_loop()
    stop_at: list[float] = [loop.time() + 3600]

    async def steady(peer: Peer, conversation_id: int) -> None:
        n = 0
        while loop.time() < stop_at[0]:
            item = ledger.plan(conversation_id, f"{peer.user_id}:{n}")
            n += 1
            await peer.deliver([item], deadline=loop.time() + 60, pause=SEND_PAUSE)

    probes: list[tuple[float, Any]] = []  # (sent at, outgoing)
    prober, watcher = peers[0], peers[1]
    probe_conversation = pairs[0][0]

    async def probe() -> None:
        n = 0
        while loop.time() < stop_at[0]:
            item = ledger.plan(probe_conversation, f"probe {n}")
            n += 1
            sent = time.monotonic()
            await prober.deliver([item], deadline=loop.time() + 60)
            probes.append((sent, item))
            await asyncio.sleep(PROBE_PAUSE)

    tasks = [asyncio.create_task(steady(peer, pairs[i // 2][0])) for i, peer in enumerate(peers[2:], start=2)]
    tasks.append(asyncio.create_task(probe()))
    await asyncio.sleep(3)  # steady state
    old_port = sentinels.master_address()[1]
    acked_before = len(ledger.acked())
    killed = await asyncio.to_thread(sentinels.kill_master)
    promoted = await asyncio.to_thread(sentinels.wait_promoted, old_port)

    def live_again() -> float | None:
        for sent, item in probes:
            shown = ledger.first_shown.get((watcher.user_id, item.ack["id"])) if item.ack else None
            if sent > killed and shown == "live":
                return sent - killed
        return None

    await ledger.until(lambda: live_again() is not None, 30)
    recovered = live_again()
    stayed = [p for p in peers if p.connected and p.reconnects == 0]
    told_at: float | None = None
    if await ledger.until(lambda: all(p.sync_required >= 1 for p in stayed), 30):
        told_at = time.monotonic() - killed
    acked_in_failover = len(ledger.acked()) - acked_before
    await asyncio.sleep(3)  # the exchange goes on after the failover
    stop_at[0] = loop.time()
    await asyncio.gather(*tasks)
    for peer in peers:
        await (peer.sync() if peer.connected else peer.reconnect())
    await asyncio.gather(*(p.close() for p in peers))
    members = {c: [a, b] for c, a, b in pairs}
    counts = await asyncio.to_thread(check_exactly_once, ledger, members, db_reader=stored_messages)
    return {
        "promotion_s": promoted - killed,
        "live_again_s": recovered,
        "all_told_to_sync_s": told_at,
        "sockets_told": sum(1 for p in peers if p.sync_required),
        "sockets": len(peers),
        "acked_during_failover": acked_in_failover,
        **counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    target = Target(db_name="hc_bench_failover", redis_url="redis://127.0.0.1:6379/11", prefix="hcfail")
    with tempfile.TemporaryDirectory(prefix="hc-failover-") as tmp_name:
        tmp = Path(tmp_name)
        _source, revision = export_source(None, tmp)
        env = setup_django(target, tmp)
        from tests.sentinel import SentinelSet

        pairs = seed_pairs(args.pairs, TAG)
        users_a = [a for _, a, _ in pairs]
        users_b = [b for _, _, b in pairs]
        phones = {**dict(zip(users_a, [phone(TAG, i) for i in range(args.pairs)], strict=True))}
        phones.update(dict(zip(users_b, [phone(TAG + 1, i) for i in range(args.pairs)], strict=True)))
        tokens_by_user = dict(zip(phones, tokens(phones.values()), strict=True))
        close_django()
        results = []
        busy = wait_for_quiet(1.0, 10)  # cores busy (of 2) over 3 s before the run
        for number in range(args.rounds):
            seed_pairs(args.pairs, TAG)  # the same conversations, last round's messages erased
            close_django()
            (tmp / f"sentinel-{number}").mkdir()
            sentinels = SentinelSet(tmp / f"sentinel-{number}")
            sentinels.start()
            senv = server_env(env, sentinels.env(db=0))
            servers = []
            try:
                for index in range(2):
                    port = free_port()
                    proc = spawn(uvicorn_args(port), senv, tmp / f"server-{number}-{index}.log")
                    wait_healthy(port, proc)
                    servers.append((port, proc))
                urls = [f"ws://127.0.0.1:{port}/ws/v1/" for port, _ in servers]
                result = asyncio.run(one_round(sentinels, urls, pairs, tokens_by_user))
                log(f"round {number + 1}: {result}")
                results.append(result)
            finally:
                for _, proc in servers:
                    stop(proc)
                sentinels.stop()
                close_django()

    def summary(key: str) -> str:
        values = [r[key] for r in results if r[key] is not None]
        if not values:
            return "-"
        return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"

    print(f"# bench/failover.py at {revision}: {args.pairs} pairs x 2 sockets on 2 server processes,")
    print(f"# {args.rounds} rounds; {busy:.2f} cores busy before the run (a shared, loaded machine)")
    print(f"Sentinel promotion after kill -9 of the master : {summary('promotion_s')}")
    print(f"time to recover (first live delivery again)   : {summary('live_again_s')}")
    print(f"every open socket told sync.required          : {summary('all_told_to_sync_s')}")
    lost = sum(r["acked"] - r["stored"] for r in results)
    print(
        f"messages acked {sum(r['acked'] for r in results)}, stored {sum(r['stored'] for r in results)}, "
        f"acked during failovers {sum(r['acked_during_failover'] for r in results)}, lost {lost}, "
        f"duplicated 0 (checked: each acked client_id stored once, every view equals the rows)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
