"""Messaging benchmark: the real stack against the bare relay and the seed's socket.io, with the
same load generator.

``python bench/messaging.py [--sockets 1000] [--seconds 30] [--quick] [--target healthchat relay
socketio socketio-redis] [--loadgen node|python]`` (from the repository root, venv active;
PostgreSQL on 127.0.0.1:5432 as ``postgres`` and Redis on 127.0.0.1:6379; ``make bench-tools``
for the Node parts).

1. Prepares the ``hc_bench`` database (``--db-name``; created and migrated if needed,
   ``--sockets / 2`` patient/doctor pairs with a direct conversation each, earlier messages
   truncated) and clears this benchmark's keys (``--prefix``) in Redis db 2 (``--redis-url``).
   ``--proxy haproxy``: 1, 2 .. ``--workers`` (at most 3) server processes behind HAProxy
   (``deploy/haproxy.cfg``, started by ``tests/haproxy.py``) instead of steps 2-4: the same load
   through HAProxy's port, then msgs/s per process count and the ratio to one process.
2. Starts the real server (``uvicorn healthchat.asgi:application --loop uvloop --http httptools
   --ws websockets-sansio``, one process, ``healthchat.settings.local`` on ``hc_bench`` and Redis db 2,
   development tokens, ``DEBUG`` off unless ``--debug``) from the working tree, or from the commit
   ``--rev`` names (exported with ``git archive``, so edits in progress are not measured).
3. Runs ``bench/loadgen.py`` in its own process: warm-up, ``--sockets`` authenticated idle sockets
   (RSS per idle socket), saturation (every sender keeps ``--window`` messages in flight for
   ``--seconds``), then offered load (every sender sends 1 message/s for ``--seconds``; with
   ``--lead-in`` N, after N seconds of the same load that are checked but not in the latency
   figures: the window then measures the sustained load, not the machine waking from the idle
   pause before it). Server
   CPU comes from ``/proc/<pid>/stat`` around each phase; every acked / received ``client_id``
   is checked against the ``messaging_message`` table, and ``seq`` for gaps.
4. Does the same against each other ``--target`` — ``relay`` (``bench/relay.py``, plain
   ``websockets``), ``socketio`` (``bench/socketio/relay.mjs``, one Node process), ``socketio-redis``
   (``--sio-processes`` Node processes on distinct ports sharing rooms through
   ``@socket.io/redis-adapter``; each sender on one process, its receiver on the next) — and prints
   a table: one column per target, then healthchat's ratio to each (measured in this run).

The load generator (``--loadgen``): ``node`` (default; ``bench/socketio/loadgen.mjs``, speaks
healthchat's and the bare relay's ``/ws/v1/`` frames and socket.io, and checks ``seq`` per
receiving socket) or ``python`` (``bench/loadgen.py``: healthchat and the relay only). Same
commands, phases and JSON answers. ``--pin on`` (default, 2+ cores): the load generator runs
alone on the last core and every server under test on the others (``taskset``); PostgreSQL and
Redis are not pinned.

``--metrics off`` serves with every metric hook a no-op (``bench/metrics_off.py``); ``--metrics
on-off`` (or ``off-on``) runs both servers one after the other in the same run, on the same
database and load, and prints a table: metrics on, off, ratio (issue 21's hot-path budget: the
comparable figure on a shared machine is the server CPU per message).

``--db-stats`` prints, per phase and per message, what PostgreSQL and Redis did
(``bench/dbstats.py``): statements (calls, rows, buffer pages, WAL from ``pg_stat_statements``),
the WAL record types (``pg_waldump``), HOT and other updates per table, Redis commands (``INFO
commandstats``) and the CPU of PostgreSQL's and Redis' processes. These counts hold on a noisy
machine where times do not. ``--private-services`` runs the whole benchmark on a throwaway
PostgreSQL (``pg_stat_statements`` preloaded, durable commits as the machine's server) and Redis
of its own, so that the counts are this run's alone (the machine's PostgreSQL does not preload
``pg_stat_statements``).

Every child runs for a bounded time and is stopped at the end (and dies with this process);
all traffic stays on 127.0.0.1. ``--profile FILE`` records the server with py-spy during the
saturation phase, or the one ``--profile-phase`` names (collapsed stacks; ``pip install py-spy``
into the venv first); ``--perf FILE`` records it with ``perf record`` (flat, 499 Hz: the C
side, the kernel's included) during the same phase. ``bench/profile_table.py`` sorts py-spy's
stacks into components.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import latency_breakdown
from harness import (
    BENCH,
    LoadGenProcess,
    Sample,
    Target,
    clear_redis,
    free_port,
    log,
    node_tools,
    pg_port,
    pin_sets,
    pinned,
    proc_rss,
    raise_fd_limit,
    seed,
    server_log_counts,
    setup_django,
    spawn,
    start_py_spy,
    stop,
    uvicorn_args,
    verify_phase,
    verify_sequences,
    wait_for_quiet,
    wait_healthy,
    wait_port,
    write_pairs,
)

DB_NAME = "hc_bench"
REDIS_URL = "redis://127.0.0.1:6379/2"
PREFIX = "hcbench"


# --- one target -------------------------------------------------------------------------------
def run_target(
    name: str,
    proc: subprocess.Popen[bytes],
    url: str,
    pairs_path: Path,
    tmp: Path,
    args: argparse.Namespace,
    verify: bool,
    protocol: str = "ws",
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "loadgen": args.loadgen}
    gen = LoadGenProcess(
        url,
        pairs_path,
        tmp / f"loadgen-{name}.log",
        args.body_bytes,
        loadgen=args.loadgen,
        protocol=protocol,
        cpus=args.loadgen_cpus,
    )
    phase_timeout = args.seconds + args.grace + 60
    try:
        out["warmup"] = gen.command(120, cmd="warmup", seconds=2.0)
        time.sleep(1.0)
        rss0 = proc_rss(proc.pid)
        out["connect"] = connected = gen.command(600, cmd="connect")
        log(f"[{name}] {connected}")
        time.sleep(args.settle)
        rss1 = proc_rss(proc.pid)
        sockets = max(1, int(connected["sockets"]))
        out["idle"] = {
            "rss_before_mib": round(rss0 / 2**20, 1),
            "rss_after_mib": round(rss1 / 2**20, 1),
            "rss_per_socket_kib": round((rss1 - rss0) / sockets / 1024, 1),
        }
        for phase, extra in (
            ("saturation", {"window": args.window}),
            ("offered", {"rate": 1.0, "lead_in": args.lead_in}),
        ):
            if phase not in args.phases:
                continue
            dump = tmp / f"{name}-{phase}.json"
            # The previous phase's aftermath (PostgreSQL's autovacuum of 100,000 new rows, the
            # server's garbage) is not this phase's load: wait for a quiet machine first.
            settled = wait_for_quiet(0.3, args.quiet_wait) if phase != args.phases[0] else None
            before = Sample(proc.pid, gen.proc.pid)
            counters = args.stats.take() if args.stats is not None and verify else None
            profiler = None
            if (args.profile or args.perf) and verify and phase == args.profile_phase:
                profiler = start_profiler(proc.pid, args, tmp)
            result = gen.command(
                phase_timeout,
                cmd=phase,
                seconds=args.seconds,
                grace=args.grace,
                dump=str(dump) if verify else None,
                **extra,
            )
            after = Sample(proc.pid, gen.proc.pid)
            if counters is not None:
                result["db_stats"] = phase_db_stats(args.stats, counters, result)
            if profiler is not None:
                finish_profiler(profiler, out)
            result["resources"] = usage = after.since(before)
            if settled is not None:
                usage["busy_cores_before"] = settled
            # server CPU covers the lead-in's messages too
            delivered = max(1, int(result["delivered"]) + int(result.get("lead_in", {}).get("delivered", 0)))
            usage["server_cpu_s_per_1k"] = round(usage["server_cpu_s"] / delivered * 1000, 3)
            usage["pg_redis_cpu_s_per_1k"] = round(usage["pg_redis_cpu_s"] / delivered * 1000, 3)
            if verify:
                result["db"] = verify_phase(dump)
            log(f"[{name}] {phase}: {json.dumps(result)}")
            out[phase] = result
        out["close"] = gen.command(120, cmd="close")
    finally:
        gen.quit()
    return out


def phase_db_stats(stats: Any, before: Any, result: dict[str, Any]) -> dict[str, Any]:
    """``--db-stats``: the phase's PostgreSQL and Redis work per message (``bench/dbstats.py``)."""
    import dbstats

    after = stats.take(tables=False)
    time.sleep(dbstats.TABLE_STATS_DELAY)  # the table counters are published late
    late = dbstats.Snapshot()
    stats.read_tables(late)
    messages = int(result["delivered"]) + int(result.get("lead_in", {}).get("delivered", 0))
    return dbstats.per_message(before, after, late, messages, stats.wal_records(before, after))


Profiler = list[tuple[subprocess.Popen[bytes], Path]]  # (the recording process, its output)


def start_profiler(pid: int, args: argparse.Namespace, tmp: Path) -> Profiler:
    """py-spy (``--profile``) and ``perf record`` (``--perf``): the server during the profiled
    phase's ``--seconds``."""
    running: Profiler = []
    if args.profile:
        path = Path(args.profile).resolve()
        running.append((start_py_spy(pid, path, args.seconds, args.profile_mode, tmp), path))
    if args.perf:
        path = Path(args.perf).resolve()
        perf = subprocess.Popen(
            [
                "perf",
                "record",
                "-F",
                "499",
                "-p",
                str(pid),
                "-o",
                str(path),
                "--",
                "sleep",
                str(args.seconds),
            ],
            stdout=(tmp / "perf.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        running.append((perf, path))
    return running


def finish_profiler(profiler: Profiler, out: dict[str, Any]) -> None:
    for proc, path in profiler:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.setdefault("profiles", []).append(str(path))


# --- report ---------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def figures(target: dict[str, Any]) -> list[tuple[str, Any]]:
    """The results table's rows for one target: (label, value); None for what did not run."""

    def lost(target: dict[str, Any]) -> int:
        total = 0
        for phase in ("saturation", "offered"):
            if phase not in target:
                continue
            result, db = target[phase], target[phase].get("db", {})
            total += result["lost"] + db.get("acked_not_in_db", 0) + db.get("received_not_in_db", 0)
        return total

    def duplicated(target: dict[str, Any]) -> int:
        return sum(t["duplicated"] + t.get("db", {}).get("duplicate_rows", 0) for t in phases(target))

    def phases(target: dict[str, Any]) -> list[dict[str, Any]]:
        return [target[phase] for phase in ("saturation", "offered") if phase in target]

    def seq_gaps(target: dict[str, Any]) -> int:
        return sum(p["seq_gaps"] + p["seq_out_of_order"] for p in phases(target))

    rows: list[tuple[str, Any]] = []
    for label, pick in (
        ("saturation msgs/s (end to end)", lambda t: t["saturation"]["msgs_per_s"]),
        ("saturation p50 latency ms", lambda t: t["saturation"]["latency_ms"]["p50"]),
        ("saturation p99 latency ms", lambda t: t["saturation"]["latency_ms"]["p99"]),
        ("offered msgs/s delivered", lambda t: t["offered"]["msgs_per_s"]),
        ("offered p50 latency ms", lambda t: t["offered"]["latency_ms"]["p50"]),
        ("offered p99 latency ms", lambda t: t["offered"]["latency_ms"]["p99"]),
        (
            "offered lead-in p99 ms (--lead-in, outside the window)",
            lambda t: t["offered"]["lead_in"]["latency_ms"]["p99"],
        ),
        (
            "server CPU-s / 1k msgs (saturation)",
            lambda t: t["saturation"]["resources"]["server_cpu_s_per_1k"],
        ),
        ("server CPU-s / 1k msgs (offered)", lambda t: t["offered"]["resources"]["server_cpu_s_per_1k"]),
        (
            "PG+Redis CPU-s / 1k msgs (saturation)",
            lambda t: t["saturation"]["resources"]["pg_redis_cpu_s_per_1k"],
        ),
        ("server cores busy (saturation)", lambda t: t["saturation"]["resources"]["server_cores"]),
        ("RSS per idle socket KiB", lambda t: t["idle"]["rss_per_socket_kib"]),
        ("lost (acked, never received / not stored)", lost),
        ("duplicated (received twice / two rows)", duplicated),
        ("seq gaps / out of order (Node load generator)", seq_gaps),
        ("unacked after grace (late, not lost)", lambda t: sum(p["unacked"] for p in phases(t))),
        ("other processes' cores (saturation)", lambda t: t["saturation"]["resources"]["other_cores"]),
        ("other processes' cores (offered)", lambda t: t["offered"]["resources"]["other_cores"]),
    ):
        rows.append((label, _pick(pick, target)))
    return rows


def summary(ours: dict[str, Any], relay: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Two targets side by side: (label, ours, theirs)."""
    return [(label, a, b) for (label, a), (_, b) in zip(figures(ours), figures(relay), strict=True)]


def print_targets(results: dict[str, Any], names: list[str]) -> None:
    """One column per target measured in this run, then healthchat's ratio to each of the others."""
    columns = [figures(results[name]) for name in names]
    others = list(names[1:]) if names[0] == "healthchat" else []
    width = max(12, *(len(n) for n in names))
    head = f"{'metric':<46} " + " ".join(f"{n:>{width}}" for n in names)
    head += "".join(f" {'hc/' + n:>{max(9, len(n) + 3)}}" for n in others)
    print(head)
    print("-" * len(head))
    for i, (label, _) in enumerate(columns[0]):
        values = [col[i][1] for col in columns]
        line = f"{label:<46} " + " ".join(f"{fmt(v):>{width}}" for v in values)
        for j, n in enumerate(others, start=1):
            ours, theirs = values[0], values[j]
            ratio = "-"
            if isinstance(ours, int | float) and isinstance(theirs, int | float) and theirs:
                ratio = f"{ours / theirs:.3f}"
            line += f" {ratio:>{max(9, len(n) + 3)}}"
        print(line)


def _pick(pick: Any, target: dict[str, Any]) -> Any:
    """A figure of ``target``; None for a phase that did not run (``--phases``) or a figure its
    load generator does not measure (the Python one: no seq checks)."""
    try:
        return pick(target)
    except KeyError:
        return None


def print_table(rows: list[tuple[str, Any, Any]], names: tuple[str, str] = ("healthchat", "relay")) -> None:
    print(f"{'metric':<42} {names[0]:>12} {names[1]:>12} {'ratio':>9}")
    print("-" * 78)
    for label, a, b in rows:
        ratio = "-"
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            ratio = f"{a / b:.3f}"
        print(f"{label:<42} {fmt(a):>12} {fmt(b):>12} {ratio:>9}")


# --- N processes behind HAProxy (--proxy haproxy) ---------------------------------------------------
def run_scaling(
    args: argparse.Namespace, env: dict[str, str], source: Path, tmp: Path, results: dict[str, Any]
) -> list[tuple[int, dict[str, Any]]]:
    """For 1..``--workers`` (at most 3) separate server processes behind HAProxy running
    ``deploy/haproxy.cfg`` (``tests/haproxy.py``): the same load through HAProxy's one port.
    The processes run under one parent, so the server CPU and RSS figures cover all of them."""
    import shlex

    from tests.haproxy import SLOTS, HAProxy

    runs: list[tuple[int, dict[str, Any]]] = []
    for count in range(1, min(args.workers, len(SLOTS)) + 1):
        ports = [free_port() for _ in range(count)]
        script = " & ".join(shlex.join(uvicorn_args(port, 1, args.ws)) for port in ports) + " & wait"
        fleet = spawn(
            pinned(["bash", "-c", script], args.server_cpus), env, tmp / f"fleet-{count}.log", cwd=source
        )
        proxy = HAProxy(ports)
        try:
            for port in ports:
                wait_healthy(port, fleet)
            proxy.start()
            results[f"busy_cores_before_haproxy_{count}"] = wait_for_quiet(0.3, args.quiet_wait)
            name = f"haproxy-{count}"
            runs.append((count, run_target(name, fleet, proxy.ws_url, tmp / "pairs.json", tmp, args, True)))
            runs[-1][1]["haproxy"] = proxy.summary(proxy.servers())
        finally:
            proxy.close()
            stop(fleet)
    return runs


def print_scaling(runs: list[tuple[int, dict[str, Any]]]) -> None:
    """msgs/s at saturation through HAProxy per process count, and the ratio to one process
    measured in the same run."""
    base = runs[0][1]["saturation"]["msgs_per_s"] if runs and "saturation" in runs[0][1] else None
    print(
        f"{'processes':>9} {'msgs/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'srv cores':>9} {'busy':>6}"
    )
    for count, run in runs:
        if "saturation" not in run:
            continue
        sat = run["saturation"]
        ratio = f"{sat['msgs_per_s'] / base:.2f}" if base else "-"
        usage = sat["resources"]
        print(
            f"{count:>9} {fmt(sat['msgs_per_s']):>9} {ratio:>6} {fmt(sat['latency_ms']['p50']):>8} "
            f"{fmt(sat['latency_ms']['p99']):>8} {fmt(usage['server_cores']):>9} {fmt(usage['machine_busy_cores']):>6}"
        )


# --- the other targets: the bare relay, socket.io in one process and N processes over Redis ----------
TARGETS = ("healthchat", "relay", "socketio", "socketio-redis")


def run_relay(name: str, env: dict[str, str], tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``bench/relay.py`` (plain ``websockets``, Python) or the socket.io relay
    (``bench/socketio/relay.mjs``): ``socketio`` one Node process, ``socketio-redis``
    ``--sio-processes`` of them sharing rooms through ``@socket.io/redis-adapter`` on
    ``--redis-url``'s server (its own channel prefix), each sender on one process and its
    receiver on the next, so every message crosses Redis; with ``--sio-proxy haproxy`` all
    sockets go through HAProxy on ``deploy/haproxy.cfg`` instead (``leastconn`` spreads them; a
    pair whose two sockets land on one process does not cross Redis; HAProxy's CPU counts as
    other processes'). The relay processes run under one parent, so the CPU and RSS figures cover
    all of them. Unpersisted, unauthenticated: no database check."""
    import shlex
    import uuid

    seconds = str(int(3 * args.seconds + 3 * args.grace + 600))
    if name == "relay":
        port = free_port()
        command = [sys.executable, str(BENCH / "relay.py"), "--port", str(port), "--seconds", seconds]
        urls, protocol, pairs = [f"ws://127.0.0.1:{port}/ws/v1/"], "ws", tmp / "relay-pairs.json"
        ports = [port]
    else:
        script = str(node_tools() / "relay.mjs")
        count = args.sio_processes if name == "socketio-redis" else 1
        ports = [free_port() for _ in range(count)]
        extra: list[str] = []
        if name == "socketio-redis":
            redis_server = args.redis_url.rsplit("/", 1)[0]  # pub/sub ignores the database number
            extra = ["--redis", redis_server, "--key", f"{args.prefix}-sio-{uuid.uuid4().hex[:8]}"]
        lines = [shlex.join(["node", script, "--port", str(p), "--seconds", seconds, *extra]) for p in ports]
        command = ["bash", "-c", " & ".join(lines) + " & wait"]
        urls, protocol, pairs = [f"http://127.0.0.1:{p}" for p in ports], "socketio", tmp / "relay-pairs.json"
    proc = spawn(pinned(command, args.server_cpus), env, tmp / f"{name}.log")
    proxy = None
    try:
        for port in ports:
            wait_port(port, proc)
        if name == "socketio-redis" and args.sio_proxy == "haproxy":
            from tests.haproxy import HAProxy

            proxy = HAProxy(ports)
            proxy.start()
            urls = [proxy.base_url]
        out = run_target(name, proc, ",".join(urls), pairs, tmp, args, False, protocol)
        if proxy is not None:
            out["haproxy"] = proxy.summary(proxy.servers())
        return out
    finally:
        if proxy is not None:
            proxy.close()
        stop(proc)


# --- main -------------------------------------------------------------------------------------------
def serve_and_run(
    name: str,
    metrics: str,
    source: Path,
    env: dict[str, str],
    rows: list[dict[str, Any]],
    tmp: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The real server (metrics ``on``, or ``off``: every hook a no-op) under the load, checked."""
    port = free_port()
    command = uvicorn_args(port, args.workers, args.ws)
    probe = str(tmp / f"probe-{name}")
    if args.latency_probe:
        env = {**env, "HEALTHCHAT_LATENCY_PROBE": probe}
    if metrics == "off":  # the same uvicorn command, started by bench/metrics_off.py
        command = [sys.executable, str(BENCH / "metrics_off.py"), *command[3:]]
    command = pinned(command, args.server_cpus)
    log_path = tmp / f"server-{name}.log"
    server = spawn(command, env, log_path, cwd=source)
    try:
        wait_healthy(port, server)
        out = run_target(
            name, server, f"ws://127.0.0.1:{port}/ws/v1/", tmp / "pairs.json", tmp, args, verify=True
        )
        if args.latency_probe:
            ask_for_probe(server, probe)
    finally:
        stop(server)
    if args.latency_probe:
        for phase in args.phases:
            if phase in out:
                out[phase]["latency_breakdown"] = latency_breakdown.breakdown(
                    tmp / f"{name}-{phase}.json", probe
                )
    from django.db import connection

    connection.close()
    out["sequences"] = verify_sequences([r["conversation_id"] for r in rows])
    out["server_log"] = server_log_counts(log_path)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=1000, help="sockets (pairs = sockets / 2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per load phase")
    parser.add_argument("--quick", action="store_true", help="200 sockets, 5 s phases")
    parser.add_argument("--window", type=int, default=4, help="messages in flight per sender (saturation)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to wait for stragglers")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before measuring RSS")
    parser.add_argument("--body-bytes", type=int, default=64)
    parser.add_argument("--debug", action="store_true", help="run the server with DEBUG=true")
    parser.add_argument("--profile", help="py-spy collapsed stacks of the server during one phase")
    parser.add_argument(
        "--profile-phase",
        choices=["saturation", "offered"],
        default="saturation",
        help="the phase --profile records",
    )
    parser.add_argument(
        "--profile-mode",
        choices=["cpu", "gil", "wall"],
        default="gil",
        help="py-spy: running threads, the thread holding the GIL, or every thread (idle too)",
    )
    parser.add_argument("--perf", help="perf record (flat, 499 Hz) of the server during the --profile-phase")
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="wait up to this long for an idle machine first"
    )
    parser.add_argument("--skip-relay", action="store_true", help="leave the bare relay out of --target")
    parser.add_argument(
        "--target",
        nargs="+",
        choices=TARGETS,
        default=["healthchat", "relay"],
        help="what to measure, in this order, with the same load generator: healthchat (the real server), "
        "relay (bench/relay.py), socketio (bench/socketio/relay.mjs, one process), socketio-redis "
        "(--sio-processes of them over @socket.io/redis-adapter); the table prints healthchat's "
        "ratio to each",
    )
    parser.add_argument(
        "--loadgen",
        choices=["node", "python"],
        default="node",
        help="node: bench/socketio/loadgen.mjs (every target; `make bench-tools` installs it); "
        "python: bench/loadgen.py (healthchat and relay only)",
    )
    parser.add_argument(
        "--pin",
        choices=["on", "off"],
        default="on",
        help="on: the load generator alone on the last core, the servers under test on the others (taskset)",
    )
    parser.add_argument(
        "--sio-processes", type=int, default=2, help="socketio-redis: Node processes (distinct ports)"
    )
    parser.add_argument(
        "--sio-proxy",
        choices=["none", "haproxy"],
        default="none",
        help="socketio-redis: none (each sender on one process, its receiver on the next) or haproxy "
        "(every socket through HAProxy on deploy/haproxy.cfg, at most 3 processes)",
    )
    parser.add_argument(
        "--lead-in",
        type=float,
        default=0.0,
        help="offered: seconds of the same load before the measured window (default 0: none)",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["saturation", "offered"],
        default=["saturation", "offered"],
        help="load phases to run (both by default)",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes behind the one port")
    parser.add_argument(
        "--proxy",
        choices=["haproxy"],
        help="haproxy: 1..--workers (at most 3) separate processes behind HAProxy (deploy/haproxy.cfg); "
        "prints msgs/s per process count and the ratio to one process (no relay run)",
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
    parser.add_argument(
        "--rev", help="benchmark this commit (exported with git archive) instead of the working tree"
    )
    parser.add_argument(
        "--metrics",
        choices=["on", "off", "on-off", "off-on"],
        default="on",
        help="metric hooks on, off (no-ops), or both servers in this run (in this order)",
    )
    parser.add_argument(
        "--latency-probe",
        action="store_true",
        help="the server keeps its send batches' timings, collector passes and loop stalls "
        "(HEALTHCHAT_LATENCY_PROBE, core/latency_probe.py); prints where the median and the p99 "
        "message's time went (bench/latency_breakdown.py)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL[:NAME=VALUE,...]",
        help="serve healthchat once per variant (repeatable), with these environment settings on top "
        "(e.g. gc:HEALTHCHAT_GC_THRESHOLD=700,10,10), on the same database and load; with --repeat N "
        "the variants alternate N times; prints one line per run",
    )
    parser.add_argument("--repeat", type=int, default=1, help="--variant: rounds of the variants")
    parser.add_argument("--json", dest="json_out", help="also write every figure to this file")
    parser.add_argument("--db-name", default=DB_NAME, help="the benchmark's own database")
    parser.add_argument("--redis-url", default=REDIS_URL, help="the benchmark's Redis database")
    parser.add_argument("--prefix", default=PREFIX, help="its key prefix there (cleared first)")
    parser.add_argument(
        "--db-stats",
        action="store_true",
        help="per message: PostgreSQL statements, rows, buffers, WAL (pg_stat_statements) and Redis "
        "commands of each phase (bench/dbstats.py)",
    )
    parser.add_argument(
        "--private-services",
        action="store_true",
        help="run on a throwaway PostgreSQL (pg_stat_statements preloaded) and Redis of this run's own, "
        "so that --db-stats counts only this benchmark",
    )
    import dbstats  # (imported where used, as the rest of this file does)

    dbstats.add_pg_setting_argument(parser)
    args = parser.parse_args()
    if args.skip_relay and "relay" in args.target:
        args.target = [t for t in args.target if t != "relay"]
    if args.loadgen == "python" and any(t.startswith("socketio") for t in args.target):
        parser.error("the Python load generator does not speak socket.io: --loadgen node")
    if args.loadgen == "node":
        node_tools()
    args.server_cpus, args.loadgen_cpus = pin_sets(args.pin == "on")
    with contextlib.ExitStack() as services:
        if args.private_services:
            import dbstats

            os.environ["BENCH_PG_PORT"] = str(
                services.enter_context(dbstats.private_postgres(dbstats.settings_options(args.pg_setting)))
            )
            args.redis_url = f"redis://127.0.0.1:{services.enter_context(dbstats.private_redis())}/2"
        return run(args)


def run(args: argparse.Namespace) -> int:
    target = Target(db_name=args.db_name, redis_url=args.redis_url, prefix=args.prefix)
    if args.quick:
        args.sockets, args.seconds = min(args.sockets, 200), min(args.seconds, 5.0)
    pairs_count = max(1, args.sockets // 2)

    raise_fd_limit(args.sockets)
    tmp = Path(tempfile.mkdtemp(prefix="hc-bench-"))
    source, revision, env = setup_django(target, tmp, args.rev, args.debug)
    log(f"work files in {tmp}")
    rows = seed(pairs_count)
    clear_redis(target)
    write_pairs(rows, tmp / "pairs.json", with_tokens=True)
    write_pairs(rows, tmp / "relay-pairs.json", with_tokens=False)
    log(f"{pairs_count} pairs ready")
    args.stats = None
    if args.db_stats:
        import dbstats

        args.stats = dbstats.DbStats(
            f"host=127.0.0.1 port={pg_port()} user=postgres", args.db_name, args.redis_url, pg_port()
        )

    results: dict[str, Any] = {
        "revision": revision,
        "sockets": 2 * pairs_count,
        "seconds": args.seconds,
        "window": args.window,
        "cores": os.cpu_count(),
        "workers": args.workers,
        "debug": args.debug,
        "loadgen": args.loadgen,
        "targets": args.target,
        "pinned": {"servers": args.server_cpus, "loadgen": args.loadgen_cpus},
    }
    results["busy_cores_at_start"] = wait_for_quiet(0.3, args.quiet_wait)
    if args.proxy == "haproxy":
        runs = run_scaling(args, env, source, tmp, results)
        from django.db import connection

        connection.close()
        results["haproxy"] = {str(count): run for count, run in runs}
        results["sequences"] = verify_sequences([r["conversation_id"] for r in rows])
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        print()
        print(
            f"revision {revision}: {results['sockets']} sockets through HAProxy, {args.seconds:g} s per phase, "
            f"window {args.window}, {os.cpu_count()} cores, logs in {tmp}"
        )
        print_scaling(runs)
        print(f"database check: {results['sequences']}")
        return 0
    order = args.metrics.split("-")
    measured: list[str] = []
    variants = [parse_variant(v) for v in args.variant]
    for name in args.target:
        if name == "healthchat" and variants:
            for round_ in range(args.repeat):
                for label, overrides in variants:
                    run_name = f"healthchat-{label}-{round_ + 1}"
                    if measured or round_ or label != variants[0][0]:
                        results[f"busy_cores_before_{run_name}"] = wait_for_quiet(0.3, args.quiet_wait)
                    results[run_name] = serve_and_run(
                        run_name, "on", source, {**env, **overrides}, rows, tmp, args
                    )
                    results[run_name]["metrics"] = "on"
                    results[run_name]["variant"] = overrides
                    results[run_name]["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
        elif name == "healthchat":
            for mode in order:
                label = "healthchat" if mode == order[0] else f"healthchat-metrics-{mode}"
                if mode != order[0]:
                    results[f"busy_cores_before_{label}"] = wait_for_quiet(0.3, args.quiet_wait)
                results[label] = serve_and_run(label, mode, source, env, rows, tmp, args)
                results[label]["metrics"] = mode
        else:
            if measured:
                results[f"busy_cores_before_{name}"] = wait_for_quiet(0.3, args.quiet_wait)
            results[name] = run_relay(name, env, tmp, args)
        measured.append(name)

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print()
    print(
        f"revision {revision}: {results['sockets']} sockets ({pairs_count} pairs), {args.seconds:g} s per phase, "
        f"window {args.window}, {os.cpu_count()} cores, load generator {args.loadgen}"
        f" (pinned: servers {args.server_cpus}, load generator {args.loadgen_cpus}), logs in {tmp}"
    )
    if len(measured) > 1:
        print_targets(results, measured)
    if "healthchat" in measured and len(order) == 2:
        on, off = (results["healthchat"], results[f"healthchat-metrics-{order[1]}"])
        if order[0] == "off":
            on, off = off, on
        print()
        print_table(summary(on, off), names=("metrics on", "metrics off"))
    if args.stats is not None:
        import dbstats

        for name, ours in results.items():
            for phase in ("saturation", "offered"):
                if name.startswith("healthchat") and "db_stats" in ours.get(phase, {}):
                    dbstats.print_report(name, phase, ours[phase]["db_stats"])
        args.stats.close()
    if variants:
        print_variants(results, args.phases)
    for name, ours in results.items():
        if name.startswith("healthchat"):
            print(
                f"{name} (metrics {ours['metrics']}): database check: {ours['sequences']}; server log: {ours['server_log']}"
            )
            if args.latency_probe:
                for phase in ("saturation", "offered"):
                    if "latency_breakdown" in ours.get(phase, {}):
                        latency_breakdown.print_breakdown(f"{name} {phase}", ours[phase]["latency_breakdown"])
    return 0


def ask_for_probe(server: subprocess.Popen[bytes], probe: str) -> None:
    """The server writes its latency probe's file on SIGUSR1 (``core/latency_probe.py``)."""
    import signal

    path = Path(f"{probe}.{server.pid}")
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not path.exists():
        log(f"no latency probe file {path}")


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``LABEL[:NAME=VALUE,NAME=VALUE]`` (a value may hold commas when it is the last one)."""
    label, _, rest = text.partition(":")
    overrides: dict[str, str] = {}
    name = ""
    for piece in rest.split(",") if rest else []:
        key, sep, value = piece.partition("=")
        if sep and key.isupper():
            name = key
            overrides[name] = value
        elif name:  # a comma inside the previous value (HEALTHCHAT_GC_THRESHOLD=700,10,10)
            overrides[name] += "," + piece
        else:
            raise SystemExit(f"--variant {text!r}: LABEL[:NAME=VALUE,...]")
    return label, overrides


def print_variants(results: dict[str, Any], phases: list[str]) -> None:
    """One line per --variant run, in the order they ran."""
    print(
        f"{'run':<28} {'phase':<10} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'srv ms/msg':>10} "
        f"{'other cores':>11} {'busy before':>11} {'loadavg':>16} {'lost/dup':>9}"
    )
    for name, run in results.items():
        if not (name.startswith("healthchat-") and isinstance(run, dict) and "variant" in run):
            continue
        for phase in phases:
            if phase not in run:
                continue
            r, lat = run[phase], run[phase]["latency_ms"]
            usage = r["resources"]
            print(
                f"{name:<28} {phase:<10} {fmt(lat['p50']):>7} {fmt(lat['p90']):>7} {fmt(lat['p99']):>7} "
                f"{fmt(lat['max']):>7} {fmt(usage['server_cpu_s_per_1k']):>10} {fmt(usage['other_cores']):>11} "
                f"{fmt(usage.get('busy_cores_before')):>11} {' '.join(run['loadavg']):>16} "
                f"{r['lost']}/{r['duplicated']:>7}"
            )


if __name__ == "__main__":
    sys.exit(main())
