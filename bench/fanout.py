"""Group fan-out: messages to a 200-member group whose members are all connected, against the
bare relay fanning the same frame out to the same sockets.

``flock /tmp/hc-bench.lock python bench/fanout.py [--members 200] [--seconds 20] [--workers 2]``
(from the repository root; PostgreSQL on 127.0.0.1:5432 as ``postgres``, Redis on 127.0.0.1:6379).

1. Seeds ``--members`` users and one group conversation with all of them in ``hc_perf_bench``.
2. Starts the real server (uvicorn, ``--workers`` processes sharing the port and Redis).
3. ``bench/swarm.py`` (its own process) connects one socket per member, then:
   - **single**: one member sends ``--single`` messages one after another, each waiting until
     every other member got it: the latency of a lone group message (send → last member);
   - **saturation**: ``--senders`` members each keep ``--window`` messages in flight for
     ``--seconds``: deliveries/s (``message.new`` frames received by members), send → last member
     percentiles, lost (acked, not received by every member) and duplicated.
   Afterwards every acked message is checked in ``messaging_message`` (stored once, no seq gaps).
4. The same against ``bench/relay.py`` (every frame to the 199 other sockets of the room).

``--profile FILE`` records the (first) server process with py-spy during saturation (raw
collapsed stacks, ``--profile-mode gil|cpu|wall``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    WS_IMPLEMENTATIONS,
    Relay,
    Server,
    ServicesCpu,
    Swarm,
    Target,
    clear_redis,
    close_django,
    export_source,
    log,
    machine_busy,
    print_table,
    raise_fd_limit,
    seed_group,
    seed_users,
    setup_django,
    start_py_spy,
    tokens,
    wait_for_quiet,
)

GROUP_NAME = "bench fan-out"


def write_sockets(path: Path, toks: list[str | None], room: int) -> None:
    path.write_text(json.dumps({"sockets": [{"token": t, "room": room} for t in toks]}))


def verify_group(conversation_id: int) -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*), count(DISTINCT client_id), coalesce(max(seq), 0),
                   (SELECT last_seq FROM messaging_conversation WHERE id = %s)
            FROM messaging_message WHERE conversation_id = %s
            """,
            [conversation_id, conversation_id],
        )
        rows, distinct, top, last_seq = cursor.fetchone()
    return {
        "rows": int(rows),
        "duplicate_rows": int(rows) - int(distinct),
        "seq_gaps": int(top) - int(rows) + abs(int(last_seq) - int(top)),
    }


def run(
    name: str,
    target: Server | Relay,
    url: str,
    sockets_file: Path,
    tmp: Path,
    args: argparse.Namespace,
    room: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    swarm = Swarm(tmp / f"swarm-{name}.log")
    try:
        out["open"] = opened = swarm.command(600, cmd="open", url=url, sockets_file=str(sockets_file))
        log(f"[{name}] {opened}")
        if opened["open"] != args.members:
            raise RuntimeError(f"only {opened['open']} of {args.members} sockets opened")
        time.sleep(1.0)
        out["warmup"] = swarm.command(120, cmd="fanout", senders=[0], room=room, count=10)
        out["single"] = swarm.command(600, cmd="fanout", senders=[0], room=room, count=args.single)
        log(f"[{name}] single: {json.dumps(out['single'])}")
        time.sleep(1.0)
        senders = list(range(args.senders))
        cpu0, svc0, t0 = target.cpu(), ServicesCpu(), time.monotonic()
        busy0, client0 = machine_busy(), swarm.cpu()
        profiler = None
        if args.profile and isinstance(target, Server):
            profiler = start_py_spy(
                target.serving_pids()[0], Path(args.profile), args.seconds, args.profile_mode, tmp
            )
        result = swarm.command(
            args.seconds + 120,
            cmd="fanout",
            senders=senders,
            room=room,
            seconds=args.seconds,
            window=args.window,
        )
        wall = time.monotonic() - t0
        cpu, svc = target.cpu() - cpu0, svc0.since()
        busy, client = machine_busy() - busy0, swarm.cpu() - client0
        if profiler is not None:
            profiler.wait(timeout=60)
        deliveries = max(1, int(result["deliveries"]))
        result["server_cpu_s"] = round(cpu, 2)
        result["server_cores"] = round(cpu / wall, 2)
        result["server_cpu_us_per_delivery"] = round(cpu / deliveries * 1e6, 2)
        result["pg_redis_cpu_s"] = round(svc, 2) if isinstance(target, Server) else 0.0
        result["pg_redis_cores"] = round(svc / wall, 2)
        # the rest of the machine: other sessions' processes, kernel work
        result["other_cores"] = round(max(0.0, busy - cpu - svc - client) / wall, 2)
        out["saturation"] = result
        log(f"[{name}] saturation: {json.dumps(result)}")
        out["status"] = swarm.command(60, cmd="status")
        swarm.command(120, cmd="close")
    finally:
        swarm.quit()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--senders", type=int, default=4, help="members sending during saturation")
    parser.add_argument("--window", type=int, default=4, help="messages in flight per sender")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--single", type=int, default=100, help="lone messages for the latency phase")
    parser.add_argument("--workers", type=int, default=1, help="server processes (uvicorn --workers)")
    parser.add_argument(
        "--ws", choices=WS_IMPLEMENTATIONS, default="lean", help="uvicorn --ws (lean: as the Dockerfile)"
    )
    parser.add_argument("--rev", help="run the server from this commit (git archive)")
    parser.add_argument("--db-name", default=Target.db_name)
    parser.add_argument("--redis-url", default=Target.redis_url)
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--profile", help="py-spy raw collapsed stacks of the server during saturation")
    parser.add_argument("--profile-mode", choices=["cpu", "gil", "wall"], default="gil")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    target = Target(db_name=args.db_name, redis_url=args.redis_url)
    raise_fd_limit(args.members * 2)
    tmp = Path(tempfile.mkdtemp(prefix="hc-fanout-"))
    log(f"work files in {tmp}")
    source, rev = export_source(args.rev, tmp)
    _, _, env = setup_django(target, tmp)
    users = seed_users(args.members, tag=5)
    room = seed_group(GROUP_NAME, [uid for uid, _ in users])
    toks = tokens(p for _, p in users)
    close_django()
    clear_redis(target)
    write_sockets(tmp / "sockets.json", list(toks), room)
    write_sockets(tmp / "relay.json", [None] * args.members, room)
    extra = dict(item.split("=", 1) for item in args.server_env)
    # Senders send faster than a person: the per-socket frame rate limit would refuse them.
    extra.setdefault("HEALTHCHAT_WS_RATE", "100000")
    extra.setdefault("HEALTHCHAT_WS_BURST", "100000")
    extra.setdefault("HEALTHCHAT_SEND_LIMIT_PER_MINUTE", "0")  # and the per-user send limit
    results: dict[str, Any] = {
        "revision": rev,
        "members": args.members,
        "senders": args.senders,
        "window": args.window,
        "workers": args.workers,
        "ws": args.ws,
        "group_id": room,
    }
    results["busy_cores_at_start"] = wait_for_quiet(0.5, args.quiet_wait)
    server = Server(env, tmp / "server.log", ws=args.ws, workers=args.workers, extra_env=extra, source=source)
    server.start()
    try:
        results["healthchat"] = run(
            "healthchat", server, server.ws_url, tmp / "sockets.json", tmp, args, room
        )
    finally:
        server.stop()
    results["healthchat"]["server_log"] = server.log_counts()
    results["healthchat"]["db"] = verify_group(room)
    close_django()

    if not args.skip_relay:
        results["busy_cores_before_relay"] = wait_for_quiet(0.5, args.quiet_wait)
        relay = Relay(env, tmp / "relay.log", seconds=3600)
        try:
            results["relay"] = run("relay", relay, relay.ws_url, tmp / "relay.json", tmp, args, room)
        finally:
            relay.stop()

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    ours = results["healthchat"]
    theirs = results.get("relay", {})
    print(
        f"\nrevision {rev}: group of {args.members}, {args.workers} server process(es), --ws {args.ws}, "
        f"{args.senders} senders x window {args.window}, {args.seconds:g} s"
    )
    rows: list[tuple[str, Any, Any]] = []

    def pick(target: dict[str, Any], *path: str) -> Any:
        value: Any = target
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    for label, path in (
        ("saturation deliveries/s", ("saturation", "deliveries_per_s")),
        ("saturation messages/s (all members got it)", ("saturation", "messages_per_s")),
        ("saturation send→last member p50 ms", ("saturation", "last_member_ms", "p50")),
        ("saturation send→last member p99 ms", ("saturation", "last_member_ms", "p99")),
        ("lone message send→last member p50 ms", ("single", "last_member_ms", "p50")),
        ("lone message send→last member p99 ms", ("single", "last_member_ms", "p99")),
        ("lone message send→first member p50 ms", ("single", "first_member_ms_p50")),
        ("server CPU µs per delivery", ("saturation", "server_cpu_us_per_delivery")),
        ("server cores busy", ("saturation", "server_cores")),
        ("client cores busy", ("saturation", "client_cores")),
        ("PostgreSQL + Redis cores busy", ("saturation", "pg_redis_cores")),
        ("other processes' cores", ("saturation", "other_cores")),
        ("lost (saturation)", ("saturation", "lost")),
        ("duplicated (saturation)", ("saturation", "duplicated")),
        ("lost (lone messages)", ("single", "lost")),
        ("duplicated (lone messages)", ("single", "duplicated")),
    ):
        rows.append((label, pick(ours, *path), pick(theirs, *path)))
    print_table(rows)
    print(f"database check: {ours['db']}; server log: {ours['server_log']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
