"""Idle sockets: memory per authenticated idle socket, against the bare relay.

``flock /tmp/hc-bench.lock python bench/idle.py [--sockets 10000] [--idle 30] [--ws websockets]``
(from the repository root; PostgreSQL on 127.0.0.1:5432 as ``postgres`` and Redis on
127.0.0.1:6379).

1. Seeds ``--sockets`` users in ``hc_perf_bench`` (one ``INSERT … SELECT``) and mints a
   development token for each.
2. Starts the real server (uvicorn, one process, ``--ws`` implementation), warms it up with
   ``--warmup`` sockets opened and closed, and samples its RSS.
3. ``bench/swarm.py`` (its own process) opens every socket with an ``Authorization`` header and
   waits for each ``ready``. RSS is sampled again once the sockets are open, then after ``--idle``
   seconds (at least one presence heartbeat and one WebSocket ping interval): every socket must
   still be open, and every connection's presence entry in Redis must have been refreshed by a
   heartbeat after the last socket opened.
4. The same sockets against ``bench/relay.py`` (no auth): its RSS per socket.

RSS per idle socket = (RSS after the idle period - RSS after the warm-up) / sockets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    WS_IMPLEMENTATIONS,
    Relay,
    Server,
    Swarm,
    Target,
    clear_redis,
    close_django,
    export_source,
    log,
    print_table,
    raise_fd_limit,
    seed_users,
    setup_django,
    tokens,
    wait_for_quiet,
)

KIB = 1024


def write_sockets(path: Path, toks: list[str | None]) -> None:
    path.write_text(json.dumps({"sockets": [{"token": t, "room": i} for i, t in enumerate(toks)]}))


def presence_refreshed(target: Target, user_ids: list[int], after: float, ttl: float) -> dict[str, int]:
    """Connections whose presence expiry was pushed past ``after + ttl`` (i.e. refreshed by a
    heartbeat sent after ``after``), and connections registered at all."""
    import redis

    client = redis.Redis.from_url(target.redis_url)
    slots = max(1, int(os.environ.get("HEALTHCHAT_PRESENCE_KEY_SLOTS", "1")))  # messaging.presence
    try:
        pipe = client.pipeline(transaction=False)
        for uid in user_ids:
            pipe.zrange(f"{target.prefix}:presence:{{u{uid % slots}}}:{uid}", 0, -1, withscores=True)
        registered = refreshed = 0
        for entries in pipe.execute():
            for _member, score in entries:
                registered += 1
                refreshed += score > after + ttl
        return {"registered": registered, "refreshed": refreshed}
    finally:
        client.close()


def take_snapshot(server: Server, tmp: Path) -> None:
    import os
    import signal

    n = len(list(tmp.glob("snap-*.done")))
    os.kill(server.serving_pids()[0], signal.SIGUSR1)
    deadline = time.monotonic() + 600
    while not (tmp / f"snap-{n}.done").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("no tracemalloc snapshot")
        time.sleep(0.5)


def compare_snapshots(tmp: Path, sockets: int, top: int = 30) -> dict[str, Any]:
    """What the sockets added between the two snapshots: by source line, and live objects by type."""
    import pickle

    with (tmp / "snap-0.pickle").open("rb") as fh:
        before = pickle.load(fh)
    with (tmp / "snap-1.pickle").open("rb") as fh:
        after = pickle.load(fh)
    stats = after["snapshot"].compare_to(before["snapshot"], "lineno")
    traced = sum(s.size_diff for s in stats)
    lines = [
        {
            "where": str(s.traceback[0]),
            "bytes_per_socket": round(s.size_diff / sockets, 1),
            "blocks_per_socket": round(s.count_diff / sockets, 2),
        }
        for s in stats[:top]
    ]
    by_file: dict[str, int] = {}
    for s in stats:
        name = s.traceback[0].filename
        if "site-packages/" in name:
            key = name.split("site-packages/")[-1].split("/")[0]
        else:
            parts = name.split("/")
            key = parts[-2] if len(parts) > 1 else name
        by_file[key] = by_file.get(key, 0) + s.size_diff
    types = after["types"].copy()
    types.subtract(before["types"])
    report = {
        "traced_bytes_per_socket": round(traced / sockets),
        "by_package_bytes_per_socket": {
            k: round(v / sockets) for k, v in sorted(by_file.items(), key=lambda kv: -kv[1])[:15]
        },
        "top_lines": lines,
        "objects_per_socket": {
            k: round(v / sockets, 2) for k, v in types.most_common(40) if v / sockets >= 0.5
        },
    }
    for line in lines:
        log(f"{line['bytes_per_socket']:>9} B {line['blocks_per_socket']:>6} blk  {line['where']}")
    log(json.dumps(report["by_package_bytes_per_socket"]))
    log(json.dumps(report["objects_per_socket"]))
    return report


def measure(
    name: str,
    target_proc: Server | Relay,
    url: str,
    sockets_file: Path,
    warm_file: Path | None,
    tmp: Path,
    args: argparse.Namespace,
    on_open: Any = None,
    snapshot: Any = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    swarm = Swarm(tmp / f"swarm-{name}.log")
    try:
        if warm_file is not None:
            out["warmup"] = swarm.command(
                300, cmd="open", url=url, sockets_file=str(warm_file), compression=args.compression
            )
            swarm.command(120, cmd="close")
            time.sleep(2.0)
        if snapshot is not None:
            snapshot()
        rss0 = target_proc.rss()
        cpu0 = target_proc.cpu()
        out["open"] = opened = swarm.command(
            1800, cmd="open", url=url, sockets_file=str(sockets_file), compression=args.compression
        )
        log(f"[{name}] {opened}")
        t_open = time.time()
        time.sleep(args.settle)
        rss1 = target_proc.rss()
        cpu1 = target_proc.cpu()
        time.sleep(max(0.0, args.idle - args.settle))
        rss2 = target_proc.rss()
        cpu2 = target_proc.cpu()
        if snapshot is not None:
            snapshot()
        status = swarm.command(60, cmd="status")
        n = max(1, int(opened["open"]))
        out["idle"] = {
            "sockets": int(opened["open"]),
            "failed": opened["failed"],
            "open_after_idle": status["open"],
            "closes": status["closes"],
            "idle_s": args.idle,
            "rss_before_mib": round(rss0 / 2**20, 1),
            "rss_open_mib": round(rss1 / 2**20, 1),
            "rss_after_idle_mib": round(rss2 / 2**20, 1),
            "rss_per_socket_kib_open": round((rss1 - rss0) / n / KIB, 2),
            "rss_per_socket_kib": round((rss2 - rss0) / n / KIB, 2),
            "rss_per_socket_bytes": round((rss2 - rss0) / n),
            "connect_cpu_ms_per_socket": round((cpu1 - cpu0) / n * 1000, 3),
            "idle_cpu_cores": round((cpu2 - cpu1) / max(1e-9, args.idle - args.settle), 4),
        }
        if on_open is not None:
            out["idle"].update(on_open(t_open))
        log(f"[{name}] {out['idle']}")
        swarm.command(600, cmd="close")
    finally:
        swarm.quit()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle (≥ one heartbeat interval)")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds after opening before the first sample"
    )
    parser.add_argument("--warmup", type=int, default=200, help="sockets opened and closed before measuring")
    parser.add_argument(
        "--ws", choices=WS_IMPLEMENTATIONS, default="lean", help="uvicorn --ws (lean: as the Dockerfile)"
    )
    parser.add_argument("--db-name", default=Target.db_name)
    parser.add_argument("--redis-url", default=Target.redis_url)
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument(
        "--compression",
        action="store_true",
        help="the clients offer permessage-deflate, as browsers do (the server accepts it: uvicorn's default)",
    )
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="extra server setting"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="analysis: run the server under tracemalloc (bench/traceboot.py), print what a socket holds",
    )
    parser.add_argument("--rev", help="run the server from this commit (git archive), not the working tree")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    target = Target(db_name=args.db_name, redis_url=args.redis_url)
    raise_fd_limit(args.sockets + args.warmup)
    tmp = Path(tempfile.mkdtemp(prefix="hc-idle-"))
    log(f"work files in {tmp}")
    source, rev = export_source(args.rev, tmp)
    _, _, env = setup_django(target, tmp)
    from django.conf import settings

    t0 = time.perf_counter()
    users = seed_users(args.sockets + args.warmup, tag=7)
    seeded = time.perf_counter() - t0
    toks = tokens(p for _, p in users)
    minted = time.perf_counter() - t0 - seeded
    log(f"{len(users)} users seeded in {seeded:.1f} s, tokens minted in {minted:.1f} s")
    close_django()
    clear_redis(target)
    write_sockets(tmp / "warm.json", list(toks[: args.warmup]))
    write_sockets(tmp / "sockets.json", list(toks[args.warmup :]))
    write_sockets(tmp / "relay.json", [None] * args.sockets)
    write_sockets(tmp / "relay-warm.json", [None] * args.warmup)

    extra = dict(item.split("=", 1) for item in args.server_env)
    results: dict[str, Any] = {
        "revision": rev,
        "sockets": args.sockets,
        "ws": args.ws,
        "compression": args.compression,
        "server_env": extra,
        "seed_s": round(seeded, 2),
        "tokens_s": round(minted, 2),
    }
    results["busy_cores_at_start"] = wait_for_quiet(0.5, args.quiet_wait)
    boot = None
    if args.tracemalloc:
        boot = [sys.executable, str(Path(__file__).with_name("traceboot.py"))]
        extra["HC_TRACE_DIR"] = str(tmp)
    server = Server(env, tmp / "server.log", ws=args.ws, extra_env=extra, boot=boot, source=source)
    server.start(timeout=600 if args.tracemalloc else 60)
    ttl = float(extra.get("HEALTHCHAT_PRESENCE_TTL", settings.HEALTHCHAT_PRESENCE_TTL))
    heartbeat = float(extra.get("HEALTHCHAT_PRESENCE_HEARTBEAT", settings.HEALTHCHAT_PRESENCE_HEARTBEAT))
    if args.idle < heartbeat + args.settle:
        log(f"--idle {args.idle} is shorter than one heartbeat ({heartbeat} s) + settle: raised")
        args.idle = heartbeat + args.settle + 2
    ids = [uid for uid, _ in users[args.warmup :]]
    try:
        results["healthchat"] = measure(
            "healthchat",
            server,
            server.ws_url,
            tmp / "sockets.json",
            tmp / "warm.json",
            tmp,
            args,
            on_open=lambda t_open: {"presence": presence_refreshed(target, ids, t_open, ttl)},
            snapshot=(lambda: take_snapshot(server, tmp)) if args.tracemalloc else None,
        )
        if args.tracemalloc:
            results["tracemalloc"] = compare_snapshots(tmp, int(results["healthchat"]["idle"]["sockets"]))
    finally:
        server.stop()
    results["healthchat"]["server_log"] = server.log_counts()
    results["presence_ttl_s"], results["heartbeat_s"] = ttl, heartbeat

    if not args.skip_relay:
        results["busy_cores_before_relay"] = wait_for_quiet(0.5, args.quiet_wait)
        relay = Relay(env, tmp / "relay.log", seconds=args.idle + 3600)
        try:
            results["relay"] = measure(
                "relay", relay, relay.ws_url, tmp / "relay.json", tmp / "relay-warm.json", tmp, args
            )
        finally:
            relay.stop()

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    ours = results["healthchat"]["idle"]
    print(
        f"\nrevision {results['revision']}: {args.sockets} idle sockets, --ws {args.ws}, {args.idle:g} s idle"
    )
    rows: list[tuple[str, Any, Any]] = []
    theirs = results.get("relay", {}).get("idle", {})
    for label, key in (
        ("sockets open after the idle period", "open_after_idle"),
        ("RSS per idle socket KiB (after idle)", "rss_per_socket_kib"),
        ("RSS per idle socket KiB (just opened)", "rss_per_socket_kib_open"),
        ("RSS after idle MiB", "rss_after_idle_mib"),
        ("connect CPU ms per socket", "connect_cpu_ms_per_socket"),
        ("idle CPU (cores)", "idle_cpu_cores"),
    ):
        rows.append((label, ours.get(key), theirs.get(key)))
    print_table(rows)
    presence = ours.get("presence", {})
    print(
        f"presence: {presence.get('registered')} connections registered, {presence.get('refreshed')} "
        f"refreshed by a heartbeat; closes {ours['closes']}; server log {results['healthchat']['server_log']}"
    )
    ok = ours["open_after_idle"] == args.sockets and presence.get("refreshed") == args.sockets
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
