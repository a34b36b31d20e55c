"""PostgreSQL and Redis work per message of a benchmark phase (``bench/messaging.py --db-stats``).

Counts, not times: on a shared, noisy machine the number of statements, rows, buffer pages and
WAL bytes PostgreSQL spends on a message, and the Redis commands, stay the same from run to run
while CPU time does not. Taken around one load phase (``Snapshot`` before, ``Snapshot`` after,
``per_message``):

- ``pg_stat_statements`` of the benchmark's database: calls, rows, shared buffers hit / read /
  dirtied, WAL records / full-page images / bytes and execution time per statement (the
  extension must be preloaded: ``shared_preload_libraries = 'pg_stat_statements'``; the
  machine's PostgreSQL does not, ``private_postgres`` below starts one that does; without it
  these rows are left out and the rest is still reported);
- the WAL written by the whole cluster (``pg_current_wal_lsn``; exact on a private cluster,
  everyone's WAL on a shared one), checkpoints (``pg_stat_bgwriter``);
- the tables' inserted / updated / HOT-updated rows (``pg_stat_user_tables``; PostgreSQL
  publishes them up to ~10 s late: the after-snapshot waits ``TABLE_STATS_DELAY``);
- Redis ``INFO commandstats`` (every client of that server: exact on a private one) and Redis'
  own CPU (``INFO cpu``), and the CPU of the PostgreSQL cluster's processes (the postmaster's
  tree, from /proc: exact on a private cluster, everyone's backends on a shared one).

``private_postgres`` / ``private_redis``: throwaway servers on free loopback ports (PostgreSQL
with the machine's defaults for durability, ``fsync`` and ``synchronous_commit`` on, plus
``pg_stat_statements``), so that the counts are this benchmark's alone. ``bench/messaging.py
--private-services`` runs everything on them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import free_port, log, proc_cpu, tree_pids

TABLES = (
    "messaging_message",
    "messaging_event",
    "messaging_conversation",
    "messaging_membership",
    "messaging_mention",
    "notifications_pushdelivery",
)
# PostgreSQL's backends publish their table counters at most once a second while busy and
# within ~10 s once idle (PGSTAT_IDLE_INTERVAL): wait that long before reading them.
TABLE_STATS_DELAY = 11.0

_STATEMENTS_SQL = r"""
SELECT queryid, regexp_replace(left(query, 400), '\s+', ' ', 'g'), calls, rows, total_exec_time,
       shared_blks_hit, shared_blks_read, shared_blks_dirtied, shared_blks_written,
       wal_records, wal_fpi, wal_bytes
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)
"""
_WALDUMP_LINE = re.compile(r"^(\S+/\S+)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)")
_STATEMENT_FIELDS = (
    "calls",
    "rows",
    "exec_ms",
    "blks_hit",
    "blks_read",
    "blks_dirtied",
    "blks_written",
    "wal_records",
    "wal_fpi",
    "wal_bytes",
)


@dataclass
class Snapshot:
    """Counters at one moment (``take``)."""

    wall: float = 0.0
    statements: dict[int, tuple[str, list[float]]] = field(default_factory=dict)
    has_statements: bool = False
    lsn: int = 0
    lsn_text: str = ""
    bgwriter: dict[str, float] = field(default_factory=dict)
    tables: dict[str, dict[str, float]] = field(default_factory=dict)
    database: dict[str, float] = field(default_factory=dict)
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_cpu: float = 0.0
    pg_cpu: float = 0.0


class DbStats:
    """Reads the counters of ``db_name`` on the PostgreSQL at ``pg_dsn`` (a server DSN without
    the database) and of the Redis at ``redis_url``."""

    def __init__(self, pg_dsn: str, db_name: str, redis_url: str, port: int = 5432) -> None:
        import psycopg
        import redis

        self.db_name = db_name
        self.admin = psycopg.connect(f"{pg_dsn} dbname=postgres", autocommit=True)
        self.bench = psycopg.connect(f"{pg_dsn} dbname={db_name}", autocommit=True)
        self.redis = redis.Redis.from_url(redis_url)
        self.has_statements = self._enable_statements()
        backend = int(self.admin.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        self.postmaster = _parent(backend)
        self.data_dir = PRIVATE_DATA.get(port)  # a private cluster's: its WAL can be read

    def wal_records(self, before: Snapshot, after: Snapshot) -> dict[str, Any] | None:
        """``pg_waldump --stats=record`` between two snapshots (a private cluster only: the WAL
        of the shared one is everyone's): the record types, their counts and bytes."""
        if self.data_dir is None:
            return None
        command = [str(_bin_dir() / "pg_waldump"), "--stats=record", "-p", str(self.data_dir / "pg_wal"),
                   "-s", before.lsn_text, "-e", after.lsn_text]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        out: dict[str, Any] = {}
        for line in done.stdout.splitlines():
            # "Heap/INSERT   1234 ( 12.34)   56789 ( 45.67)   0 (  0.00) ...": type, count, record
            # bytes, full-page image bytes
            found = _WALDUMP_LINE.match(line)
            if found:
                kind, count, record, fpi = found.groups()
                out[kind] = {"count": int(count), "bytes": int(record) + int(fpi)}
        return dict(sorted(out.items(), key=lambda item: -item[1]["bytes"]))

    def _enable_statements(self) -> bool:
        import psycopg

        try:
            self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.admin.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
        except psycopg.Error as exc:
            log(
                f"db-stats: no pg_stat_statements ({str(exc).strip().splitlines()[0]}): per-statement rows left out"
            )
            return False
        return True

    def close(self) -> None:
        for closing in (self.admin.close, self.bench.close, self.redis.close):
            with contextlib.suppress(Exception):
                closing()

    def take(self, *, tables: bool = True) -> Snapshot:
        snap = Snapshot(wall=time.monotonic(), has_statements=self.has_statements)
        if self.has_statements:
            for row in self.admin.execute(_STATEMENTS_SQL, [self.db_name]).fetchall():
                queryid, text, *values = row
                if "pg_stat" in text or "pg_current_wal" in text:
                    continue
                snap.statements[int(queryid)] = (text, [float(v or 0) for v in values])
        lsn = self.admin.execute(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, pg_current_wal_lsn()::text"
        ).fetchone()
        snap.lsn, snap.lsn_text = int(lsn[0]), str(lsn[1])  # type: ignore[index]
        cursor = self.admin.execute(
            "SELECT checkpoints_timed, checkpoints_req, checkpoint_write_time, checkpoint_sync_time,"
            " buffers_checkpoint, buffers_clean, buffers_backend FROM pg_stat_bgwriter"
        )
        names = [d.name for d in cursor.description or []]
        snap.bgwriter = dict(zip(names, (float(v) for v in cursor.fetchone() or ()), strict=True))
        if tables:
            self.read_tables(snap)
        info = self.redis.info("commandstats")
        snap.redis_calls = {
            name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in info.items()
        }
        cpu = self.redis.info("cpu")
        snap.redis_cpu = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
        snap.pg_cpu = _tree_cpu(self.postmaster)
        return snap

    def read_tables(self, snap: Snapshot) -> None:
        """The table and database counters (published late: see ``TABLE_STATS_DELAY``)."""
        self.bench.execute("SELECT pg_stat_clear_snapshot()")
        for row in self.bench.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count,"
            " autoanalyze_count FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            [list(TABLES)],
        ).fetchall():
            snap.tables[row[0]] = dict(
                zip(
                    ("ins", "upd", "hot_upd", "del", "autovacuum", "autoanalyze"),
                    map(float, row[1:]),
                    strict=True,
                )
            )
        totals = self.bench.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, blks_hit, blks_read"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        snap.database = dict(
            zip(
                ("commits", "rollbacks", "tup_inserted", "tup_updated", "blks_hit", "blks_read"),
                map(float, totals or ()),
                strict=False,
            )
        )


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _tree_cpu(root: int) -> float:
    total = 0.0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += proc_cpu(pid)
    return total


def per_message(
    before: Snapshot,
    after: Snapshot,
    late: Snapshot | None,
    messages: int,
    wal_records: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the phase between ``before`` and ``after`` cost per message (``late``: the table
    counters read ``TABLE_STATS_DELAY`` after the phase)."""
    n = max(1, messages)
    out: dict[str, Any] = {"messages": messages, "seconds": round(after.wall - before.wall, 1)}
    if after.has_statements:
        rows: list[dict[str, Any]] = []
        totals = dict.fromkeys(_STATEMENT_FIELDS, 0.0)
        for queryid, (text, values) in after.statements.items():
            old = before.statements.get(queryid, (text, [0.0] * len(values)))[1]
            delta = [a - b for a, b in zip(values, old, strict=True)]
            if delta[0] <= 0:
                continue
            item = dict(zip(_STATEMENT_FIELDS, delta, strict=True))
            for key in totals:
                totals[key] += item[key]
            rows.append({"query": text[:160], **{k: round(v / n, 4) for k, v in item.items()}})
        rows.sort(key=lambda r: -float(r["exec_ms"]))
        out["statements"] = rows
        out["statements_total"] = {k: round(v / n, 4) for k, v in totals.items()}
    out["wal_bytes_cluster"] = round((after.lsn - before.lsn) / n, 1)
    if wal_records is not None:
        out["wal_record_types"] = {
            kind: {"count": round(v["count"] / n, 3), "bytes": round(v["bytes"] / n, 1)}
            for kind, v in list(wal_records.items())[:14]
        }
    out["checkpoints"] = {
        k: after.bgwriter.get(k, 0) - before.bgwriter.get(k, 0)
        for k in ("checkpoints_timed", "checkpoints_req", "buffers_checkpoint", "buffers_backend")
    }
    if late is not None:
        tables: dict[str, dict[str, float]] = {}
        for name, counts in late.tables.items():
            was = before.tables.get(name, dict.fromkeys(counts, 0.0))
            tables[name] = {k: round((v - was.get(k, 0.0)) / n, 3) for k, v in counts.items()}
        out["tables"] = tables
        out["database"] = {
            k: round((v - before.database.get(k, 0.0)) / n, 3) for k, v in late.database.items()
        }
    calls = {
        name: round((count - before.redis_calls.get(name, 0)) / n, 3)
        for name, count in after.redis_calls.items()
        if count - before.redis_calls.get(name, 0) > 0
    }
    out["redis_commands"] = dict(sorted(calls.items(), key=lambda item: -item[1]))
    out["redis_commands_total"] = round(sum(calls.values()), 3)
    out["redis_cpu_ms"] = round((after.redis_cpu - before.redis_cpu) / n * 1000, 4)
    out["postgres_cpu_ms"] = round((after.pg_cpu - before.pg_cpu) / n * 1000, 4)
    return out


def print_report(name: str, phase: str, stats: dict[str, Any]) -> None:
    """The per-message counts as a table."""
    print(f"\n{name} {phase}: PostgreSQL and Redis work per message ({stats['messages']:,} messages)")
    total = stats.get("statements_total")
    if total:
        print(
            f"  statements: {total['calls']:.3f} calls, {total['rows']:.3f} rows, "
            f"{total['blks_hit']:.1f} buffer hits, {total['blks_read']:.2f} reads, "
            f"{total['blks_dirtied']:.3f} dirtied, {total['wal_records']:.2f} WAL records, "
            f"{total['wal_fpi']:.3f} full-page images, {total['wal_bytes']:.0f} WAL bytes, "
            f"{total['exec_ms']:.4f} ms executing"
        )
        print(f"  {'calls':>7} {'rows':>7} {'hits':>7} {'dirtied':>7} {'WAL B':>7} {'exec ms':>8}  statement")
        for row in stats["statements"][:12]:
            print(
                f"  {row['calls']:7.3f} {row['rows']:7.3f} {row['blks_hit']:7.2f} {row['blks_dirtied']:7.3f} "
                f"{row['wal_bytes']:7.0f} {row['exec_ms']:8.4f}  {row['query'][:90]}"
            )
    print(
        f"  WAL (whole cluster): {stats['wal_bytes_cluster']:.0f} bytes; checkpoints: {stats['checkpoints']}"
    )
    for kind, values in stats.get("wal_record_types", {}).items():
        print(f"    WAL {kind:<24} {values['count']:7.3f} records {values['bytes']:8.1f} bytes")
    for table, values in stats.get("tables", {}).items():
        print(f"  {table}: {values}")
    if "database" in stats:
        print(f"  database: {stats['database']}")
    print(f"  Redis: {stats['redis_commands_total']:.3f} commands {stats['redis_commands']}")
    print(
        f"  CPU ms per message: PostgreSQL cluster {stats['postgres_cpu_ms']}, Redis {stats['redis_cpu_ms']}"
    )


# --- private servers ---------------------------------------------------------------------------
def _bin_dir() -> Path:
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise SystemExit("PostgreSQL's server binaries are missing: `make pg-server`")
    return found[-1].parent


PRIVATE_DATA: dict[int, Path] = {}  # port -> data directory of the private clusters running


def add_pg_setting_argument(parser: argparse.ArgumentParser) -> None:
    """``--pg-setting NAME=VALUE`` (repeatable), the throwaway cluster's settings: one option
    for every benchmark that takes ``--private-services``."""
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --private-services: a PostgreSQL setting of the throwaway cluster (repeatable), "
        "e.g. shared_buffers=1GB for the deployment docs/performance.md recommends",
    )


def settings_options(pairs: list[str]) -> tuple[str, ...]:
    """``NAME=VALUE`` settings (``--pg-setting``) as ``postgres -c`` options; a later one wins
    over the defaults of ``private_postgres``."""
    options = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[a-z_.]+", name) or not re.fullmatch(r"[A-Za-z0-9_.]+", value):
            raise SystemExit(f"--pg-setting {pair!r}: NAME=VALUE (letters, digits, _ and . only)")
        options.append(f"-c {name}={value}")
    return tuple(options)


@contextlib.contextmanager
def private_postgres(extra: tuple[str, ...] = ()) -> Iterator[int]:
    """A throwaway PostgreSQL cluster on a free port with ``pg_stat_statements`` preloaded and
    the machine server's defaults otherwise (durable commits; 128 MB shared buffers); yields its
    port, removed after. As root it runs as the ``postgres`` user."""
    root = Path(tempfile.mkdtemp(prefix="hc-pgstats-"))
    as_postgres = os.geteuid() == 0
    if as_postgres:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    bin_dir = _bin_dir()

    def run(*args: str) -> None:
        command = [str(bin_dir / args[0]), *args[1:]]
        if as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=300)

    data = root / "data"
    run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C")
    port = free_port()
    settings = [
        f"-p {port}",
        "-c listen_addresses=127.0.0.1",
        "-c unix_socket_directories=''",
        "-c shared_preload_libraries=pg_stat_statements",
        "-c pg_stat_statements.track=all",
        "-c max_connections=200",
        "-c shared_buffers=128MB",
        "-c log_checkpoints=on",
        "-c log_autovacuum_min_duration=0",
        "-c log_line_prefix='%m [%p] '",
        *extra,
    ]
    run(
        "pg_ctl",
        "-D",
        str(data),
        "-l",
        str(root / "postgres.log"),
        "-w",
        "-t",
        "60",
        "-o",
        " ".join(settings),
        "start",
    )
    log(f"private PostgreSQL on port {port}, log {root / 'postgres.log'}")
    PRIVATE_DATA[port] = data
    try:
        yield port
    finally:
        PRIVATE_DATA.pop(port, None)
        with contextlib.suppress(subprocess.SubprocessError):
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        keep = Path(tempfile.gettempdir()) / f"hc-pgstats-{port}.log"
        with contextlib.suppress(OSError):
            shutil.copy(root / "postgres.log", keep)
            log(f"private PostgreSQL log kept in {keep}")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def private_redis() -> Iterator[int]:
    """A throwaway Redis (no persistence) on a free port; yields the port."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        log(f"private Redis on port {port}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def soak_sample(stats: DbStats) -> dict[str, Any]:
    """For ``bench/soak.py``'s progress lines: checkpoints so far, the tables' autovacuum and
    autoanalyze runs so far, the messages table's and its indexes' sizes and the send
    statement's slowest execution so far (what the p99 of an interval may be explained by)."""
    snap = Snapshot()
    stats.read_tables(snap)
    bgwriter = stats.admin.execute(
        "SELECT checkpoints_timed + checkpoints_req, buffers_checkpoint, buffers_backend FROM pg_stat_bgwriter"
    ).fetchone() or (0, 0, 0)
    sizes = stats.bench.execute(
        "SELECT pg_relation_size('messaging_message'), pg_indexes_size('messaging_message'),"
        " pg_relation_size('messaging_event') + pg_indexes_size('messaging_event')"
    ).fetchone() or (0, 0, 0)
    out: dict[str, Any] = {
        "checkpoints": int(bgwriter[0]),
        "buffers_checkpoint": int(bgwriter[1]),
        "buffers_backend": int(bgwriter[2]),
        "autovacuums": {t: int(v["autovacuum"]) for t, v in snap.tables.items() if v["autovacuum"]},
        "autoanalyzes": {t: int(v["autoanalyze"]) for t, v in snap.tables.items() if v["autoanalyze"]},
        "message_heap_mib": round(sizes[0] / 2**20, 1),
        "message_indexes_mib": round(sizes[1] / 2**20, 1),
        "event_mib": round(sizes[2] / 2**20, 1),
    }
    with contextlib.suppress(Exception):  # pgstattuple (contrib): the GIN index's pending list
        stats.bench.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        pending = stats.bench.execute(
            "SELECT pending_pages, pending_tuples FROM pgstatginindex('message_search_vector')"
        ).fetchone()
        out["gin_pending_pages"], out["gin_pending_tuples"] = int(pending[0]), int(pending[1])  # type: ignore[index]
    if stats.has_statements:
        row = stats.admin.execute(
            "SELECT max(max_exec_time) FROM pg_stat_statements WHERE query LIKE '%%INSERT INTO messaging_message%%'"
            " AND dbid = (SELECT oid FROM pg_database WHERE datname = %s)",
            [stats.db_name],
        ).fetchone()
        out["send_statement_max_ms"] = round(float(row[0] or 0), 2) if row else None
    return out
