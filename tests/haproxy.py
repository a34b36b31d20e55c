"""HAProxy (Debian package ``haproxy``) running the project's own ``deploy/haproxy.cfg`` on a free
loopback port, in front of up to three server processes, for the live tests and
``bench/messaging.py --proxy haproxy``.

The configuration's addresses come from the environment (``HAPROXY_BIND``,
``HAPROXY_STATS_SOCKET``, ``HC_WEB1``..``HC_WEB3``); a slot without a process points at a port
nothing listens on (that server is DOWN). ``command`` talks to the admin socket (``set server
healthchat/web1 state drain``) without socat.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "haproxy.cfg"
BACKEND = "healthchat"
SLOTS = ("web1", "web2", "web3")
MISSING = (
    "haproxy is not installed: `make scale-tools` installs it (Debian package haproxy); "
    "`make test` does so before running the tests"
)


def haproxy_bin() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if not found:
        raise RuntimeError(MISSING)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HAProxy:
    """One HAProxy process on ``deploy/haproxy.cfg``; ``ws_url`` / ``base_url`` are its front."""

    def __init__(self, backend_ports: Sequence[int]) -> None:
        if not 1 <= len(backend_ports) <= len(SLOTS):
            raise ValueError(f"1 to {len(SLOTS)} backends")
        self.root = Path(tempfile.mkdtemp(prefix="hc-haproxy-"))
        self.socket_path = self.root / "admin.sock"
        self.log_path = self.root / "haproxy.log"
        self.port = _free_port()
        self.backend_ports = list(backend_ports)
        unused = _free_port()  # nothing listens there: an empty slot is DOWN
        self.env = {
            **os.environ,
            "HAPROXY_BIND": f"127.0.0.1:{self.port}",
            "HAPROXY_STATS_SOCKET": str(self.socket_path),
            "HAPROXY_MAXCONN": "4000",  # within a test machine's file descriptor limit
            **{
                f"HC_WEB{i + 1}": f"127.0.0.1:{backend_ports[i] if i < len(backend_ports) else unused}"
                for i in range(len(SLOTS))
            },
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v1/"

    @property
    def used(self) -> list[str]:
        return list(SLOTS[: len(self.backend_ports)])

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until every used server is UP (a backend starts DOWN)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [haproxy_bin(), "-db", "-f", str(CONFIG)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.wait_status(dict.fromkeys(self.used, "UP"), timeout)

    def reload(self, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """A new HAProxy process on the same configuration takes over the port (``-sf``: the old
        one stops listening and keeps serving its open connections until they close, or
        ``hard-stop-after``). Returns the old process."""
        old = self.process
        assert old is not None
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [haproxy_bin(), "-db", "-f", str(CONFIG), "-sf", str(old.pid)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.wait_status(dict.fromkeys(self.used, "UP"), timeout)
        return old

    def command(self, line: str) -> str:
        """One admin-socket command (``show stat``, ``set server healthchat/web1 state drain``)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers: name -> row (``status``, ``scur``, ``stot`` ...)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {row["svname"]: row for row in rows if row.get("pxname") == BACKEND and row["svname"] in SLOTS}

    def wait_status(self, wanted: dict[str, str], timeout: float = 30.0) -> dict[str, dict[str, str]]:
        """Wait until each named server's status starts with the wanted one (``UP``, ``DOWN``,
        ``DRAIN``, ``MAINT``)."""
        deadline = time.monotonic() + timeout
        last: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited ({self.process.returncode}):\n{self.log()}")
            with contextlib.suppress(OSError):
                last = self.servers()
                if all(last.get(name, {}).get("status", "").startswith(s) for name, s in wanted.items()):
                    return last
            time.sleep(0.1)
        raise RuntimeError(f"servers not {wanted} after {timeout}s: {self.summary(last)}\n{self.log()}")

    @staticmethod
    def summary(rows: dict[str, dict[str, str]]) -> dict[str, tuple[str, str, str]]:
        """name -> (status, current sessions, total sessions)."""
        return {name: (row["status"], row["scur"], row["stot"]) for name, row in rows.items()}

    def drain(self, name: str) -> None:
        self.command(f"set server {BACKEND}/{name} state drain")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def haproxy(backend_ports: Sequence[int]) -> Iterator[HAProxy]:
    proxy = HAProxy(backend_ports)
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.close()
