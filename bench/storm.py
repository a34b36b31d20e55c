"""Connection storm: ``--sockets`` connected clients lose their server (restart) and all reconnect
and ``sync`` at once. Time until every one has its ``sync.done`` again, and how the database and
Redis answer meanwhile.

``flock /tmp/hc-bench.lock python bench/storm.py [--sockets 1000] [--restart term|kill]
[--policies hint,naive]`` (from the repository root; PostgreSQL on 127.0.0.1:5432 as
``postgres``, Redis on 127.0.0.1:6379).

1. Seeds ``--sockets / 2`` direct conversations (two users each) in ``hc_perf_bench``.
2. Starts the real server (uvicorn, one process, fixed port). ``bench/swarm.py`` (its own
   process) connects every socket and syncs it once (each keeps its cursor); then one side of
   every conversation sends ``--messages`` messages, so each socket has something to ``sync``.
3. The swarm is armed (every socket reconnects when its connection drops, following the policy,
   then ``sync``s from its cursor until ``more`` is false), and the server is restarted:
   ``term`` = SIGTERM (uvicorn closes the sockets with 1012) then a new process on the same port;
   ``kill`` = SIGKILL then a new process. Measured from the signal: time until every socket has
   synced again (target ≤ 10 s), percentiles, connection attempts, ``server_busy`` refusals.
4. Meanwhile a probe thread runs a PostgreSQL query (``SELECT 1`` and a membership lookup) and a
   Redis ``PING`` every 100 ms: their latency before and during the storm (responsiveness).
5. Policies: ``hint`` follows docs/protocol.md#reconnecting (the ``ready`` frame's
   ``reconnect`` range, ``retry_after_ms``, backoff with jitter); ``naive`` reconnects at once
   and retries every 100 ms.
6. The relay (``bench/relay.py``) is restarted the same way with the same sockets (no auth, no
   sync): the bare cost of reconnecting them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
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
    print_table,
    raise_fd_limit,
    seed_pairs,
    setup_django,
    start_py_spy,
    stop,
    tokens,
    wait_for_quiet,
    wait_port,
)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Probe(threading.Thread):
    """PostgreSQL and Redis round trips every ``interval`` s, each with its latency (ms)."""

    def __init__(self, target: Target, user_id: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.target, self.user_id, self.interval = target, user_id, interval
        self.samples: list[tuple[float, float | None, float | None]] = []  # (t, pg ms, redis ms)
        self.running = True

    def run(self) -> None:
        import psycopg
        import redis

        pg = psycopg.connect(self.target.database_url, autocommit=True)
        rd = redis.Redis.from_url(self.target.redis_url, socket_timeout=10)
        while self.running:
            t = time.monotonic()
            pg_ms = redis_ms = None
            try:
                pg.execute("SELECT 1").fetchone()
                pg.execute(
                    "SELECT count(*) FROM messaging_membership WHERE user_id = %s", [self.user_id]
                ).fetchone()
                pg_ms = (time.monotonic() - t) * 1000
            except Exception as exc:  # counted as unanswered
                log(f"probe: PostgreSQL {exc!r}")
            t2 = time.monotonic()
            try:
                rd.ping()
                redis_ms = (time.monotonic() - t2) * 1000
            except Exception as exc:
                log(f"probe: Redis {exc!r}")
            self.samples.append((t, pg_ms, redis_ms))
            time.sleep(max(0.0, self.interval - (time.monotonic() - t)))
        pg.close()
        rd.close()

    def window(self, start: float, end: float) -> dict[str, Any]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        pg = [s[1] for s in inside if s[1] is not None]
        rd = [s[2] for s in inside if s[2] is not None]

        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 2)

        return {
            "samples": len(inside),
            "pg_ms": {
                "p50": r(percentile(pg, 50)),
                "p99": r(percentile(pg, 99)),
                "max": r(max(pg, default=None)),
            },
            "redis_ms": {
                "p50": r(percentile(rd, 50)),
                "p99": r(percentile(rd, 99)),
                "max": r(max(rd, default=None)),
            },
            "unanswered": sum(1 for s in inside if s[1] is None or s[2] is None),
        }


def storm_once(
    name: str,
    restart: Any,
    swarm: Swarm,
    probe: Probe,
    policy: str,
    args: argparse.Namespace,
    cpu: Any,
    sync: bool,
) -> dict[str, Any]:
    before = time.monotonic()
    time.sleep(2.0)
    swarm.send(cmd="storm", policy=policy, give_up_s=args.timeout, sync=sync)
    swarm.answer(30, "storm (armed)")
    svc = ServicesCpu()
    t0 = time.monotonic()
    listening_after = restart()
    result = swarm.answer(args.timeout + 60, "storm")
    t1 = time.monotonic()
    result["restart_listening_s"] = round(listening_after, 3)
    result["server_cpu_s"] = round(cpu(), 2)  # the new process, from its start (boot included)
    result["pg_redis_cpu_s"] = round(svc.since(), 2)
    result["probe_before"] = probe.window(before, t0)
    result["probe_during"] = probe.window(t0, t1)
    log(f"[{name}/{policy}] {json.dumps(result)}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2, help="messages per conversation to sync")
    parser.add_argument("--restart", choices=["term", "kill"], default="term")
    parser.add_argument("--workers", type=int, default=1, help="server processes (uvicorn --workers)")
    parser.add_argument("--policies", default="hint,naive", help="comma-separated: hint, naive")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a storm after this long")
    parser.add_argument(
        "--ws", choices=WS_IMPLEMENTATIONS, default="lean", help="uvicorn --ws (lean: as the Dockerfile)"
    )
    parser.add_argument("--rev", help="run the server from this commit (git archive)")
    parser.add_argument("--db-name", default=Target.db_name)
    parser.add_argument("--redis-url", default=Target.redis_url)
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--profile", help="py-spy raw collapsed stacks of the new server process during the first storm"
    )
    parser.add_argument("--profile-mode", choices=["cpu", "gil", "wall"], default="gil")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    target = Target(db_name=args.db_name, redis_url=args.redis_url)
    raise_fd_limit(args.sockets * 2)
    tmp = Path(tempfile.mkdtemp(prefix="hc-storm-"))
    log(f"work files in {tmp}")
    source, rev = export_source(args.rev, tmp)
    _, _, env = setup_django(target, tmp)
    pairs = seed_pairs(args.sockets // 2, tag=3)
    from accounts.models import User

    phones = dict(
        User.objects.filter(pk__in=[u for _, a, b in pairs for u in (a, b)]).values_list("pk", "phone_number")
    )
    specs = []
    for conversation_id, a, b in pairs:
        for uid in (a, b):
            specs.append({"token": None, "room": conversation_id, "user": uid})
    toks = tokens(phones[s["user"]] for s in specs)
    for spec, tok in zip(specs, toks, strict=True):
        spec["token"] = tok
    close_django()
    clear_redis(target)
    (tmp / "sockets.json").write_text(json.dumps({"sockets": specs}))
    (tmp / "relay.json").write_text(
        json.dumps({"sockets": [{"token": None, "room": s["room"]} for s in specs]})
    )
    senders = list(range(0, len(specs), 2))
    extra = dict(item.split("=", 1) for item in args.server_env)
    policies = [p for p in args.policies.split(",") if p]
    results: dict[str, Any] = {
        "revision": rev,
        "sockets": len(specs),
        "messages_per_conversation": args.messages,
        "restart": args.restart,
        "workers": args.workers,
        "server_env": extra,
        "policies": {},
    }
    probe = Probe(target, pairs[0][1])
    probe.start()
    results["busy_cores_at_start"] = wait_for_quiet(0.5, args.quiet_wait)
    sig = signal.SIGTERM if args.restart == "term" else signal.SIGKILL
    server = Server(env, tmp / "server.log", ws=args.ws, workers=args.workers, extra_env=extra, source=source)
    server.start()
    swarm = Swarm(tmp / "swarm.log")
    profiled: list[Any] = []
    try:
        for policy in policies:
            opened = swarm.command(
                900, cmd="open", url=server.ws_url, sockets_file=str(tmp / "sockets.json"), sync=True
            )
            log(f"[healthchat] {opened}")
            sent = swarm.command(300, cmd="send_each", senders=senders, count=args.messages)
            log(f"[healthchat] {sent}")

            def restart() -> float:
                t = time.monotonic()
                server.stop(sig)
                server.start(healthy=False)
                assert server.proc is not None
                if args.profile and not profiled:
                    profiled.append(start_profiler(server.proc.pid, args, tmp))
                wait_port(server.port, server.proc)
                return time.monotonic() - t

            results["policies"][policy] = storm_once(
                "healthchat", restart, swarm, probe, policy, args, server.cpu, sync=True
            )
            results["policies"][policy]["opened_before"] = opened
            swarm.command(300, cmd="close")
            time.sleep(3.0)
    finally:
        swarm.quit()
        server.stop()
        for proc in profiled:
            proc.wait(timeout=120)
    results["server_log"] = server.log_counts()

    if not args.skip_relay:
        relay = Relay(env, tmp / "relay.log", seconds=3600)
        swarm = Swarm(tmp / "swarm-relay.log")
        try:
            swarm.command(600, cmd="open", url=relay.ws_url, sockets_file=str(tmp / "relay.json"))
            results["relay"] = storm_relay(relay, env, tmp, swarm, probe, args, sig)
        finally:
            swarm.quit()
            relay.stop()
    probe.running = False

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(
        f"\nrevision {rev}: {len(specs)} sockets, restart by {args.restart}, {args.messages} messages per "
        f"conversation to sync"
    )
    relay_r = results.get("relay", {})
    for policy, r in results["policies"].items():
        print(f"\npolicy {policy}:")
        print_table(
            [
                (
                    "all sockets synced again, s (from the signal)",
                    r["all_synced_s"],
                    relay_r.get("all_synced_s"),
                ),
                ("p50 synced again, s", r["synced_s"]["p50"], relay_r.get("synced_s", {}).get("p50")),
                ("p99 synced again, s", r["synced_s"]["p99"], relay_r.get("synced_s", {}).get("p99")),
                ("sockets synced", r["synced"], relay_r.get("synced")),
                ("connection attempts", r["connect_attempts"], relay_r.get("connect_attempts")),
                ("server_busy refusals (1013)", r["stats"].get("refused_1013", 0), 0),
                ("restart until listening, s", r["restart_listening_s"], relay_r.get("restart_listening_s")),
                ("new server process CPU-s (boot + storm)", r["server_cpu_s"], relay_r.get("server_cpu_s")),
                ("PostgreSQL + Redis CPU-s during the storm", r["pg_redis_cpu_s"], None),
                ("probe PostgreSQL p99 ms before", r["probe_before"]["pg_ms"]["p99"], None),
                (
                    "probe PostgreSQL p99 / max ms during",
                    r["probe_during"]["pg_ms"]["p99"],
                    r["probe_during"]["pg_ms"]["max"],
                ),
                ("probe Redis p99 ms before", r["probe_before"]["redis_ms"]["p99"], None),
                (
                    "probe Redis p99 / max ms during",
                    r["probe_during"]["redis_ms"]["p99"],
                    r["probe_during"]["redis_ms"]["max"],
                ),
                ("message.new replayed by sync", r.get("message_new_received"), None),
            ],
            names=("healthchat", "relay"),
        )
    print(f"server log: {results['server_log']}")
    return 0


def start_profiler(pid: int, args: argparse.Namespace, tmp: Path) -> Any:
    """py-spy on the new server process from its start, for the storm's give-up time."""
    time.sleep(0.3)  # let the interpreter start before attaching
    return start_py_spy(pid, Path(args.profile).resolve(), args.timeout, args.profile_mode, tmp)


def storm_relay(
    relay: Relay,
    env: dict[str, str],
    tmp: Path,
    swarm: Swarm,
    probe: Probe,
    args: argparse.Namespace,
    sig: int,
) -> dict[str, Any]:
    import subprocess

    from harness import BENCH, spawn

    port = relay.port

    def restart() -> float:
        t = time.monotonic()
        stop(relay.proc, sig)
        relay.proc = spawn(
            [sys.executable, str(BENCH / "relay.py"), "--port", str(port), "--seconds", "3600"],
            env,
            tmp / "relay.log",
        )
        wait_port(port, relay.proc)
        return time.monotonic() - t

    def cpu() -> float:
        try:
            return relay.cpu()
        except (OSError, subprocess.SubprocessError):
            return 0.0

    return storm_once("relay", restart, swarm, probe, "hint", args, cpu, sync=False)


if __name__ == "__main__":
    sys.exit(main())
