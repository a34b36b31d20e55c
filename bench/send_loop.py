"""PostgreSQL's CPU per message of the send transaction, measured on the writing backend itself.

``python bench/send_loop.py [--batch 200 2 1] [--messages 10000] [--variants new old new old]
[--old-rev 74d07e6] [--perf PREFIX]`` (from the repository root, venv active; PostgreSQL's
server binaries installed: ``make pg-server``). Heavy for a minute: run it under
``flock /tmp/hc-bench.lock`` on a shared machine.

Starts a throwaway PostgreSQL with ``pg_stat_statements`` (``bench/dbstats.py``), migrates it
(the working tree's migrations), seeds 500 patient/doctor pairs, then runs the loop writer's
transaction in a loop on one connection — BEGIN, the conversations' locks, the send statement,
the push outbox statement, COMMIT; prepared statements with generic plans, as the writers run
them — for batches of ``--batch`` sends, and prints per message: the backend's CPU (from
``/proc``: a figure other processes hardly move), the WAL written, statements (foreign-key
checks included), buffer hits, WAL records, execution time and the send statement's slowest
run. ``--variants``: ``new`` is the working tree's send statement, ``old`` the one at
``--old-rev``; alternate them to compare within one run. ``--perf PREFIX``: ``perf record -g``
of the backend for each variant and batch (``PREFIX-<variant>-<batch>.data``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import uuid
from pathlib import Path
from typing import Any

import dbstats
from harness import ROOT, Target, proc_cpu, seed, setup_django


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[200, 2, 1], help="sends per transaction")
    parser.add_argument(
        "--messages", type=int, default=10000, help="messages per run at 200 (a tenth below 10)"
    )
    parser.add_argument("--variants", nargs="+", choices=["new", "old"], default=["new", "old", "new", "old"])
    parser.add_argument("--old-rev", default="74d07e6", help="the revision whose send statement is 'old'")
    parser.add_argument("--perf", default="", help="perf record the backend to PREFIX-<variant>-<batch>.data")
    args = parser.parse_args()
    with dbstats.private_postgres() as port:
        os.environ["BENCH_PG_PORT"] = str(port)
        setup_django(Target(db_name="hc_send_loop", redis_url="redis://127.0.0.1:6379/15", prefix="sendloop"),
                     Path(tempfile.mkdtemp(prefix="hc-send-loop-")))  # fmt: skip
        Loop(port, seed(500), args).run_all()
    return 0


class Loop:
    def __init__(self, port: int, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
        import psycopg

        from messaging import services

        self.args, self.rows, self.counter = args, rows, 0
        dsn = f"host=127.0.0.1 port={port} user=postgres"
        self.conn = psycopg.connect(f"{dsn} dbname=hc_send_loop", autocommit=True)
        self.admin = psycopg.connect(f"{dsn} dbname=postgres", autocommit=True)
        self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.conn.execute("SET plan_cache_mode = force_generic_plan")
        self.backend = int(self.conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        old_source = subprocess.run(
            ["git", "show", f"{args.old_rev}:messaging/services/statements.py"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        old = types.ModuleType("old_statements")
        exec(compile(old_source, "old_statements", "exec"), old.__dict__)  # our own file at a revision
        self.statements = {"new": services.send_statement(), "old": old.send_statement()}

    def run_all(self) -> None:
        self.run(self.statements["new"], 50, 5000)  # warm: plans, caches, the tables' first pages
        for variant in self.args.variants:
            for batch in self.args.batch:
                perf = None
                if self.args.perf:
                    out = f"{self.args.perf}-{variant}-{batch}.data"
                    perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(self.backend), "-o", out],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                    time.sleep(0.5)
                total = self.args.messages if batch > 10 else self.args.messages // 10
                result = self.run(self.statements[variant], batch, total)
                if perf is not None:
                    perf.send_signal(2)
                    perf.wait()
                print(variant, json.dumps(result), flush=True)

    def run(self, statement: str, batch: int, total: int) -> dict[str, Any]:
        from django.utils import timezone

        from messaging.services.statements import LOCK_BATCH_SQL
        from notifications.services import push_enqueue_statement

        cpu0, wall0 = proc_cpu(self.backend), time.monotonic()
        lsn0 = self.admin.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        self.admin.execute("SELECT pg_stat_statements_reset()")
        done = 0
        while done < total:
            chosen = [self.rows[(self.counter + i) % len(self.rows)] for i in range(batch)]
            self.counter += batch
            conversations: list[int] = [r["conversation_id"] for r in chosen]
            senders: list[int] = [r["patient"].pk for r in chosen]
            params: dict[str, Any] = {
                "ord": list(range(batch)),
                "conv": conversations,
                "sender": senders,
                "cid": [uuid.uuid4() for _ in chosen],
                "body": [
                    f"Hello doctor, the pain in my left knee is better today {self.counter + i}"
                    for i in range(batch)
                ],
                "reply": [None] * batch,
                "enc": [False] * batch,
                "ment": [None] * batch,
                "now": timezone.now(),
            }
            with self.conn.transaction():
                self.conn.execute(LOCK_BATCH_SQL, {"ids": sorted(set(conversations))}, prepare=True)
                answer = self.conn.execute(statement, params, prepare=True).fetchall()
                written = [(r[1], conversations[r[0]], senders[r[0]]) for r in answer if r[1] is not None]
                hook = push_enqueue_statement(written)
                if hook is not None:
                    self.conn.execute(hook.sql, hook.params, prepare=True).fetchall()
            done += batch
        cpu = proc_cpu(self.backend) - cpu0
        wal = self.admin.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", [lsn0]).fetchone()[0]  # type: ignore[index]
        stats = self.admin.execute(
            "SELECT sum(calls), sum(shared_blks_hit), sum(wal_records), sum(total_exec_time),"
            " max(max_exec_time) FILTER (WHERE query LIKE '%%INSERT INTO messaging_message%%')"
            " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'hc_send_loop')"
        ).fetchone()
        assert stats is not None
        return {
            "batch": batch,
            "cpu_us_per_msg": round(cpu / done * 1e6, 1),
            "wal_bytes_per_msg": round(float(wal) / done, 1),
            "statements_per_msg": round(float(stats[0]) / done, 2),
            "buffer_hits_per_msg": round(float(stats[1]) / done, 1),
            "wal_records_per_msg": round(float(stats[2]) / done, 2),
            "exec_us_per_msg": round(float(stats[3]) / done * 1000, 1),
            "send_statement_max_ms": round(float(stats[4] or 0), 1),
            "wall_s": round(time.monotonic() - wall0, 1),
        }


if __name__ == "__main__":
    sys.exit(main())
