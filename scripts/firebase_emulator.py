"""Run the Firebase Auth emulator (npm ``firebase-tools``) for tests, and drive its phone flow.

The emulator is Node only (no Java) and works offline for a ``demo-*`` project. Install it
with ``npm ci`` in the repository root; this module runs ``node_modules/.bin/firebase``.

Typical pytest use (one emulator per xdist worker, each on its own free port)::

    @pytest.fixture(scope="session")
    def auth_emulator(tmp_path_factory):
        handle = start_auth_emulator(0, workdir=tmp_path_factory.mktemp("firebase"))
        yield handle
        handle.stop()

    # then: os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = handle.host (before the first
    # firebase-admin auth call), reset_accounts(handle.host, handle.project) between tests,
    # phone_sign_in(handle.host, "+15555550100", handle.project) -> an ID token.

Per-worker emulators on different ports run side by side (each gets its own free hub and
logging ports too). Each costs ~400 MB of memory and ~6-7 s of CPU-bound start-up (three
starting at once on two CPUs took ~18 s). Prefer them to one shared emulator: the phone
endpoints always sign in to the emulator's own project and ``reset_accounts`` wipes it, so
workers sharing one would see and delete each other's users. A shared one is possible
(``python scripts/firebase_emulator.py [PORT]``, then export ``FIREBASE_AUTH_EMULATOR_HOST``,
read back by :func:`emulator_host_from_env`) only for tests that never reset and use unique
phone numbers.

firebase-admin in emulator mode: set ``FIREBASE_AUTH_EMULATOR_HOST`` before the first auth
call and give the app an explicit credential and ``projectId``. Revocation has one-second
granularity: a token issued in the same second as ``revoke_refresh_tokens`` still passes
``check_revoked``.

Every file the emulator writes (``firebase.json``, ``firebase-debug.log``, its stdout/stderr in
``emulator.log``, the hub locator file, the CLI's config store) goes into ``workdir``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__all__ = [
    "DEFAULT_PROJECT",
    "EMULATOR_HOST_ENV",
    "EmulatorError",
    "EmulatorExitedError",
    "EmulatorHandle",
    "emulator_host_from_env",
    "find_free_port",
    "phone_sign_in",
    "reset_accounts",
    "start_auth_emulator",
    "wait_until_ready",
]

DEFAULT_PROJECT = "demo-healthchat"
EMULATOR_HOST_ENV = "FIREBASE_AUTH_EMULATOR_HOST"
REPO_ROOT = Path(__file__).resolve().parent.parent
FIREBASE_BIN = REPO_ROOT / "node_modules" / ".bin" / "firebase"
LOCALHOST = "127.0.0.1"
# Any value is accepted by the emulator; the real API would want a Web API key here.
_API_KEY = "fake-api-key"
_HTTP_TIMEOUT = 10.0


class EmulatorError(RuntimeError):
    """The emulator could not be started, or it answered a request with an error."""


class EmulatorExitedError(EmulatorError):
    """The emulator process exited before it was ready (e.g. a port was taken)."""


def find_free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free right now (the OS picks it; another process may still race us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def emulator_host_from_env() -> str | None:
    """``host:port`` of an already running emulator from ``FIREBASE_AUTH_EMULATOR_HOST``, if set."""
    value = os.environ.get(EMULATOR_HOST_ENV, "").strip()
    return value or None


@dataclass
class EmulatorHandle:
    """A running Auth emulator started by :func:`start_auth_emulator`."""

    process: subprocess.Popen[bytes]
    port: int
    project: str
    workdir: Path
    log_path: Path
    _remove_workdir: bool = field(default=False, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        """``host:port``, the value for ``FIREBASE_AUTH_EMULATOR_HOST``."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        """Environment variables that point firebase-admin at this emulator."""
        return {EMULATOR_HOST_ENV: self.host}

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the emulator's stdout/stderr (for error messages)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no emulator log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the emulator and everything in its process group; idempotent.

        SIGTERM first (the CLI shuts down cleanly in about a second), SIGKILL to the whole
        group if it is still there after ``timeout`` seconds.
        """
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        pgid = self.process.pid  # start_new_session=True: the child leads its own group
        _signal_group(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        # Kill whatever is left in the group (the leader, or any child it spawned).
        _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        _wait_group_gone(pgid, timeout=timeout)
        if self._remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


# Loaded into the emulator's Node process with ``--require``: if the Python process that started
# it dies without calling stop() (SIGKILL, a crashed xdist worker), the emulator is reparented;
# it then kills its own process group instead of running on as a stray. (PR_SET_PDEATHSIG is
# no substitute: it fires when the *thread* that started the child exits.)
_WATCHDOG_JS = """\
"use strict";
const parent = process.ppid;
const timer = setInterval(() => {
  if (process.ppid !== parent) {
    try { process.kill(-process.pid, "SIGKILL"); } catch (e) { /* not a group leader */ }
    process.kill(process.pid, "SIGKILL");
  }
}, 1000);
timer.unref();
"""


def _write_config(workdir: Path, port: int, single_project_mode: bool) -> Path:
    config = {
        "emulators": {
            "auth": {"host": LOCALHOST, "port": port},
            # The CLI also starts a hub (default 4400) and a logging emulator (default 4500).
            # Left unset, emulators starting at the same moment pick the same ports and all but
            # one of them fail (EADDRINUSE on 4500), so every instance gets its own free ports.
            "hub": {"host": LOCALHOST, "port": find_free_port()},
            "logging": {"host": LOCALHOST, "port": find_free_port()},
            "ui": {"enabled": False},
            "singleProjectMode": single_project_mode,
        }
    }
    path = workdir / "firebase.json"
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def wait_until_ready(host: str, timeout: float = 180.0, handle: EmulatorHandle | None = None) -> None:
    """Poll ``http://host/`` until the Auth emulator says it is ready.

    Raises :class:`EmulatorError` on timeout, or at once if ``handle``'s process exits.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        if handle is not None and not handle.is_running():
            raise EmulatorExitedError(
                f"Firebase Auth emulator exited with code {handle.process.returncode} before it "
                f"was ready on {host}. Log ({handle.log_path}):\n{handle.log_tail()}"
            )
        try:
            response = requests.get(f"http://{host}/", timeout=1.0)
            if response.ok and response.json().get("authEmulator", {}).get("ready") is True:
                return
            last_error = f"HTTP {response.status_code}: {response.text[:200]}"
        except (requests.RequestException, ValueError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            detail = f" Log ({handle.log_path}):\n{handle.log_tail()}" if handle is not None else ""
            raise EmulatorError(
                f"Firebase Auth emulator on {host} not ready after {timeout:.0f} s "
                f"(last: {last_error}).{detail}"
            )
        time.sleep(0.1)


def start_auth_emulator(
    port: int,
    project: str = DEFAULT_PROJECT,
    *,
    workdir: Path | None = None,
    timeout: float = 60.0,
    single_project_mode: bool = True,
    firebase_bin: Path = FIREBASE_BIN,
) -> EmulatorHandle:
    """Start the Auth emulator on ``127.0.0.1:port`` and wait until it answers.

    ``port=0`` picks a free port (and retries twice if the emulator exits early, e.g. because
    another process took a port in the meantime). ``workdir`` receives the generated
    ``firebase.json`` and all logs; by default a temporary directory removed by ``stop()``.
    ``single_project_mode=False`` silences the warning for requests naming other project ids
    (admin calls can use them; the phone sign-in endpoints always use ``project``). Use a ``demo-*``
    project: the CLI then needs no login and never calls Google.
    """
    if not firebase_bin.exists():
        raise EmulatorError(
            f"{firebase_bin} not found: run `npm ci` in {REPO_ROOT} to install firebase-tools."
        )
    if shutil.which("node") is None:
        raise EmulatorError("`node` is not on PATH; the Firebase emulator needs Node.js >= 20.")
    if not project.startswith("demo-"):
        raise EmulatorError(f"use a demo-* project id for the emulator, not {project!r}")

    remove_workdir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="firebase-emulator-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)

    attempts = 3 if port == 0 else 1
    for attempt in range(1, attempts + 1):
        chosen = port or find_free_port()
        try:
            return _start_once(
                chosen,
                project,
                workdir=workdir,
                timeout=timeout,
                single_project_mode=single_project_mode,
                firebase_bin=firebase_bin,
                remove_workdir=remove_workdir,
            )
        except EmulatorExitedError:
            if attempt == attempts:
                if remove_workdir:
                    shutil.rmtree(workdir, ignore_errors=True)
                raise
        except BaseException:
            if remove_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _start_once(
    port: int,
    project: str,
    *,
    workdir: Path,
    timeout: float,
    single_project_mode: bool,
    firebase_bin: Path,
    remove_workdir: bool,
) -> EmulatorHandle:
    config_path = _write_config(workdir, port, single_project_mode)
    env = dict(os.environ)
    env.pop(EMULATOR_HOST_ENV, None)
    env.update(
        {
            "CI": "true",  # non-interactive: no prompts, no update check
            "TMPDIR": str(workdir),  # the hub writes its locator file hub-<project>.json here
            "XDG_CONFIG_HOME": str(workdir / "config"),  # the CLI's configstore
            "NO_COLOR": "1",
            "FORCE_COLOR": "0",
        }
    )
    watchdog = workdir / "parent-watchdog.js"
    watchdog.write_text(_WATCHDOG_JS, encoding="utf-8")
    node_options = env.get("NODE_OPTIONS", "")
    env["NODE_OPTIONS"] = f"{node_options} --require {json.dumps(str(watchdog))}".strip()
    log_path = workdir / "emulator.log"
    command = [
        str(firebase_bin),
        "emulators:start",
        "--only",
        "auth",
        "--project",
        project,
        "--config",
        str(config_path),
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,  # firebase-debug.log is written to the working directory
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so stop() can kill it all
        )
    handle = EmulatorHandle(
        process=process,
        port=port,
        project=project,
        workdir=workdir,
        log_path=log_path,
        _remove_workdir=remove_workdir,
    )
    atexit.register(handle.stop)
    try:
        wait_until_ready(handle.host, timeout=timeout, handle=handle)
    except BaseException:
        remove = handle._remove_workdir
        handle._remove_workdir = False  # keep the log for the error message / a retry
        handle.stop()
        handle._remove_workdir = remove
        raise
    return handle


# --- REST helpers ----------------------------------------------------------------------------


def _post(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(url, params={"key": _API_KEY}, json=payload, timeout=_HTTP_TIMEOUT)
    if not response.ok:
        raise EmulatorError(f"POST {url} -> HTTP {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    return body


def phone_sign_in(host: str, phone_number: str, project: str = DEFAULT_PROJECT) -> str:
    """Sign in (or sign up) ``phone_number`` through the emulator's SMS flow; return the ID token.

    sendVerificationCode -> read the code from the emulator -> signInWithPhoneNumber.
    ``host`` is ``host:port`` as in ``FIREBASE_AUTH_EMULATOR_HOST``; ``project`` must be the
    project the emulator was started with (the phone endpoints always use that one). The token
    is unsigned (``alg: none``): only firebase-admin in emulator mode accepts it.
    """
    # The emulator routes these by API key, which it maps to its own (default) project.
    identity = f"http://{host}/identitytoolkit.googleapis.com/v1"
    session_info = _post(f"{identity}/accounts:sendVerificationCode", {"phoneNumber": phone_number})[
        "sessionInfo"
    ]
    response = requests.get(
        f"http://{host}/emulator/v1/projects/{project}/verificationCodes", timeout=_HTTP_TIMEOUT
    )
    if not response.ok:
        raise EmulatorError(f"verificationCodes -> HTTP {response.status_code}: {response.text[:500]}")
    codes: list[dict[str, Any]] = response.json().get("verificationCodes", [])
    code = next((c["code"] for c in reversed(codes) if c.get("sessionInfo") == session_info), None)
    if code is None:
        raise EmulatorError(f"the emulator holds no verification code for {phone_number}")
    result = _post(f"{identity}/accounts:signInWithPhoneNumber", {"sessionInfo": session_info, "code": code})
    id_token: str = result["idToken"]
    return id_token


def reset_accounts(host: str, project: str = DEFAULT_PROJECT) -> None:
    """Delete every user (and pending verification code) of ``project`` in the emulator."""
    url = f"http://{host}/emulator/v1/projects/{project}/accounts"
    response = requests.delete(url, timeout=_HTTP_TIMEOUT)
    if not response.ok:
        raise EmulatorError(f"DELETE {url} -> HTTP {response.status_code}: {response.text[:500]}")


def main(argv: list[str] | None = None) -> int:
    """Run one emulator in the foreground: ``python scripts/firebase_emulator.py [PORT] [PROJECT]``.

    Prints ``FIREBASE_AUTH_EMULATOR_HOST=host:port`` once ready; Ctrl-C / SIGTERM stops it.
    """
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0]) if args else 9099
    project = args[1] if len(args) > 1 else DEFAULT_PROJECT
    started = time.monotonic()
    handle = start_auth_emulator(port, project)
    print(
        f"{EMULATOR_HOST_ENV}={handle.host}  (project {project}, ready in "
        f"{time.monotonic() - started:.1f} s, logs in {handle.workdir})",
        flush=True,
    )

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        while handle.is_running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
