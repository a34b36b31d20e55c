"""Messaging benchmark: the real stack against the bare relay, with the same load generator.

``python bench/messaging.py [--sockets 1000] [--seconds 30] [--quick]`` (from the repository root,
venv active; PostgreSQL on 127.0.0.1:5432 as ``postgres`` and Redis on 127.0.0.1:6379).

1. Prepares the ``hc_bench`` database (created and migrated if needed, ``--sockets / 2``
   patient/doctor pairs with a direct conversation each, earlier messages truncated) and clears
   this benchmark's keys in Redis db 2.
2. Starts the real server (``uvicorn healthchat.asgi:application --loop uvloop --http httptools
   --ws websockets``, one process, ``healthchat.settings.local`` on ``hc_bench`` and Redis db 2,
   development tokens, ``DEBUG`` off unless ``--debug``) from the working tree, or from the commit
   ``--rev`` names (exported with ``git archive``, so edits in progress are not measured).
3. Runs ``bench/loadgen.py`` in its own process: warm-up, ``--sockets`` authenticated idle sockets
   (RSS per idle socket), saturation (every sender keeps ``--window`` messages in flight for
   ``--seconds``), then offered load (every sender sends 1 message/s for ``--seconds``). Server
   CPU comes from ``/proc/<pid>/stat`` around each phase; every acked / received ``client_id``
   is checked against the ``messaging_message`` table, and ``seq`` for gaps.
4. Does the same against ``bench/relay.py`` and prints a table: our figure, the relay's, ratio.

Every child runs for a bounded time and is stopped at the end (and dies with this process);
all traffic stays on 127.0.0.1. ``--profile FILE`` records the server with py-spy during the
saturation phase (collapsed stacks; ``pip install py-spy`` into the venv first).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DB_NAME = "hc_bench"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/2"
PREFIX = "hcbench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- /proc sampling ---------------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid: int) -> int:
    """Resident set size in bytes."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


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
        server = delta.get(self.pid, ("", 0.0))[1]
        loadgen = delta.get(self.loadgen_pid, ("", 0.0))[1]
        postgres = sum(cpu for comm, cpu in delta.values() if comm == "postgres")
        services = sum(cpu for comm, cpu in delta.values() if comm in SERVICES)
        others: dict[str, float] = {}
        for pid, (comm, cpu) in delta.items():
            if pid not in (self.pid, self.loadgen_pid) and comm not in SERVICES and cpu > 0:
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
        time.sleep(0.1)
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
        time.sleep(0.5)
    raise RuntimeError("server not healthy")


def die_with_parent() -> None:
    """In the child (Linux): SIGTERM when this benchmark process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
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


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM to the child's own process group (started with a new session), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class LoadGenProcess:
    """``bench/loadgen.py --control``: one JSON command per line in, one JSON line out."""

    def __init__(self, url: str, pairs_path: Path, log_path: Path, body_bytes: int) -> None:
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "loadgen.py"),
                "--url",
                url,
                "--pairs",
                str(pairs_path),
                "--control",
                "--body-bytes",
                str(body_bytes),
            ],
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

    def command(self, timeout: float, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        try:
            reply: dict[str, Any] = json.loads(self.lines.get(timeout=timeout))
        except queue.Empty as exc:
            raise RuntimeError(f"load generator: no answer to {command['cmd']} in {timeout}s") from exc
        return reply

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
def bench_env(tmp: Path, debug: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "healthchat.settings.local",
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": REDIS_URL,
            "FIREBASE_DEV_TOKENS": "true",
            "DEV_TOKEN_KEY_PATH": str(tmp / "dev-token-key.pem"),
            "CHANNEL_LAYER_PREFIX": PREFIX,
            "CACHE_KEY_PREFIX": PREFIX,
            "DEBUG": "true" if debug else "false",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def create_database() -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def phone(role: str, index: int) -> str:
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

    with transaction.atomic():
        specialty, _ = Specialty.objects.get_or_create(slug="bench", defaults={"name": "Benchmark"})
        users = {
            u.phone_number: u
            for u in User.objects.filter(phone_number__startswith="+1202", firebase_uid__startswith="dev-")
        }
        missing: list[User] = []
        for i in range(pairs):
            for role in ("patient", "doctor"):
                number = phone(role, i)
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
        doctors = [users[phone("doctor", i)] for i in range(pairs)]
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
            a, b = users[phone("patient", i)], users[phone("doctor", i)]
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
        # A clean slate: no earlier bench messages, counters and cursors back to zero.
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE messaging_event, messaging_message CASCADE")
        Conversation.objects.filter(pk__in=existing.values()).update(
            last_seq=0, last_event=0, last_message_at=None
        )
        Membership.objects.filter(conversation_id__in=existing.values()).update(read_seq=0, delivered_seq=0)
    out = []
    for key, (i, a, b) in sorted(keys.items(), key=lambda item: item[1][0]):
        out.append({"index": i, "conversation_id": existing[key], "patient": a, "doctor": b})
    return out


def clear_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        batch = list(client.scan_iter(match=f"{PREFIX}*", count=1000))
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


# --- one target -------------------------------------------------------------------------------
def run_target(
    name: str,
    proc: subprocess.Popen[bytes],
    url: str,
    pairs_path: Path,
    tmp: Path,
    args: argparse.Namespace,
    verify: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    gen = LoadGenProcess(url, pairs_path, tmp / f"loadgen-{name}.log", args.body_bytes)
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
            ("offered", {"rate": 1.0}),
        ):
            dump = tmp / f"{name}-{phase}.json"
            before = Sample(proc.pid, gen.proc.pid)
            profiler = None
            if args.profile and verify and phase == "saturation":
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
            if profiler is not None:
                finish_profiler(profiler, out)
            result["resources"] = usage = after.since(before)
            delivered = max(1, int(result["delivered"]))
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


def start_profiler(pid: int, args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy (optional): sample the server during the saturation phase, collapsed stacks out."""
    py_spy = Path(sys.executable).with_name("py-spy")
    path = Path(args.profile).resolve()
    proc = subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(args.seconds)),
            "--rate",
            "97",
            "--format",
            "raw",
            "--output",
            str(path),
            "--nonblocking",
            "--threads",
            *{"cpu": [], "gil": ["--gil"], "wall": ["--idle"]}[args.profile_mode],
        ],
        stdout=(tmp / "py-spy.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, path


def finish_profiler(profiler: tuple[subprocess.Popen[bytes], Path], out: dict[str, Any]) -> None:
    proc, path = profiler
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out["profile"] = str(path)


# --- report ---------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def summary(ours: dict[str, Any], relay: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    def lost(target: dict[str, Any]) -> int:
        total = 0
        for phase in ("saturation", "offered"):
            result, db = target[phase], target[phase].get("db", {})
            total += result["lost"] + db.get("acked_not_in_db", 0) + db.get("received_not_in_db", 0)
        return total

    def duplicated(target: dict[str, Any]) -> int:
        return sum(t["duplicated"] + t.get("db", {}).get("duplicate_rows", 0) for t in phases(target))

    def phases(target: dict[str, Any]) -> list[dict[str, Any]]:
        return [target["saturation"], target["offered"]]

    rows: list[tuple[str, Any, Any]] = []
    for label, pick in (
        ("saturation msgs/s (end to end)", lambda t: t["saturation"]["msgs_per_s"]),
        ("saturation p50 latency ms", lambda t: t["saturation"]["latency_ms"]["p50"]),
        ("saturation p99 latency ms", lambda t: t["saturation"]["latency_ms"]["p99"]),
        ("offered msgs/s delivered", lambda t: t["offered"]["msgs_per_s"]),
        ("offered p50 latency ms", lambda t: t["offered"]["latency_ms"]["p50"]),
        ("offered p99 latency ms", lambda t: t["offered"]["latency_ms"]["p99"]),
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
        ("unacked after grace (late, not lost)", lambda t: sum(p["unacked"] for p in phases(t))),
        ("other processes' cores (saturation)", lambda t: t["saturation"]["resources"]["other_cores"]),
        ("other processes' cores (offered)", lambda t: t["offered"]["resources"]["other_cores"]),
    ):
        rows.append((label, pick(ours), pick(relay)))
    return rows


def print_table(rows: list[tuple[str, Any, Any]]) -> None:
    print(f"{'metric':<42} {'healthchat':>12} {'relay':>12} {'ratio':>9}")
    print("-" * 78)
    for label, a, b in rows:
        ratio = "-"
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            ratio = f"{a / b:.3f}"
        print(f"{label:<42} {fmt(a):>12} {fmt(b):>12} {ratio:>9}")


# --- main -------------------------------------------------------------------------------------------
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
    parser.add_argument("--profile", help="py-spy collapsed stacks of the server during saturation")
    parser.add_argument(
        "--profile-mode",
        choices=["cpu", "gil", "wall"],
        default="gil",
        help="py-spy: running threads, the thread holding the GIL, or every thread (idle too)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=60.0, help="wait up to this long for an idle machine first"
    )
    parser.add_argument("--skip-relay", action="store_true")
    parser.add_argument(
        "--rev", help="benchmark this commit (exported with git archive) instead of the working tree"
    )
    parser.add_argument("--json", dest="json_out", help="also write every figure to this file")
    args = parser.parse_args()
    if args.quick:
        args.sockets, args.seconds = min(args.sockets, 200), min(args.seconds, 5.0)
    pairs_count = max(1, args.sockets // 2)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.sockets + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the children

    tmp = Path(tempfile.mkdtemp(prefix="hc-bench-"))
    source, revision = export_source(args.rev, tmp)
    env = bench_env(tmp, args.debug)
    os.environ.clear()
    os.environ.update(env)
    # bench/ comes first on sys.path when run as a script, and bench/messaging.py would shadow the
    # messaging app: the code under test goes first instead.
    sys.path[:] = [str(source), *(p for p in sys.path if Path(p or ".").resolve() not in (BENCH, ROOT))]
    log(f"work files in {tmp}")

    create_database()
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    rows = seed(pairs_count)
    clear_redis()
    write_pairs(rows, tmp / "pairs.json", with_tokens=True)
    write_pairs(rows, tmp / "relay-pairs.json", with_tokens=False)
    log(f"{pairs_count} pairs ready")

    results: dict[str, Any] = {
        "revision": revision,
        "sockets": 2 * pairs_count,
        "seconds": args.seconds,
        "window": args.window,
        "cores": os.cpu_count(),
        "debug": args.debug,
    }
    results["busy_cores_at_start"] = wait_for_quiet(0.3, args.quiet_wait)
    port = free_port()
    server = spawn(
        [
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
            "websockets",
            "--log-level",
            "warning",
            "--no-access-log",
            "--backlog",
            "4096",
        ],
        env,
        tmp / "server.log",
        cwd=source,
    )
    try:
        wait_healthy(port, server)
        results["healthchat"] = run_target(
            "healthchat", server, f"ws://127.0.0.1:{port}/ws/v1/", tmp / "pairs.json", tmp, args, verify=True
        )
    finally:
        stop(server)
    from django.db import connection

    connection.close()
    results["healthchat"]["sequences"] = verify_sequences([r["conversation_id"] for r in rows])
    server_log = (tmp / "server.log").read_text(errors="replace")
    results["healthchat"]["server_log"] = {
        "tracebacks": server_log.count("Traceback"),
        "errors": server_log.count("ERROR"),
        "warnings": server_log.count(" WARNING "),
    }

    if not args.skip_relay:
        relay_port = free_port()
        relay = spawn(
            [
                sys.executable,
                str(BENCH / "relay.py"),
                "--port",
                str(relay_port),
                "--seconds",
                str(int(3 * args.seconds + 3 * args.grace + 600)),
            ],
            env,
            tmp / "relay.log",
        )
        results["busy_cores_before_relay"] = wait_for_quiet(0.3, args.quiet_wait)
        try:
            wait_port(relay_port, relay)
            results["relay"] = run_target(
                "relay",
                relay,
                f"ws://127.0.0.1:{relay_port}/ws/v1/",
                tmp / "relay-pairs.json",
                tmp,
                args,
                False,
            )
        finally:
            stop(relay)

    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print()
    print(
        f"revision {revision}: {results['sockets']} sockets ({pairs_count} pairs), {args.seconds:g} s per phase, "
        f"window {args.window}, {os.cpu_count()} cores, logs in {tmp}"
    )
    if "relay" in results:
        print_table(summary(results["healthchat"], results["relay"]))
    ours = results["healthchat"]
    print(f"database check: {ours['sequences']}; server log: {ours['server_log']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
