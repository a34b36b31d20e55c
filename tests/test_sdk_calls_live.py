"""The SDK's calls (clients/js/src/calls.js: CallManager, CallSession) against a live server and a
real coturn: this test starts coturn and uvicorn (TURN credentials on, a short ring timeout),
creates one patient/doctor pair with their direct conversation per scenario, and runs
``clients/js/test/calls.live.test.js`` with ``node --test``. The Node peers are real libwebrtc
(@roamhq/wrtc) relaying through coturn (``iceTransportPolicy: "relay"``): connect + media + data +
hang-up history, reject, cancel, missed, glare, multi-device, resume after a socket drop, and an
interop call answered here by a Python aiortc peer that signals over our socket.

While Node runs, a real Celery beat (``tests.live.celery_beat``, the project's schedule with the
call sweep every half second) and a real Celery worker run ``calls.tasks.calls_sweep`` (the
server runs Celery eagerly, so the ring timer is the sweep's job), whose ``call.missed`` events
reach the server's sockets through Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from django.conf import settings as dj_settings

from calls.tests.webrtc import coturn, dominant_frequency
from messaging.tests.factories import pair
from tests.aiortc_peer import aiortc_callee
from tests.live import beat_log, celery_beat, celery_worker
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "clients" / "js"
TURN_SECRET = "sdk-calls-turn-secret-" + os.urandom(4).hex()
RING_TIMEOUT_SECONDS = 10
SCENARIOS = ("connect", "reject", "cancel", "missed", "glare", "multi", "resume", "interop")
AIORTC_TONE_HZ = 880.0
NODE_TONE_HZ = 440.0


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory: Any) -> Any:
    with coturn(TURN_SECRET, tmp_path_factory.mktemp("coturn-sdk")) as port:
        yield port


def test_sdk_calls_through_coturn(
    live_server_factory: Any, make_token: Any, turn_server: int, tmp_path: Path
) -> None:
    node = shutil.which("node")
    assert node, "Node 20+ is needed for the SDK tests (make test installs clients/js)"
    assert (SDK / "node_modules" / "@roamhq" / "wrtc").is_dir(), "run `npm ci` in clients/js (make test does)"
    server = live_server_factory(
        {
            "TURN_SECRET": TURN_SECRET,
            "TURN_URLS": f"turn:127.0.0.1:{turn_server}?transport=udp",
            "CALL_RING_TIMEOUT_SECONDS": str(RING_TIMEOUT_SECONDS),
            "CALL_RECONNECT_GRACE_SECONDS": "30",
            "HEALTHCHAT_WS_RECONNECT_MIN_MS": "50",
            "HEALTHCHAT_WS_RECONNECT_MAX_MS": "300",
            "HEALTHCHAT_WS_RATE": "500",
            "HEALTHCHAT_WS_BURST": "500",
        }
    )

    def token(user: Any) -> str:
        return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number))

    pairs: dict[str, Any] = {}
    for name in SCENARIOS:
        patient, doctor, conversation = pair()
        pairs[name] = {
            "conversation_id": conversation.pk,
            "caller": {"id": patient.pk, "token": token(patient)},
            "callee": {"id": doctor.pk, "token": token(doctor)},
        }
    timings_file = tmp_path / "timings.json"
    env = dict(os.environ)
    env.update(
        HC_HTTP_URL=server.base_url,
        HC_WS_URL=server.ws_url,
        HC_CALL_PAIRS=json.dumps(pairs),
        HC_RING_TIMEOUT_SECONDS=str(RING_TIMEOUT_SECONDS),
        HC_TIMINGS_FILE=str(timings_file),
    )
    interop_token = pairs["interop"]["callee"]["token"]

    async def scenario() -> tuple[int, str, dict[str, Any] | BaseException]:
        callee_ws = await WsClient.connect(server.ws_url, interop_token)
        callee = asyncio.ensure_future(
            aiortc_callee(callee_ws, server.base_url, interop_token, tone_hz=AIORTC_TONE_HZ)
        )
        process = await asyncio.create_subprocess_exec(
            node,
            "--test",
            "--test-reporter=spec",
            "test/calls.live.test.js",
            cwd=SDK,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 240)
        try:
            result: dict[str, Any] | BaseException = await asyncio.wait_for(callee, 15)
        except BaseException as error:  # reported with Node's output below
            result = error
        await callee_ws.close()
        return int(process.returncode or 0), out.decode(errors="replace"), result

    # The sweep's beat and worker, on the server's database, Redis and channel layer.
    celery_env = {
        **server.env,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_BROKER_URL": str(dj_settings.REDIS_URL),
        "CALL_SWEEP_SECONDS": "0.5",
        "DATABASE_POOL_MAX_SIZE": "0",
    }
    with (
        celery_worker(celery_env, tmp_path / "worker.log", "sdk-calls"),
        celery_beat(celery_env, tmp_path),
    ):
        started = time.perf_counter()
        with patch("aioice.ice.get_host_addresses", return_value=["127.0.0.1"]):
            code, output, callee_result = asyncio.run(scenario())
        elapsed = time.perf_counter() - started
    assert code == 0, f"node --test failed:\n{output[-10000:]}\nserver log:\n{server.log()}"
    assert re.search(r"\bfail 0\b", output), output[-3000:]
    assert re.search(r"\bpass 8\b", output), output[-3000:]
    assert "calls.tasks.calls_sweep" in beat_log(tmp_path), beat_log(tmp_path)[-3000:]
    worker_output = (tmp_path / "worker.log").read_text(errors="replace")
    assert re.search(r"Task calls\.tasks\.calls_sweep\[\S+\] succeeded", worker_output), worker_output[-3000:]

    # The aiortc side of the interop call: it answered through the relay, got the Node peer's
    # tone, echoed its data-channel message and saw the hang-up.
    assert isinstance(callee_result, dict), repr(callee_result)
    assert callee_result["messages"] == ["ping from node"]
    assert callee_result["local_candidates"]
    assert all(c["candidate"].split()[7] == "relay" for c in callee_result["local_candidates"])
    assert any(c.get("candidate") for c in callee_result["remote_candidates"])
    assert all(
        c["candidate"].split()[7] == "relay" for c in callee_result["remote_candidates"] if c.get("candidate")
    )
    assert len(callee_result["frames"]) >= 60, len(callee_result["frames"])
    assert abs(dominant_frequency(callee_result["frames"][20:]) - NODE_TONE_HZ) < 15
    assert callee_result["ended"]["type"] == "call.hangup"

    timings = json.loads(timings_file.read_text())
    timings["suite_seconds"] = round(elapsed, 1)
    results = ROOT / "var" / "sdk-calls-timings.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(timings, indent=2))
    print(json.dumps(timings))
