"""200 SDK clients across server restarts (issue 19): 100 patient–doctor pairs, one Node
HealthchatClient each (clients/js/test/restart.live.test.js), all sending; this test kills the
uvicorn process (SIGKILL, then SIGTERM) while messages are in flight and starts a new one on the
same port. Every client reconnects on its own; every message is acknowledged once and delivered
to both sides exactly once, in order; the database holds each client_id once. The two sides talk
by lines (Node's stdout, Node's stdin); the figures (reconnect p50/p99, messages) are printed."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
from django.db.models import Count

from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging.models import Message

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SDK = Path(__file__).resolve().parent.parent / "clients" / "js"
PAIRS = 100
LINE_TIMEOUT = 120.0

ENV = {
    # The reconnect hint of `ready`: clients spread their reconnects over 0.2–2 s.
    "HEALTHCHAT_WS_RECONNECT_MIN_MS": "200",
    "HEALTHCHAT_WS_RECONNECT_MAX_MS": "2000",
    "HEALTHCHAT_E2EE_POLICY": "optional",
}


def _reader(stream: IO[str], lines: queue.Queue[str | None], transcript: list[str]) -> None:
    for line in stream:
        transcript.append(line)
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _expect(lines: queue.Queue[str | None], prefix: str, transcript: list[str]) -> str:
    deadline = time.monotonic() + LINE_TIMEOUT
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"no `{prefix}` line in {LINE_TIMEOUT} s:\n{''.join(transcript)[-6000:]}"
            ) from None
        if line is None:
            raise AssertionError(f"node ended before `{prefix}`:\n{''.join(transcript)[-6000:]}")
        if line.startswith(prefix):
            return line


def test_200_sdk_clients_across_server_restarts(
    live_server_factory: Any, make_token: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = shutil.which("node")
    assert node, "Node 20+ is needed for the SDK tests (make test installs clients/js)"
    server = live_server_factory(ENV)
    pairs = []
    for _ in range(PAIRS):
        patient, doctor = PatientFactory.create(), DoctorFactory.create()
        pairs.append(
            {
                role: {
                    "id": user.pk,
                    "token": make_token(uid=user.firebase_uid, phone_number=user.phone_number),
                }
                for role, user in (("patient", patient), ("doctor", doctor))
            }
        )
    users_file = tmp_path / "users.json"
    users_file.write_text(json.dumps(pairs))
    env = dict(
        os.environ, HC_HTTP_URL=server.base_url, HC_WS_URL=server.ws_url, HC_RESTART_USERS=str(users_file)
    )

    process = subprocess.Popen(
        [node, "test/restart.live.test.js"],
        cwd=SDK,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdin and process.stdout
    lines: queue.Queue[str | None] = queue.Queue()
    transcript: list[str] = []
    threading.Thread(target=_reader, args=(process.stdout, lines, transcript), daemon=True).start()
    downtime: list[float] = []
    try:
        for sig in (signal.SIGKILL, signal.SIGTERM):
            _expect(lines, "HC-PHASE sending", transcript)
            stopped = time.monotonic()
            server.restart(sig)
            downtime.append(time.monotonic() - stopped)
            process.stdin.write(f"restarted {int(time.time() * 1000)}\n")
            process.stdin.flush()
            _expect(lines, "HC-PHASE reconnected", transcript)
        _expect(lines, "HC-PHASE sending", transcript)
        process.stdin.write("stop\n")
        process.stdin.flush()
        result_line = _expect(lines, "HC-RESULT", transcript)
        assert process.wait(timeout=LINE_TIMEOUT) == 0, "".join(transcript)[-6000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(transcript)
    assert "# fail 0" in output and "# pass 1" in output, output[-6000:]
    result = json.loads(result_line.split(" ", 1)[1])
    assert result["clients"] == 2 * PAIRS
    assert result["messages"] > 2 * PAIRS, "every client sent across the restarts"

    # The database: every acknowledged message once (no client_id twice), nothing else.
    conversations = Message.objects.filter(
        sender__in=[p["patient"]["id"] for p in pairs] + [p["doctor"]["id"] for p in pairs]
    )
    assert conversations.filter(kind=Message.Kind.TEXT).count() == result["messages"]
    assert not conversations.values("sender", "client_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    with capsys.disabled():
        print(
            f"\n200 SDK clients across restarts: {result['messages']} messages, {result['deliveries']} deliveries"
            f" in {result['durationMs'] / 1000:.1f} s; server down {', '.join(f'{d:.1f}' for d in downtime)} s"
        )
        for figures in result["restarts"]:
            print(
                f"  restart {figures['restart']}: ready after the new server answered p50 {figures['reconnectP50']} ms"
                f" p99 {figures['reconnectP99']} ms; socket lost → ready p50 {figures['outageP50']} ms"
                f" p99 {figures['outageP99']} ms; close errors {figures['closeErrors']}"
            )
