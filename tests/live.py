"""Helpers to run real server processes for tests (free ports, readiness, clean shutdown)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A real ASGI server in its own process group."""

    def __init__(self, args: list[str], env: Mapping[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.args = list(args)
        self.env = dict(env)
        self._log = log_path.open("wb")
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def restart(self, sig: int = signal.SIGKILL, timeout: float = 60.0) -> None:
        """End the process with ``sig`` (SIGKILL: a crash; SIGTERM: a deploy) and start the same
        command on the same port; returns once the new process answers (its log is appended)."""
        self.stop(sig)
        self._log = self.log_path.open("ab")
        self.process = self._spawn()
        self.wait_ready(timeout)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/v1/"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=1).status_code in (200, 503):
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def uvicorn_args(port: int, boot: bool = False, access_log: bool = False) -> list[str]:
    """uvicorn as production runs it; ``boot`` serves the test Firebase certificate too;
    ``access_log``: uvicorn's access log on and every logger at debug (quiet otherwise)."""
    head = (
        [sys.executable, str(ROOT / "tests" / "live_boot.py")] if boot else [sys.executable, "-m", "uvicorn"]
    )
    return [
        *head,
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
        "core.ws_protocol:LeanWebSocketProtocol",
        *(["--log-level", "debug"] if access_log else ["--log-level", "warning", "--no-access-log"]),
    ]


def runserver_args(port: int) -> list[str]:
    """``manage.py runserver`` (daphne's, as ``make run`` starts it; it logs every request),
    with the test Firebase certificate served like ``uvicorn_args(boot=True)``."""
    boot = str(ROOT / "tests" / "live_boot.py")
    return [sys.executable, boot, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]


def celery_env(extra_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a Celery process beside this test: this test worker's database and
    Redis (test settings), then ``extra_env`` on top (it may name another Redis, e.g. Sentinel)."""
    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="healthchat.settings.test",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=str(settings.REDIS_URL),
    )
    env.update(extra_env)
    return env


@contextmanager
def celery_process(
    args: list[str], env: Mapping[str, str], log_path: Path, ready: str, what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery process (``args``) in its own process group, logging to ``log_path``; yielded once
    its log shows ``ready``; stopped on exit (SIGTERM, then SIGKILL), unless a test killed it."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 60
            while ready not in log_path.read_text(errors="replace"):
                assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, f"the {what} never became ready"
                time.sleep(0.2)
            yield process
        finally:
            if process.poll() is None:  # a test may have killed it already
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=15)
                except ProcessLookupError:  # the group died between poll() and killpg()
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)


@contextmanager
def celery_worker(
    extra_env: Mapping[str, str], log_path: Path, name: str, launcher: list[str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker (solo pool) on this test worker's database and Redis broker, with
    ``extra_env`` on top; ready when it logs ``ready.``, stopped (SIGTERM, then SIGKILL) on exit.
    ``launcher``: the command that stands for ``python -m celery`` (a boot script that patches
    an outside service first, e.g. ``notifications/tests/worker_boot.py``)."""
    args = [*(launcher or [sys.executable, "-m", "celery"]), "-A", "healthchat", "worker"]
    args += ["--pool=solo", "--loglevel=INFO", "--without-heartbeat", "--without-mingle", "--without-gossip"]
    args.append(f"--hostname={name}-{uuid.uuid4().hex[:8]}@%h")
    with celery_process(args, celery_env(extra_env), log_path, "ready.", "worker") as process:
        yield process


def clear_celery_queue() -> None:
    """Empty this test worker's Celery queue (its keys only: the Redis database is shared), so
    a worker does not run tasks an earlier test, or an aborted run, left behind."""
    import redis
    from django.conf import settings

    from healthchat.celery import app as celery_app

    queue = celery_app.conf.task_default_queue
    client = redis.Redis.from_url(str(settings.REDIS_URL))
    client.delete(queue, "unacked", "unacked_index", "unacked_mutex", f"_kombu.binding.{queue}")


def shared_media_env(media_root: Path) -> dict[str, str]:
    """What a live server and a live worker share: file storage, the Redis broker (tasks really
    queued, not eager) and the channel layer's prefix."""
    from django.conf import settings

    return {
        "MEDIA_ROOT": str(media_root),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_BROKER_URL": str(settings.REDIS_URL),
        "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
    }


@contextmanager
def fresh_celery_worker(
    extra_env: Mapping[str, str], log_path: Path, name: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``celery_worker`` on an emptied queue, emptied again once it has stopped."""
    clear_celery_queue()
    try:
        with celery_worker(extra_env, log_path, name) as process:
            yield process
    finally:
        clear_celery_queue()


@contextmanager
def celery_beat(
    extra_env: Mapping[str, str], tmp: Path, max_interval: float | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery beat (the project's schedule; its schedule and pid files in ``tmp``, its log
    ``tmp/beat-<n>.log``, returned by ``beat_log``) on this test worker's database and Redis
    broker, with ``extra_env`` on top; yielded once it has started, stopped on exit.
    ``max_interval``: the most seconds it sleeps between looking at the schedule."""
    args = [sys.executable, "-m", "celery", "-A", "healthchat", "beat", "--loglevel=INFO"]
    args += [f"--schedule={tmp / 'beat-schedule'}", f"--pidfile={tmp / 'beat.pid'}"]
    if max_interval is not None:
        args.append(f"--max-interval={max_interval:g}")
    log_path = tmp / f"beat-{time.monotonic_ns()}.log"
    with celery_process(args, celery_env(extra_env), log_path, "beat: Starting", "beat") as process:
        yield process


def beat_log(tmp: Path) -> str:
    """Everything the beats started by ``celery_beat`` in ``tmp`` logged."""
    return "".join(p.read_text(errors="replace") for p in sorted(tmp.glob("beat-*.log")))
