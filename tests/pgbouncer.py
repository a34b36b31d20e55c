"""PgBouncer (Debian package ``pgbouncer``) on a free loopback port, for the live tests.

Transaction pooling in front of a server the test names (a private cluster of
``tests/pgcluster.py`` or the shared one); trust authentication still needs an ``auth_file``;
PgBouncer refuses to run as root, so as root it runs as the ``postgres`` system user. ``restart``
stops it (``SIGTERM``: immediate, every client and server connection cut) and starts it again on
the same port, as an operator's restart or a crash does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.live import free_port

MISSING = (
    "pgbouncer is not installed: `make scale-tools` installs it (Debian package pgbouncer); "
    "`make test` does so before running the tests"
)


def pgbouncer_bin() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if not found:
        raise RuntimeError(MISSING)
    return found


class PgBouncer:
    """One PgBouncer process; ``url(dbname)`` is what the servers connect to."""

    def __init__(self, server_port: int, *, pool_size: int = 10, max_client_conn: int = 500) -> None:
        self.server_port = server_port
        self.root = Path(tempfile.mkdtemp(prefix="hc-pgbouncer-"))
        self.port = free_port()
        self.log_path = self.root / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        (self.root / "userlist.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmax_client_conn = {max_client_conn}\n"
            # psycopg sends none of these; a client that does would otherwise be refused.
            "ignore_startup_parameters = extra_float_digits\n"
            "server_reset_query =\n"
            "server_check_delay = 0\n"
            f"logfile = {self.log_path}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n"
            "log_connections = 0\nlog_disconnections = 0\n"
        )
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)

    def url(self, dbname: str, application_name: str | None = None) -> str:
        query = f"?application_name={application_name}" if application_name else ""
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}{query}"

    def start(self, timeout: float = 15.0) -> None:
        command = [pgbouncer_bin(), str(self.root / "pgbouncer.ini")]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited ({self.process.returncode}):\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer not listening after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop it (immediate shutdown: every connection cut), stay down ``down_for`` seconds,
        start it again on the same port."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def pgbouncer(server_port: int, **options: int) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(server_port, **options)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.close()
