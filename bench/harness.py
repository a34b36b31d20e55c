"""What every benchmark script shares, defined once: processes (server, relay, load generator),
/proc sampling, ``--rev`` exports, the benchmark databases (created, migrated, seeded), Redis,
development tokens and the checks of what clients saw against the ``messaging_message`` rows.

* ``bench/messaging.py`` (throughput against the bare relay and socket.io) and ``bench/soak.py``
  (1,000 sockets for minutes) seed patient/doctor pairs (``seed``) and drive the pairs load
  generator (``bench/loadgen.py``, or its Node counterpart ``bench/socketio/loadgen.mjs``) through
  ``LoadGenProcess``, pinned with ``taskset`` (``pin_sets``) when asked;
* ``bench/idle.py``, ``bench/fanout.py``, ``bench/storm.py`` and ``bench/rest.py`` run ``Server``
  and ``Relay``, seed users and groups with one SQL statement per table (``seed_users``,
  ``seed_group``, ``seed_pairs``) and drive ``bench/loadgen.py --swarm`` through ``Swarm``.

Each benchmark names its own database, Redis database and key prefix (``Target``).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Target:
    """Where a benchmark keeps its data: its own database, Redis database and key prefix."""

    db_name: str = "hc_perf_bench"
    redis_url: str = "redis://127.0.0.1:6379/10"
    prefix: str = "hcperf"

    @property
    def database_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{pg_port()}/{self.db_name}"


def pg_port() -> int:
    """The PostgreSQL server's port: 5432, or ``BENCH_PG_PORT`` (a private server:
    ``bench/messaging.py --private-services``)."""
    return int(os.environ.get("BENCH_PG_PORT", "5432"))


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- /proc sampling ---------------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid: int, *, tree: bool = True) -> int:
    """Resident set size in bytes of ``pid`` and (``tree``) its descendants (uvicorn ``--workers``)."""
    pids = tree_pids(pid) if tree else [pid]
    return sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE for p in pids)


def tree_pids(root: int) -> list[int]:
    """``root`` and every descendant process."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def all_processes() -> dict[int, tuple[str, float]]:
    """pid → (command name, CPU-seconds) of every process on the machine."""
    out: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = ((entry / "comm").read_text().strip(), proc_cpu(int(entry.name)))
            except (OSError, IndexError, ValueError):
                continue
    return out


SERVICES = ("postgres", "redis-server")


def machine_busy() -> float:
    """Busy CPU-seconds of the whole machine since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLK_TCK


class Sample:
    """CPU of the target, of PostgreSQL + Redis, of the load generator and of everything else."""

    def __init__(self, pid: int, loadgen_pid: int) -> None:
        self.pid = pid
        self.server_pids = set(tree_pids(pid))
        self.loadgen_pid = loadgen_pid
        self.wall = time.monotonic()
        self.machine = machine_busy()
        self.processes = all_processes()

    def since(self, before: Sample) -> dict[str, Any]:
        wall = self.wall - before.wall
        delta: dict[int, tuple[str, float]] = {}
        for pid, (comm, cpu) in self.processes.items():
            old = before.processes.get(pid)
            delta[pid] = (comm, cpu - old[1] if old and old[0] == comm else cpu)
        server = sum(delta.get(p, ("", 0.0))[1] for p in self.server_pids)
        loadgen = delta.get(self.loadgen_pid, ("", 0.0))[1]
        postgres = sum(cpu for comm, cpu in delta.values() if comm == "postgres")
        services = sum(cpu for comm, cpu in delta.values() if comm in SERVICES)
        others: dict[str, float] = {}
        for pid, (comm, cpu) in delta.items():
            if pid not in self.server_pids and pid != self.loadgen_pid and comm not in SERVICES and cpu > 0:
                others[comm] = others.get(comm, 0.0) + cpu
        top = sorted(others.items(), key=lambda item: -item[1])[:3]
        machine = self.machine - before.machine
        return {
            "wall_s": round(wall, 2),
            "server_cpu_s": round(server, 2),
            "server_cores": round(server / wall, 2),
            "pg_redis_cpu_s": round(services, 2),
            "postgres_cpu_s": round(postgres, 2),
            "redis_cpu_s": round(services - postgres, 2),
            "loadgen_cores": round(loadgen / wall, 2),
            "machine_busy_cores": round(machine / wall, 2),
            # the rest of the machine: other processes (short-lived ones too), kernel work
            "other_cores": round(max(0.0, machine - server - services - loadgen) / wall, 2),
            "other_top": {comm: round(cpu / wall, 2) for comm, cpu in top},
        }


def wait_for_quiet(limit: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until the machine is busy less than ``limit`` cores over 3 s."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy()
        time.sleep(3.0)
        busy = (machine_busy() - before) / 3.0
        if busy < limit or time.monotonic() >= deadline:
            return round(busy, 2)
        log(f"machine busy ({busy:.2f} cores): waiting for it to calm down")


# --- processes ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    wait_port(port, proc, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            body = response.read()
            if response.status == 200:
                return
            log("healthz:", response.status, body[:300])
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError("server not healthy")


def die_with_parent() -> None:
    """In the child (Linux): SIGTERM when this benchmark process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """``args`` in its own session, output appended to ``log_path`` (a restarted server keeps
    one log), stopped when this process dies."""
    with log_path.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


PROFILE_MODES = {"cpu": [], "gil": ["--gil"], "wall": ["--idle"]}


def start_py_spy(pid: int, path: Path, seconds: float, mode: str, tmp: Path) -> subprocess.Popen[bytes]:
    """py-spy (optional, ``pip install py-spy`` into the venv) sampling ``pid`` for ``seconds``:
    raw collapsed stacks to ``path``; ``mode`` is cpu, gil or wall."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("py-spy")),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "97",
            "--format",
            "raw",
            "--output",
            str(path),
            "--nonblocking",
            "--threads",
            *PROFILE_MODES[mode],
        ],
        stdout=(tmp / "py-spy.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def export_source(rev: str | None, tmp: Path) -> tuple[Path, str]:
    """The code to benchmark: the working tree, or ``rev`` exported to ``tmp/src``."""
    if rev is None:
        dirty = git("status", "--porcelain", "--", ".", ":!bench", ":!docs")
        return ROOT, git("rev-parse", "--short", "HEAD") + ("+uncommitted changes" if dirty else "")
    source = tmp / "src"
    source.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    return source, git("rev-parse", "--short", rev)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """``sig`` to the child's own process group (started with a new session), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


NODE_TOOLS = BENCH / "socketio"
NODE_MISSING = (
    "bench/socketio/node_modules is missing: `make bench-tools` installs the Node load generator's and "
    "the socket.io relay's packages (bench/socketio/package-lock.json); `make test` does so too"
)


def node_tools() -> Path:
    """bench/socketio/ with its npm packages installed (``make bench-tools``), or an error that says so."""
    if not (NODE_TOOLS / "node_modules" / "socket.io").is_dir():
        raise SystemExit(NODE_MISSING)
    return NODE_TOOLS


def pinned(args: list[str], cpus: str | None) -> list[str]:
    """``args`` run under ``taskset -c cpus`` (Linux; unchanged when ``cpus`` is None)."""
    return ["taskset", "-c", cpus, *args] if cpus else args


def pin_sets(enabled: bool) -> tuple[str | None, str | None]:
    """CPU lists for (the servers under test, the load generator): the load generator alone on the
    last core, the servers on the others; (None, None) when off or on one core."""
    cores = os.cpu_count() or 1
    if not enabled or cores < 2:
        return None, None
    servers = "0" if cores == 2 else f"0-{cores - 2}"
    return servers, str(cores - 1)


class LoadGenProcess:
    """The pairs load generator with ``--control``: one JSON command per line in, one JSON line
    out. ``loadgen``: ``python`` (``bench/loadgen.py``, the healthchat and bare-relay protocol) or
    ``node`` (``bench/socketio/loadgen.mjs``: the same commands and answers, ``protocol`` ``ws``
    for healthchat and the bare relay, ``socketio`` for the socket.io relay; ``url`` may list
    several comma-separated). ``cpus``: pinned there with ``taskset``."""

    def __init__(
        self,
        url: str,
        pairs_path: Path,
        log_path: Path,
        body_bytes: int,
        *,
        loadgen: str = "python",
        protocol: str = "ws",
        cpus: str | None = None,
    ) -> None:
        if loadgen == "node":
            command = [
                "node",
                str(node_tools() / "loadgen.mjs"),
                "--protocol",
                protocol,
            ]
        elif protocol == "ws":
            command = [sys.executable, str(BENCH / "loadgen.py")]
        else:
            raise ValueError(f"the Python load generator speaks only the ws protocol, not {protocol}")
        command += ["--url", url, "--pairs", str(pairs_path), "--control", "--body-bytes", str(body_bytes)]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            pinned(command, cpus),
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

    def command(
        self, timeout: float, on_progress: Callable[[dict[str, Any]], None] | None = None, **command: Any
    ) -> dict[str, Any]:
        """Send one command and wait for its answer (``timeout`` s at most between two lines);
        ``progress`` lines on the way go to ``on_progress``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        while True:
            try:
                reply: dict[str, Any] = json.loads(self.lines.get(timeout=timeout))
            except queue.Empty as exc:
                raise RuntimeError(f"load generator: no answer to {command['cmd']} in {timeout}s") from exc
            if reply.get("event") != "progress":
                return reply
            if on_progress is not None:
                on_progress(reply)

    def quit(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"cmd": "quit"}\n')
            self.proc.stdin.flush()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stop(self.proc)
        self._log.close()


# --- database -------------------------------------------------------------------------------------
def bench_env(tmp: Path, target: Target, debug: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "healthchat.settings.local",
            "DATABASE_URL": target.database_url,
            "REDIS_URL": target.redis_url,
            "FIREBASE_DEV_TOKENS": "true",
            "DEV_TOKEN_KEY_PATH": str(tmp / "dev-token-key.pem"),
            "CHANNEL_LAYER_PREFIX": target.prefix,
            "CACHE_KEY_PREFIX": target.prefix,
            "CELERY_TASK_DEFAULT_QUEUE": target.prefix,
            "DEBUG": "true" if debug else "false",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def create_database(db_name: str) -> None:
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={pg_port()} user=postgres dbname=postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db_name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{db_name}"')


def pair_phone(role: str, index: int) -> str:
    return f"+1202{2 if role == 'patient' else 3}{index:06d}"


def dev_uid(phone_number: str) -> str:
    """What ``accounts.firebase.mint_dev_token`` puts in ``sub`` for this phone number."""
    from accounts.firebase import DEV_UID_PREFIX

    return DEV_UID_PREFIX + uuid.uuid5(uuid.NAMESPACE_URL, f"tel:{phone_number}").hex


def seed(pairs: int) -> list[dict[str, Any]]:
    """``pairs`` patient/doctor pairs with a direct conversation each; returns their ids."""
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import DoctorProfile, Specialty, User
    from messaging.models import Conversation, Membership

    with connection.cursor() as cursor:
        clear_messages(cursor)
    with transaction.atomic():
        specialty, _ = Specialty.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
        users = {
            u.phone_number: u
            for u in User.objects.filter(phone_number__startswith="+1202", firebase_uid__startswith="dev-")
        }
        missing: list[User] = []
        for i in range(pairs):
            for role in ("patient", "doctor"):
                number = pair_phone(role, i)
                if number not in users:
                    missing.append(
                        User(
                            phone_number=number,
                            firebase_uid=dev_uid(number),
                            role=role,
                            display_name=f"Bench {role} {i}",
                        )
                    )
        for user in User.objects.bulk_create(missing, batch_size=1000):
            users[user.phone_number] = user
        now = timezone.now()
        doctors = [users[pair_phone("doctor", i)] for i in range(pairs)]
        have = set(DoctorProfile.objects.filter(user__in=doctors).values_list("user_id", flat=True))
        DoctorProfile.objects.bulk_create(
            [
                DoctorProfile(
                    user=d,
                    specialty=specialty,
                    licence_number=f"BENCH-{d.pk}",
                    jurisdiction="US-DC",
                    verification_status=DoctorProfile.Verification.VERIFIED,
                    verified_at=now,
                )
                for d in doctors
                if d.pk not in have
            ],
            batch_size=1000,
        )
        keys = {}
        for i in range(pairs):
            a, b = users[pair_phone("patient", i)], users[pair_phone("doctor", i)]
            keys[f"{min(a.pk, b.pk)}:{max(a.pk, b.pk)}"] = (i, a, b)
        existing = dict(Conversation.objects.filter(direct_key__in=keys).values_list("direct_key", "id"))
        new = Conversation.objects.bulk_create(
            [
                Conversation(kind=Conversation.Kind.DIRECT, direct_key=key, created_by=a)
                for key, (_i, a, _b) in keys.items()
                if key not in existing
            ],
            batch_size=1000,
        )
        Membership.objects.bulk_create(
            [
                Membership(conversation=c, user=u, role=Membership.Role.MEMBER)
                for c in new
                for u in keys[c.direct_key][1:]  # type: ignore[index]
            ],
            batch_size=1000,
        )
        existing.update({c.direct_key: c.pk for c in new})
        # A clean slate (the messages went first, above): counters and cursors back to zero.
        Conversation.objects.filter(pk__in=existing.values()).update(
            last_seq=0, last_event=0, last_message_at=None
        )
        Membership.objects.filter(conversation_id__in=existing.values()).update(read_seq=0, delivered_seq=0)
        # Fresh planner statistics for the seeded tables, as autovacuum keeps them on a server
        # in use (seeded a moment ago, they would be planned as nearly empty). Not the emptied
        # message tables: "empty" would plan scans that the run's 100,000 rows then outgrow.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE accounts_user, messaging_conversation, messaging_membership")
    out = []
    for key, (i, a, b) in sorted(keys.items(), key=lambda item: item[1][0]):
        out.append({"index": i, "conversation_id": existing[key], "patient": a, "doctor": b})
    return out


def clear_redis(target: Target) -> None:
    import redis

    client = redis.Redis.from_url(target.redis_url)
    try:
        batch = list(client.scan_iter(match=f"{target.prefix}*", count=1000))
        for start in range(0, len(batch), 1000):
            client.delete(*batch[start : start + 1000])
    finally:
        client.close()


def write_pairs(rows: list[dict[str, Any]], path: Path, with_tokens: bool) -> None:
    from accounts.firebase import mint_dev_token

    pairs = []
    for row in rows:
        pairs.append(
            {
                "conversation_id": row["conversation_id"],
                "sender_token": mint_dev_token(row["patient"].phone_number, lifetime=4 * 3600)
                if with_tokens
                else None,
                "receiver_token": mint_dev_token(row["doctor"].phone_number, lifetime=4 * 3600)
                if with_tokens
                else None,
            }
        )
    path.write_text(json.dumps({"pairs": pairs}))


def verify_phase(dump: Path) -> dict[str, int]:
    """Compare what the load generator saw with the ``messaging_message`` rows."""
    from django.db import connection

    seen = json.loads(dump.read_text())
    sent = seen["sent"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT client_id::text, count(*) FROM messaging_message"
            " WHERE client_id = ANY(%s::uuid[]) GROUP BY client_id",
            [sent],
        )
        rows = dict(cursor.fetchall())
    stored = set(rows)
    acked, received = set(seen["acked"]), set(seen["received"])
    return {
        "rows": sum(rows.values()),
        "acked_not_in_db": len(acked - stored),
        "received_not_in_db": len(received - stored),
        "duplicate_rows": sum(n - 1 for n in rows.values() if n > 1),
        "stored_unacked": len(stored - acked),
    }


def verify_sequences(conversation_ids: list[int]) -> dict[str, int]:
    """Every conversation: seq 1..last_seq with no hole, one message.new event per message."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE c.last_seq <> coalesce(m.n, 0) OR c.last_seq <> coalesce(m.top, 0)),
                   coalesce(sum(m.n), 0),
                   count(*) FILTER (WHERE coalesce(e.n, 0) <> coalesce(m.n, 0))
            FROM messaging_conversation c
            LEFT JOIN (SELECT conversation_id, count(*) n, max(seq) top FROM messaging_message
                       GROUP BY conversation_id) m ON m.conversation_id = c.id
            LEFT JOIN (SELECT conversation_id, count(*) n FROM messaging_event WHERE kind = 'message.new'
                       GROUP BY conversation_id) e ON e.conversation_id = c.id
            WHERE c.id = ANY(%s)
            """,
            [conversation_ids],
        )
        gaps, messages, event_mismatch = cursor.fetchone()
    return {
        "conversations_with_gaps": int(gaps),
        "messages": int(messages),
        "event_mismatch": int(event_mismatch),
    }


# --- setting up a run -------------------------------------------------------------------------------
def raise_fd_limit(sockets: int) -> None:
    """Enough file descriptors for ``sockets`` connections (inherited by the children)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * sockets + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < sockets + 256:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is too low for {sockets} sockets")


def setup_django(
    target: Target, tmp: Path, rev: str | None = None, debug: bool = False
) -> tuple[Path, str, dict[str, str]]:
    """The code under test (working tree or ``rev``), this process's environment pointed at
    ``target``, Django set up and the database created and migrated: (source, revision, env)."""
    source, revision = export_source(rev, tmp)
    env = bench_env(tmp, target, debug)
    os.environ.clear()
    os.environ.update(env)
    # bench/ comes first on sys.path when a script here runs, and bench/messaging.py would shadow
    # the messaging app: the code under test goes first instead.
    sys.path[:] = [str(source), *(p for p in sys.path if Path(p or ".").resolve() not in (BENCH, ROOT))]
    create_database(target.db_name)
    import django
    from django.core.management import call_command

    # Celery's Django fix-up puts the working directory first on sys.path when the code under test
    # creates its app: from the repository root that would import the working tree's apps (and
    # migrations) instead of ``rev``'s, so Django is set up from inside the exported source.
    here = os.getcwd()
    os.chdir(source)
    try:
        django.setup()
        call_command("migrate", verbosity=0)
    finally:
        os.chdir(here)
    return source, revision, env


def uvicorn_args(port: int, workers: int = 1, ws: str = "websockets-sansio") -> list[str]:
    """The real server as production runs it (``workers`` processes behind the one port)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "healthchat.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        ws,
        "--log-level",
        "warning",
        "--no-access-log",
        "--backlog",
        "4096",
        *(["--workers", str(workers)] if workers > 1 else []),
    ]


def server_log_counts(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace")
    return {
        "tracebacks": text.count("Traceback"),
        "errors": text.count("ERROR"),
        "warnings": text.count(" WARNING "),
    }


# --- the idle, fan-out, storm and REST benchmarks: server, relay and swarm processes ---------------

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
    """``bench/loadgen.py --swarm --control``: one JSON command per line in, one JSON line out."""

    def __init__(self, log_path: Path) -> None:
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "loadgen.py"), "--swarm", "--control"],
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


def tagged_phone(tag: int, index: int) -> str:
    """E.164 numbers of bench users: ``+1203<tag><index:06d>`` (tag 0-9 keeps the sets apart)."""
    return f"+1203{tag}{index:06d}"


def seed_users(count: int, tag: int, role: str = "patient") -> list[tuple[int, str]]:
    """``count`` registered users (one INSERT … SELECT for those missing); ``[(id, phone)]``."""
    from django.db import connection

    phones = [tagged_phone(tag, i) for i in range(count)]
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

    with connection.cursor() as cursor:
        clear_messages(cursor)
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
    with connection.cursor() as cursor:
        clear_messages(cursor)
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


def clear_messages(cursor: Any) -> None:
    """No messages or events anywhere (this benchmark's own database). Run before the seed looks
    up its conversations, in its own transaction: the CASCADE reaches every table that refers to
    a message, and through attachments (a group's avatar) the conversations themselves, so the
    seed then creates whatever it needs afresh."""
    cursor.execute("TRUNCATE messaging_event, messaging_message CASCADE")


def clear_conversations(conversation_ids: list[int], cursor: Any) -> None:
    """These conversations' counters and cursors back to zero (their messages went first:
    ``clear_messages``)."""
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
