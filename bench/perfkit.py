"""What ``bench/idle.py``, ``bench/fanout.py`` and ``bench/storm.py`` share.

The server and relay processes, ``/proc`` sampling, the benchmark database (``hc_perf_bench`` by
default, created and migrated, users and groups seeded with one SQL statement each), development
tokens, and ``bench/swarm.py`` (the socket client, in its own process) driven over a pipe.

The generic helpers (processes, ``/proc``, the benchmark database, Redis, ``--rev`` exports) are
``bench/harness.py``'s, defined there once for every benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import (  # the helpers every benchmark shares: defined there once
    Target,
    bench_env,
    create_database,
    dev_uid,
    die_with_parent,
    free_port,
    proc_cpu,
    proc_rss,
    spawn,
    stop,
    wait_healthy,
    wait_port,
)
from harness import clear_redis as clear_redis
from harness import export_source as export_source
from harness import log as log  # re-exported for the scripts
from harness import machine_busy as machine_busy
from harness import raise_fd_limit as raise_fd_limit
from harness import wait_for_quiet as wait_for_quiet

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1
LEAN_WS = "core.ws_protocol:LeanWebSocketProtocol"
# Where it was before issue 20 moved the shared library to core/ (a --rev from before then).
LEAN_WS_BEFORE_CORE = "healthchat.ws_protocol:LeanWebSocketProtocol"
# uvicorn's --ws: its names, or our lean sans-I/O protocol ("lean", as the Dockerfile serves).
WS_IMPLEMENTATIONS = ("lean", "websockets", "websockets-sansio", "wsproto")


def ws_arg(name: str, source: Path = ROOT) -> str:
    """uvicorn's ``--ws`` for the server run from ``source`` (the working tree or a ``--rev``)."""
    if name != "lean":
        return name
    return LEAN_WS if (source / "core" / "ws_protocol.py").exists() else LEAN_WS_BEFORE_CORE


# --- /proc sampling ---------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (uvicorn ``--workers``: the worker processes)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry.name))
    return sorted(out)


def services_cpu_by_pid() -> dict[int, float]:
    """CPU-seconds used so far by each PostgreSQL and Redis process."""
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if (entry / "comm").read_text().strip() in ("postgres", "redis-server"):
                    out[int(entry.name)] = proc_cpu(int(entry.name))
    return out


class ServicesCpu:
    """PostgreSQL + Redis CPU-seconds between ``__init__`` and ``since()``: processes alive at
    the end count from the start (or from their birth); backends that exited in between are
    missed (a lower bound when many connections come and go)."""

    def __init__(self) -> None:
        self.before = services_cpu_by_pid()

    def since(self) -> float:
        after = services_cpu_by_pid()
        return sum(max(0.0, cpu - self.before.get(pid, 0.0)) for pid, cpu in after.items())


def services_cpu() -> float:
    return sum(services_cpu_by_pid().values())


# --- processes ------------------------------------------------------------------------------------


class Server:
    """The real server: ``uvicorn healthchat.asgi:application`` as production runs it."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        ws: str = "websockets",
        workers: int = 1,
        port: int | None = None,
        extra_env: dict[str, str] | None = None,
        boot: list[str] | None = None,
        source: Path = ROOT,
    ) -> None:
        self.env = {**env, **(extra_env or {})}
        self.log_path = log_path
        self.ws = ws
        self.workers = workers
        self.port = port or free_port()
        self.boot = boot
        self.source = source
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v1/"

    def args(self) -> list[str]:
        head = self.boot or [sys.executable, "-m", "uvicorn"]
        args = [
            *head,
            "healthchat.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--ws",
            ws_arg(self.ws, self.source),
            "--log-level",
            "warning",
            "--no-access-log",
            "--backlog",
            "4096",
        ]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        return args

    def start(self, healthy: bool = True, timeout: float = 60.0) -> None:
        self.proc = spawn(self.args(), self.env, self.log_path, cwd=self.source)
        if healthy:
            wait_healthy(self.port, self.proc, timeout)
            if self.workers > 1:  # every worker up (each answers /healthz itself)
                deadline = time.monotonic() + 60
                while len(self.pids()) < self.workers + 1 and time.monotonic() < deadline:
                    time.sleep(0.2)
                time.sleep(1.0)

    def pids(self) -> list[int]:
        """The processes that serve sockets: the worker processes, or the one process."""
        assert self.proc is not None
        if self.workers > 1:
            return [self.proc.pid, *children(self.proc.pid)]
        return [self.proc.pid]

    def serving_pids(self) -> list[int]:
        pids = self.pids()
        return pids[1:] if self.workers > 1 else pids

    def rss(self) -> int:
        return sum(proc_rss(pid, tree=False) for pid in self.pids())

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += proc_cpu(pid)
        return total

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop(self.proc, sig)

    def log_counts(self) -> dict[str, int]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return {
            "tracebacks": text.count("Traceback"),
            "errors": text.count("ERROR"),
            "warnings": text.count(" WARNING "),
        }


class Relay:
    """``bench/relay.py``: plain ``websockets``, no auth, no database."""

    def __init__(self, env: dict[str, str], log_path: Path, seconds: float) -> None:
        self.port = free_port()
        self.proc = spawn(
            [
                sys.executable,
                str(BENCH / "relay.py"),
                "--port",
                str(self.port),
                "--seconds",
                str(int(seconds)),
            ],
            env,
            log_path,
        )
        wait_port(self.port, self.proc)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v1/"

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def rss(self) -> int:
        return proc_rss(self.proc.pid, tree=False)

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc)


class Swarm:
    """``bench/swarm.py --control``: one JSON command per line in, one JSON line out."""

    def __init__(self, log_path: Path) -> None:
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "swarm.py"), "--control"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float, what: str = "command") -> dict[str, Any]:
        try:
            reply: dict[str, Any] = json.loads(self.lines.get(timeout=timeout))
        except queue.Empty as exc:
            raise RuntimeError(f"swarm: no answer to {what} in {timeout}s") from exc
        if reply.get("event") == "error":
            raise RuntimeError(f"swarm: {reply}")
        return reply

    def command(self, timeout: float, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.answer(timeout, command["cmd"])

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def quit(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send(cmd="quit")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop(self.proc)
        self._log.close()


# --- database, Redis, tokens -------------------------------------------------------------------


def setup_django(target: Target, tmp: Path) -> dict[str, str]:
    """This process's environment pointed at ``target``, Django set up, the database created and
    migrated; returns the environment for the children."""
    env = bench_env(tmp, target)
    os.environ.clear()
    os.environ.update(env)
    # bench/ comes first on sys.path when a script here runs, and bench/messaging.py would shadow
    # the messaging app: the code under test goes first instead.
    sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() not in (BENCH, ROOT))]
    create_database(target.db_name)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return env


def phone(tag: int, index: int) -> str:
    """E.164 numbers of bench users: ``+1203<tag><index:06d>`` (tag 0-9 keeps the sets apart)."""
    return f"+1203{tag}{index:06d}"


def seed_users(count: int, tag: int, role: str = "patient") -> list[tuple[int, str]]:
    """``count`` registered users (one INSERT … SELECT for those missing); ``[(id, phone)]``."""
    from django.db import connection

    phones = [phone(tag, i) for i in range(count)]
    uids = [dev_uid(p) for p in phones]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO accounts_user (password, is_superuser, phone_number, firebase_uid, role,
                                       display_name, is_active, is_staff, created_at, updated_at)
            SELECT '!', false, p, u, %(role)s, 'Bench ' || p, true, false, now(), now()
            FROM unnest(%(phones)s::text[], %(uids)s::text[]) AS t(p, u)
            ON CONFLICT (phone_number) DO NOTHING
            """,
            {"phones": phones, "uids": uids, "role": role},
        )
        cursor.execute("SELECT phone_number, id FROM accounts_user WHERE phone_number = ANY(%s)", [phones])
        ids = dict(cursor.fetchall())
    return [(int(ids[p]), p) for p in phones]


def seed_group(name: str, member_ids: list[int]) -> int:
    """A group conversation (``name`` identifies it) with exactly ``member_ids`` as active members
    (the first is the owner), its messages and events erased; returns its id."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM messaging_conversation WHERE kind = 'group' AND name = %s ORDER BY id LIMIT 1",
            [name],
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute(
                """
                INSERT INTO messaging_conversation (kind, e2ee, name, description,
                    history_visible_to_new_members, last_seq, last_event, legal_hold, created_at,
                    created_by_id)
                VALUES ('group', false, %s, '', false, 0, 0, false, now(), %s) RETURNING id
                """,
                [name, member_ids[0]],
            )
            row = cursor.fetchone()
        conversation_id = int(row[0])
        cursor.execute("DELETE FROM messaging_membership WHERE conversation_id = %s", [conversation_id])
        cursor.execute(
            """
            INSERT INTO messaging_membership (role, joined_at, joined_seq, joined_event,
                delivered_seq, read_seq, conversation_id, user_id)
            SELECT CASE WHEN o = 1 THEN 'owner' ELSE 'member' END, now(), 0, 0, 0, 0, %s, u
            FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(u, o)
            """,
            [conversation_id, member_ids],
        )
        clear_conversations([conversation_id], cursor)
    return conversation_id


def seed_pairs(pairs: int, tag: int) -> list[tuple[int, int, int]]:
    """``pairs`` patient/patient direct conversations (users ``tag`` and ``tag + 1``), messages
    erased; ``[(conversation_id, user_a, user_b)]``."""
    from django.db import connection, transaction

    a = seed_users(pairs, tag)
    b = seed_users(pairs, tag + 1)
    keys = [f"{min(x[0], y[0])}:{max(x[0], y[0])}" for x, y in zip(a, b, strict=True)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO messaging_conversation (kind, direct_key, e2ee, name, description,
                history_visible_to_new_members, last_seq, last_event, legal_hold, created_at,
                created_by_id)
            SELECT 'direct', k, false, '', '', false, 0, 0, false, now(), c
            FROM unnest(%s::text[], %s::bigint[]) AS t(k, c)
            ON CONFLICT DO NOTHING
            """,
            [keys, [x[0] for x in a]],
        )
        cursor.execute("SELECT direct_key, id FROM messaging_conversation WHERE direct_key = ANY(%s)", [keys])
        ids = dict(cursor.fetchall())
        conv = [int(ids[k]) for k in keys]
        cursor.execute(
            """
            INSERT INTO messaging_membership (role, joined_at, joined_seq, joined_event,
                delivered_seq, read_seq, conversation_id, user_id)
            SELECT 'member', now(), 0, 0, 0, 0, c, u
            FROM unnest(%s::bigint[], %s::bigint[]) AS t(c, u)
            WHERE NOT EXISTS (SELECT 1 FROM messaging_membership m
                              WHERE m.conversation_id = t.c AND m.user_id = t.u)
            """,
            [conv + conv, [x[0] for x in a] + [y[0] for y in b]],
        )
        clear_conversations(conv, cursor)
    return [(c, x[0], y[0]) for c, x, y in zip(conv, a, b, strict=True)]


def clear_conversations(conversation_ids: list[int], cursor: Any) -> None:
    """A clean slate (this benchmark's own database): no messages or events anywhere, these
    conversations' counters and cursors back to zero."""
    cursor.execute("TRUNCATE messaging_event, messaging_message CASCADE")
    cursor.execute(
        "UPDATE messaging_conversation SET last_seq = 0, last_event = 0, last_message_at = NULL"
        " WHERE id = ANY(%s)",
        [conversation_ids],
    )
    cursor.execute(
        "UPDATE messaging_membership SET read_seq = 0, delivered_seq = 0, joined_seq = 0,"
        " joined_event = 0 WHERE conversation_id = ANY(%s)",
        [conversation_ids],
    )


def tokens(phones: Iterable[str], lifetime: int = 4 * 3600) -> list[str]:
    from accounts.firebase import mint_dev_token

    return [mint_dev_token(p, lifetime=lifetime) for p in phones]


def close_django() -> None:
    from django.db import connections

    connections.close_all()


# --- reporting ------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_table(rows: list[tuple[str, Any, Any]], names: tuple[str, str] = ("healthchat", "relay")) -> None:
    """One row per metric: ours, the relay's and the ratio (ours / relay)."""
    print(f"{'metric':<46} {names[0]:>12} {names[1]:>12} {'ratio':>9}")
    print("-" * 82)
    for label, a, b in rows:
        ratio = "-"
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            ratio = f"{a / b:.3f}"
        print(f"{label:<46} {fmt(a):>12} {fmt(b):>12} {ratio:>9}")
