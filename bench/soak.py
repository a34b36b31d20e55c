"""Soak: 1,000 sockets with steady traffic for minutes; zero loss, zero duplicates, flat memory.

``python bench/soak.py [--minutes 10] [--sockets 1000] [--rate 1.0]`` (from the repository root,
venv active; PostgreSQL on 127.0.0.1:5432 as ``postgres`` and Redis on 127.0.0.1:6379). Heavy:
run it under ``flock /tmp/hc-bench.lock`` on a shared machine.

1. Prepares its own database ``hc_soak`` (``--db-name``; created, migrated, ``--sockets / 2``
   patient/doctor pairs with a direct conversation each, earlier messages truncated) and clears
   its keys (prefix ``hcsoak``) in Redis db 2: the messaging benchmark's ``hc_bench`` is untouched.
2. Starts one real server process as ``bench/messaging.py`` does (uvicorn, uvloop, httptools,
   ``--ws websockets-sansio`` unless ``--ws`` says otherwise; working tree or ``--rev``).
3. Drives it with ``bench/loadgen.py``: every socket authenticated, then every sender sends
   ``--rate`` messages/s to its peer (open loop; 500 pairs x 1/s = 500 messages/s) for
   ``--minutes``, in one continuous phase. Every ``--report-every`` seconds it prints delivered/s
   and send->receive p50/p99 over the last interval, the server's RSS, and lost / duplicated so
   far (lost: acked longer than the grace period ago and never received; duplicated: received
   twice; unacked: sent longer than the grace period ago and not acked).
4. At the end every acked and received ``client_id`` is looked up in ``messaging_message``
   (acked or received but not stored, stored twice), every conversation is checked for ``seq``
   gaps, and the memory slope is reported: the server's mean RSS in the first minute against the
   last minute, and a least-squares slope (MiB/min) after the first minute. Exit status 1 when
   anything was lost, duplicated or never acked.

Tokens are valid for 4 hours (``--minutes`` up to 230).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import (
    LoadGenProcess,
    Sample,
    Target,
    clear_redis,
    free_port,
    log,
    pg_port,
    proc_cpu,
    proc_rss,
    raise_fd_limit,
    seed,
    server_log_counts,
    setup_django,
    spawn,
    stop,
    uvicorn_args,
    verify_phase,
    verify_sequences,
    wait_for_quiet,
    wait_healthy,
    write_pairs,
)

MIB = 2**20


class RssSampler(threading.Thread):
    """The server's RSS (and CPU) every ``every`` seconds, with the time since ``t0``."""

    def __init__(self, pid: int, t0: float, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.t0 = t0
        self.every = every
        self.samples: list[tuple[float, int, float]] = []  # (seconds, rss bytes, cpu seconds)
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.samples.append((time.monotonic() - self.t0, proc_rss(self.pid), proc_cpu(self.pid)))
            except OSError:
                return
            self.halt.wait(self.every)

    def latest_mib(self) -> float:
        return round(self.samples[-1][1] / MIB, 1) if self.samples else 0.0


def mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) in MiB per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return None
    return round(sum((x - mx) * (y - my) for x, y in points) / var * 60, 3)


def memory_report(samples: list[tuple[float, int, float]], total_s: float) -> dict[str, Any]:
    mib = [(t, rss / MIB) for t, rss, _ in samples]
    first = [v for t, v in mib if t < 60]
    last = [v for t, v in mib if t >= total_s - 60]
    after_first = [(t, v) for t, v in mib if t >= 60]
    cpu = [(t, c) for t, _, c in samples]
    first_mean, last_mean = mean(first), mean(last)
    return {
        "rss_first_minute_mib": first_mean,
        "rss_last_minute_mib": last_mean,
        "rss_change_mib": None
        if first_mean is None or last_mean is None
        else round(last_mean - first_mean, 1),
        "rss_max_mib": round(max(v for _, v in mib), 1) if mib else None,
        "rss_slope_mib_per_min_after_first_minute": slope_per_minute(after_first),
        "server_cpu_cores": round((cpu[-1][1] - cpu[0][1]) / max(1e-9, cpu[-1][0] - cpu[0][0]), 2)
        if len(cpu) > 1
        else None,
        "samples": len(mib),
    }


def progress_line(progress: dict[str, Any], rss_mib: float) -> str:
    latency = progress["latency_ms"]
    return (
        f"[{progress['t'] / 60:5.1f} min] {progress['delivered_per_s']:7.1f} delivered/s"
        f"  p50 {latency['p50']} ms  p99 {latency['p99']} ms  server RSS {rss_mib} MiB"
        f"  lost {progress['lost_so_far']}  dup {progress['duplicated_so_far']}"
        f"  unacked {progress['unacked_overdue']}  errors {sum(progress['errors'].values())}"
        f"  closed {sum(progress.get('unexpected_closes', {}).values())}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sockets", type=int, default=1000, help="sockets (pairs = sockets / 2)")
    parser.add_argument("--rate", type=float, default=1.0, help="messages/s per sender")
    parser.add_argument("--report-every", type=float, default=30.0, help="seconds between progress lines")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to wait for stragglers")
    parser.add_argument("--body-bytes", type=int, default=64)
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="wait up to this long for an idle machine"
    )
    parser.add_argument(
        "--rev", help="soak this commit (exported with git archive) instead of the working tree"
    )
    parser.add_argument(
        "--ws",
        default="websockets-sansio",
        choices=[
            "websockets",
            "websockets-sansio",
            "wsproto",
            "core.ws_protocol:LeanWebSocketProtocol",
        ],
    )
    parser.add_argument("--db-name", default="hc_soak")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--prefix", default="hcsoak")
    parser.add_argument("--json", dest="json_out", help="also write every figure to this file")
    parser.add_argument(
        "--db-stats",
        action="store_true",
        help="each progress line also names PostgreSQL's checkpoints, autovacuum runs, table and index "
        "sizes and the send statement's slowest run so far (bench/dbstats.py)",
    )
    parser.add_argument(
        "--private-services",
        action="store_true",
        help="a throwaway PostgreSQL (pg_stat_statements, checkpoints and autovacuum logged) and Redis",
    )
    import dbstats  # (imported where used, as the rest of this file does)

    dbstats.add_pg_setting_argument(parser)
    args = parser.parse_args()
    with contextlib.ExitStack() as services:
        if args.private_services:
            import dbstats

            os.environ["BENCH_PG_PORT"] = str(
                services.enter_context(dbstats.private_postgres(dbstats.settings_options(args.pg_setting)))
            )
            args.redis_url = f"redis://127.0.0.1:{services.enter_context(dbstats.private_redis())}/2"
        return run(args)


def run(args: argparse.Namespace) -> int:
    pairs_count = max(1, args.sockets // 2)
    target = Target(db_name=args.db_name, redis_url=args.redis_url, prefix=args.prefix)

    raise_fd_limit(args.sockets)
    tmp = Path(tempfile.mkdtemp(prefix="hc-soak-"))
    source, revision, env = setup_django(target, tmp, args.rev, False)
    log(f"work files in {tmp}")
    rows = seed(pairs_count)
    clear_redis(target)
    write_pairs(rows, tmp / "pairs.json", with_tokens=True)
    log(f"{pairs_count} pairs ready")
    stats = None
    if args.db_stats:
        import dbstats

        stats = dbstats.DbStats(
            f"host=127.0.0.1 port={pg_port()} user=postgres", args.db_name, args.redis_url, pg_port()
        )
    results: dict[str, Any] = {
        "revision": revision,
        "sockets": 2 * pairs_count,
        "offered_per_s": args.rate * pairs_count,
        "minutes": args.minutes,
        "report_every_s": args.report_every,
        "busy_cores_at_start": wait_for_quiet(0.3, args.quiet_wait),
    }
    port = free_port()
    server = spawn(uvicorn_args(port, ws=args.ws), env, tmp / "server.log", cwd=source)
    gen: LoadGenProcess | None = None
    sampler: RssSampler | None = None
    progress: list[dict[str, Any]] = []
    total_s = 0.0
    try:
        wait_healthy(port, server)
        gen = LoadGenProcess(
            f"ws://127.0.0.1:{port}/ws/v1/", tmp / "pairs.json", tmp / "loadgen.log", args.body_bytes
        )
        results["warmup"] = gen.command(120, cmd="warmup", seconds=2.0)
        results["connect"] = connected = gen.command(600, cmd="connect")
        log(f"connected: {connected}")
        results["rss_idle_mib"] = round(proc_rss(server.pid) / MIB, 1)
        t0 = time.monotonic()
        before = Sample(server.pid, gen.proc.pid)
        sampler = RssSampler(server.pid, t0)
        sampler.start()
        rss = sampler

        def report(line: dict[str, Any]) -> None:
            line["server_rss_mib"] = rss.latest_mib()
            progress.append(line)
            print(progress_line(line, line["server_rss_mib"]), flush=True)
            if stats is not None:
                import dbstats

                line["db"] = dbstats.soak_sample(stats)
                print(f"           database: {json.dumps(line['db'])}", flush=True)

        results["offered"] = gen.command(
            args.report_every + args.grace + 120,
            on_progress=report,
            cmd="offered",
            seconds=args.minutes * 60,
            rate=args.rate,
            grace=args.grace,
            dump=str(tmp / "offered.json"),
            progress_every=args.report_every,
        )
        total_s = time.monotonic() - t0
        results["resources"] = Sample(server.pid, gen.proc.pid).since(before)
        sampler.halt.set()
        sampler.join(10)
        results["close"] = gen.command(120, cmd="close")
    finally:
        if sampler is not None:
            sampler.halt.set()
        if gen is not None:
            gen.quit()
        stop(server)

    from django.db import connection

    connection.close()
    offered = results["offered"]
    db = verify_phase(tmp / "offered.json")
    sequences = verify_sequences([r["conversation_id"] for r in rows])
    intervals = [p for p in progress if p["t"] <= args.minutes * 60 + 1]
    p99s = [p["latency_ms"]["p99"] for p in intervals if p["latency_ms"]["p99"] is not None]
    results.update(
        {
            "progress": progress,
            "delivered_per_s_lowest_interval": min((p["delivered_per_s"] for p in intervals), default=None),
            "p99_ms_worst_interval": max(p99s) if p99s else None,
            "db": db,
            "sequences": sequences,
            "memory": memory_report(sampler.samples if sampler else [], total_s),
            "server_log": server_log_counts(tmp / "server.log"),
        }
    )
    lost = offered["lost"] + db["acked_not_in_db"] + db["received_not_in_db"]
    duplicated = offered["duplicated"] + db["duplicate_rows"]
    results["verdict"] = {
        "lost": lost,
        "duplicated": duplicated,
        "seq_gaps": sequences["conversations_with_gaps"],
        "unacked": offered["unacked"],
        "ok": lost == 0
        and duplicated == 0
        and offered["unacked"] == 0
        and sequences["conversations_with_gaps"] == 0,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    memory = results["memory"]
    print()
    print(
        f"revision {revision}: {results['sockets']} sockets, {results['offered_per_s']:g} msgs/s offered, "
        f"{args.minutes:g} min, logs in {tmp}"
    )
    latency = offered["latency_ms"]
    print(
        f"delivered: {offered['delivered']:,} of {offered['sent']:,} sent, {offered['msgs_per_s']}/s "
        f"(lowest {args.report_every:g} s interval {results['delivered_per_s_lowest_interval']}/s); "
        f"p50 {latency['p50']} ms, p99 {latency['p99']} ms over the run "
        f"(worst interval p99 {results['p99_ms_worst_interval']} ms)"
    )
    print(
        f"lost {lost}, duplicated {duplicated}, unacked {offered['unacked']}, errors {offered['errors']}; "
        f"database: {db}; sequences: {sequences}"
    )
    print(
        f"server RSS: idle {results['rss_idle_mib']} MiB, first minute {memory['rss_first_minute_mib']} MiB, "
        f"last minute {memory['rss_last_minute_mib']} MiB (change {memory['rss_change_mib']} MiB), "
        f"max {memory['rss_max_mib']} MiB, slope after the first minute "
        f"{memory['rss_slope_mib_per_min_after_first_minute']} MiB/min"
    )
    usage = results.get("resources", {})
    # PostgreSQL's backends are recycled every DATABASE_CONN_MAX_AGE (60 s): one that exited
    # before the last /proc sample is not counted, so over minutes only the total is reliable.
    print(
        f"cores: server {usage.get('server_cores')} "
        f"({round(usage.get('server_cpu_s', 0) / max(1, offered['delivered']) * 1000, 2)} ms of CPU per message), "
        f"load generator {usage.get('loadgen_cores')}, whole machine {usage.get('machine_busy_cores')}"
    )
    print(f"server log: {results['server_log']}; verdict: {'PASS' if results['verdict']['ok'] else 'FAIL'}")
    return 0 if results["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
