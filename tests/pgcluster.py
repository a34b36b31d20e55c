"""A private PostgreSQL server for tests and benchmarks that need their own server limits.

Running PostgreSQL out of connections must be a real possible failure in a test, and must never
happen to the shared server every other test (and developer) uses: this starts a throwaway
cluster (``initdb`` + ``pg_ctl``, the binaries of the installed PostgreSQL) on a free loopback
port with a small ``max_connections``, no Unix socket, durability off, and removes it after.
As root the cluster runs as the ``postgres`` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests.live import ROOT, free_port

MISSING = (
    "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: `make pg-server` installs "
    "them (Debian package postgresql); `make test` does so before running the tests"
)


def bin_dir() -> Path:
    """The newest installed PostgreSQL's ``bin`` (Debian keeps them off ``PATH``)."""
    on_path = shutil.which("initdb")
    if on_path:  # a link on PATH (/usr/local/bin/initdb): the directory of all of them
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError(MISSING)
    return found[-1].parent


class PrivatePostgres:
    """A started cluster: ``url(name)``, ``create_database``, ``backends``; ``stop`` removes it."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="hc-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.log()}"
            )

    def start(self, *, primary: PrivatePostgres | None = None) -> None:
        """``initdb`` and start; ``primary`` given: a streaming replica of that cluster instead
        (``pg_basebackup -R``: its data directory and its standby configuration, ~0.2 s)."""
        if primary is None:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E",
                      "UTF8", "--locale=C")  # fmt: skip
        else:
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                      "-D", str(self.data), "-R", "-X", "stream", "-c", "fast")  # fmt: skip
        for _attempt in range(5):  # a free port can be taken between the check and the bind
            self.port = free_port()
            settings = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                f"-c max_connections={self.max_connections} -c superuser_reserved_connections=0 "
                "-c shared_buffers=32MB -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60",
                          "-o", settings, "start")  # fmt: skip
                return
            except RuntimeError:
                if "Address already in use" not in self.log():
                    raise
        raise RuntimeError(f"PostgreSQL did not start after 5 ports:\n{self.log()}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def replica(self) -> PrivatePostgres:
        """A started streaming replica of this cluster, on a port of its own (same limits: a hot
        standby needs max_connections at least the primary's); the caller stops it."""
        standby = PrivatePostgres(self.max_connections)
        try:
            standby.start(primary=self)
        except BaseException:
            standby.stop()
            raise
        return standby

    def set_apply_delay(self, delay: str) -> None:
        """On a replica: apply the primary's changes ``delay`` late (``recovery_min_apply_delay``,
        e.g. ``'1500ms'``; ``'0'`` catches up): an artificially lagging replica."""
        with self.connect() as conn:
            conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
            conn.execute("SELECT pg_reload_conf()")

    def url(self, dbname: str, application_name: str | None = None) -> str:
        query = f"?application_name={application_name}" if application_name else ""
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}{query}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}", autocommit=True
        )

    def create_database(self, name: str, *, migrate: bool = True) -> None:
        """A new database, with the project's migrations applied (``manage.py migrate``)."""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        if migrate:
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "healthchat.settings.test",
                "DATABASE_URL": self.url(name),
            }
            done = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if self.port:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


class BackendSampler:
    """Counts, every few milliseconds on a connection of its own, the server's sessions with
    ``application_name`` (``pg_stat_activity``); ``peak`` is the most seen at once."""

    def __init__(self, cluster: PrivatePostgres, application_name: str, interval: float = 0.005) -> None:
        import threading

        self.cluster, self.application_name, self.interval = cluster, application_name, interval
        self.peak = 0
        self.samples = 0
        self.refused: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackendSampler:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.samples == 0 and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with self.cluster.connect() as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    [self.application_name],
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                self.samples += 1
                time.sleep(self.interval)


@contextlib.contextmanager
def private_postgres(max_connections: int) -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres(max_connections)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
