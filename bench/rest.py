"""REST throughput under concurrent load, and the PostgreSQL connections it takes.

``python bench/rest.py [--requests 2000] [--concurrency 8,500] [--before REV] [--configs pool]
[--json FILE]``
(from the repository root; Redis on 127.0.0.1:6379 and PostgreSQL's server binaries installed).

``GET /api/v1/me`` (a signed-in user's own account: token check, throttle, one query) against
two server processes (uvicorn as production runs it, separate ports, requests alternating),
``--users`` users with development tokens. The servers use a PostgreSQL cluster the benchmark
starts for itself (``tests/pgcluster.py``) with ``--max-connections`` (default 100,
PostgreSQL's default): the configurations that open a connection per request must not run the
machine's shared server out of connections. Configurations, measured in the same run:

- ``pool``: the working tree, connections from a pool per process (``DATABASE_POOL_MAX_SIZE``,
  default 10);
- ``no pool``: the working tree with ``DATABASE_POOL_MAX_SIZE=0``: a connection opened and
  closed by every request (the app's side of a PgBouncer deployment);
- ``before`` (``--before REV``): that revision exported with ``git archive`` on its own
  defaults (at b16ee94: ``DATABASE_CONN_MAX_AGE=60``, a connection kept by every request's
  thread).

Each configuration and concurrency gets fresh servers, a warm-up (``--warmup`` requests, 8 at a
time) and then ``--requests`` requests, ``--concurrency`` at a time on keep-alive connections
(``tests/restload.py``). Reported: answered-200 requests per second, p50/p99 latency of the
200s, errors by status, the servers' peak PostgreSQL sessions (``pg_stat_activity`` every 5 ms),
server CPU per request and the cores other processes used meanwhile (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from harness import (
    CLK_TCK,
    ROOT,
    Server,
    Target,
    bench_env,
    clear_redis,
    close_django,
    export_source,
    log,
    machine_busy,
    proc_cpu,
    seed_users,
    tokens,
    tree_pids,
    wait_for_quiet,
)

# bench/ comes first on sys.path when a script here runs, and bench/messaging.py would shadow
# the messaging app: the repository goes first (tests.* and the apps import from there).
sys.path.insert(0, str(ROOT))

from tests.pgcluster import BackendSampler, PrivatePostgres, private_postgres
from tests.restload import Request, run

APP = "hc-rest-bench"
DB = "hc_rest_bench"
USER_TAG = 7


def setup(
    cluster: PrivatePostgres, target: Target, tmp: Path, users: int
) -> tuple[dict[str, str], list[str]]:
    """The database created and migrated, ``users`` users seeded; (the servers' environment,
    one token per user)."""
    cluster.create_database(DB)
    env = bench_env(tmp, target)
    env["DATABASE_URL"] = cluster.url(DB, APP)
    # This process only seeds: no pool of its own holding connections the servers could use.
    os.environ.update(env, DATABASE_URL=cluster.url(DB), DATABASE_POOL_MAX_SIZE="0")
    import django

    django.setup()
    seeded = seed_users(users, USER_TAG)
    minted = tokens(phone for _id, phone in seeded)
    close_django()
    return env, minted


def cluster_cpu(cluster: PrivatePostgres) -> float:
    """CPU-seconds of the private PostgreSQL so far: the postmaster, its live children, and the
    children it has reaped (a backend per connection comes and goes: ``cutime`` + ``cstime``)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK_TCK
    for pid in tree_pids(postmaster)[1:]:
        try:
            total += proc_cpu(pid)
        except (OSError, IndexError, ValueError):
            continue
    return total


def measure(
    cluster: PrivatePostgres,
    servers: list[Server],
    minted: list[str],
    count: int,
    concurrency: int,
) -> dict[str, Any]:
    batch = [
        Request(
            f"http://127.0.0.1:{servers[i % len(servers)].port}/api/v1/me",
            (("Authorization", f"Bearer {minted[i % len(minted)]}"),),
        )
        for i in range(count)
    ]
    pg0 = cluster_cpu(cluster)
    server0 = sum(s.cpu() for s in servers)
    busy0, client0, wall0 = machine_busy(), time.process_time(), time.monotonic()
    with BackendSampler(cluster, APP) as sampler:
        results = asyncio.run(run(batch, concurrency))
    wall = time.monotonic() - wall0
    server = sum(s.cpu() for s in servers) - server0
    client = time.process_time() - client0
    pg = cluster_cpu(cluster) - pg0
    busy = machine_busy() - busy0
    ok = sorted(r.seconds for r in results if r.status == 200)
    errors = Counter(str(r.status) if r.status else r.error.split(":")[0] for r in results if r.status != 200)
    return {
        "requests": count,
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "ok": len(ok),
        "req_per_s": round(len(ok) / wall, 1),
        "p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
        "p99_ms": round(ok[min(len(ok) - 1, int(len(ok) * 0.99))] * 1000, 1) if ok else None,
        "errors": dict(errors),
        "peak_pg_sessions": sampler.peak,
        "server_cpu_ms_per_req": round(server / count * 1000, 2),
        "server_cores": round(server / wall, 2),
        "postgres_cpu_ms_per_req": round(pg / count * 1000, 2),
        "client_cores": round(client / wall, 2),
        # everything else on the machine (Redis, other sessions' processes, the kernel)
        "other_cores": round(max(0.0, busy - server - pg - client) / wall, 2),
    }


def configurations(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path, str, dict[str, str]]]:
    """(name, source, revision, extra environment) of each configuration to measure."""
    here, revision = export_source(None, tmp / "here")
    out = [
        ("pool", here, revision, {}),
        ("no pool", here, revision, {"DATABASE_POOL_MAX_SIZE": "0"}),
    ]
    if args.before:
        (tmp / "before").mkdir()
        source, before = export_source(args.before, tmp / "before")
        out.append(("before", source, before, {}))
    wanted = {name.strip() for name in args.configs.split(",")}
    return [c for c in out if c[0] in wanted]


def wait_sessions_gone(cluster: PrivatePostgres, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with cluster.connect() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP]
            ).fetchone()
            if row is None or row[0] == 0:
                return
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="8,500", help="comma-separated, one run each")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--before", default=None, help="also measure this revision (e.g. b16ee94)")
    parser.add_argument("--configs", default="pool,no pool,before", help="which of them to measure")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    target = Target(db_name=DB, redis_url=args.redis_url, prefix="hcrest")
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="hc-rest-bench-") as name,
        private_postgres(args.max_connections) as pg,
    ):
        tmp = Path(name)
        env, minted = setup(pg, target, tmp, args.users)
        for config, source, revision, extra in configurations(args, tmp):
            for concurrency in levels:
                clear_redis(target)  # throttle counters of the previous run
                wait_sessions_gone(pg)
                busy = wait_for_quiet(0.5, args.quiet_wait)
                servers = [
                    Server(
                        env, tmp / f"server-{len(rows)}-{i}.log", ws="lean", extra_env=extra, source=source
                    )
                    for i in range(args.processes)
                ]
                try:
                    for server in servers:
                        server.start()
                    warm = [
                        Request(f"http://127.0.0.1:{s.port}/healthz") for s in servers for _ in range(2)
                    ] + [
                        Request(
                            f"http://127.0.0.1:{servers[i % len(servers)].port}/api/v1/me",
                            (("Authorization", f"Bearer {minted[i % len(minted)]}"),),
                        )
                        for i in range(args.warmup)
                    ]
                    asyncio.run(run(warm, 8))
                    row = measure(pg, servers, minted, args.requests, concurrency)
                finally:
                    for server in servers:
                        server.stop()
                log_text = "".join(s.log_path.read_text(errors="replace") for s in servers)
                row.update(
                    config=config,
                    revision=revision,
                    busy_cores_before=busy,
                    too_many_clients=log_text.count("too many clients"),
                )
                rows.append(row)
                log(json.dumps(row))
    print(f"{'config':<9} {'rev':<9} {'conc':>5} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':<22} "
          f"{'peak PG':>7} {'CPU ms/req':>10} {'PG ms/req':>9} {'other cores':>11}")  # fmt: skip
    for r in rows:
        errors = ",".join(f"{k}:{v}" for k, v in sorted(r["errors"].items())) or "0"
        print(
            f"{r['config']:<9} {r['revision'][:9]:<9} {r['concurrency']:>5} {r['req_per_s']:>7} "
            f"{r['p50_ms'] or '-':>8} {r['p99_ms'] or '-':>8} {errors:<22} {r['peak_pg_sessions']:>7} "
            f"{r['server_cpu_ms_per_req']:>10} {r['postgres_cpu_ms_per_req']:>9} {r['other_cores']:>11}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
