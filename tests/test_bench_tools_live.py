"""The benchmark's Node tooling proven against every target it measures (issue 26): the Node load
generator (``bench/socketio/loadgen.mjs``, driven as ``bench/messaging.py`` drives it, through
``bench/harness.py``'s ``LoadGenProcess``) exchanges a few hundred messages with each target —
a live healthchat server (uvicorn on the test database and Redis), the bare Python relay
(``bench/relay.py``), the socket.io relay in one process and two socket.io processes sharing
rooms through ``@socket.io/redis-adapter`` (every message crosses Redis) — and none is lost,
duplicated, left unacked or out of ``seq`` order; against healthchat, every acked message is
stored once and every conversation's ``seq`` is gapless. Heavy runs stay in ``bench/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness import (
    BENCH,
    NODE_MISSING,
    NODE_TOOLS,
    LoadGenProcess,
    free_port,
    spawn,
    stop,
    verify_phase,
    verify_sequences,
    wait_port,
)

pytestmark = [pytest.mark.live]

PAIRS = 20
RATE = 5.0  # messages/s per sender: 100/s in all
SECONDS = 3.0  # offered: 300 messages
# healthchat's per-user send limits stay out of the saturation phase's way
LIMITS = {"HEALTHCHAT_SEND_LIMIT_PER_MINUTE": "1000000", "HEALTHCHAT_WS_RATE": "100000"}


@pytest.fixture(scope="module")
def node_tools() -> Path:
    assert (NODE_TOOLS / "node_modules" / "socket.io").is_dir(), NODE_MISSING
    return NODE_TOOLS


def relay_pairs(tmp_path: Path) -> Path:
    path = tmp_path / "relay-pairs.json"
    path.write_text(
        json.dumps(
            {
                "pairs": [
                    {"conversation_id": 1000 + i, "sender_token": None, "receiver_token": None}
                    for i in range(PAIRS)
                ]
            }
        )
    )
    return path


def exchange(url: str, pairs: Path, protocol: str, tmp_path: Path) -> dict[str, Any]:
    """Connect every pair, an offered phase (PAIRS * RATE * SECONDS messages), a short saturation
    phase (2 in flight per sender), close: every answer of the load generator."""
    gen = LoadGenProcess(
        url, pairs, tmp_path / f"loadgen-{protocol}.log", 64, loadgen="node", protocol=protocol
    )
    out: dict[str, Any] = {}
    try:
        out["connect"] = gen.command(60, cmd="connect")
        out["offered"] = gen.command(
            60,
            cmd="offered",
            seconds=SECONDS,
            rate=RATE,
            grace=10,
            dump=str(tmp_path / f"{protocol}-offered.json"),
        )
        out["saturation"] = gen.command(
            60, cmd="saturation", seconds=1.0, window=2, grace=10, dump=str(tmp_path / f"{protocol}-sat.json")
        )
        out["close"] = gen.command(60, cmd="close")
    finally:
        gen.quit()
    log = (tmp_path / f"loadgen-{protocol}.log").read_text(errors="replace")
    assert gen.proc.returncode == 0, log[-3000:]
    return out


def assert_clean(out: dict[str, Any]) -> None:
    assert out["connect"] == {**out["connect"], "sockets": 2 * PAIRS, "failed_pairs": 0}, out["connect"]
    offered, saturation = out["offered"], out["saturation"]
    assert offered["sent"] == int(PAIRS * RATE * SECONDS), offered
    for phase in (offered, saturation):
        assert phase["loadgen"] == "node"
        assert phase["sent"] > 0
        assert phase["delivered"] == phase["sent"] == phase["acked"] == phase["received"], phase
        assert phase["lost"] == 0, phase
        assert phase["duplicated"] == 0, phase
        assert phase["unacked"] == 0, phase
        assert phase["seq_gaps"] == 0, phase
        assert phase["seq_out_of_order"] == 0, phase
        assert phase["errors"] == {}, phase
        assert phase["unexpected_closes"] == {}, phase
        assert phase["latency_ms"]["p50"] is not None, phase
    # the whole offered load went through at the offered rate (not a trickle)
    assert offered["msgs_per_s"] >= 0.5 * PAIRS * RATE, offered
    # saturation keeps the window full: more than the offered rate
    assert saturation["sent"] > PAIRS * 2, saturation
    assert out["close"]["unexpected_closes"] == {}


@pytest.mark.django_db(transaction=True)
def test_node_loadgen_against_healthchat(
    node_tools: Path, live_server_factory: Any, make_token: Any, tmp_path: Path
) -> None:
    from messaging.tests.factories import pair

    made = [pair() for _ in range(PAIRS)]
    spec = [
        {
            "conversation_id": conversation.pk,
            "sender_token": make_token(uid=patient.firebase_uid, phone_number=patient.phone_number),
            "receiver_token": make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number),
        }
        for patient, doctor, conversation in made
    ]
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"pairs": spec}))
    server = live_server_factory(LIMITS)
    out = exchange(server.ws_url, pairs, "ws", tmp_path)
    assert_clean(out)
    for phase in ("offered", "sat"):
        stored = verify_phase(tmp_path / f"ws-{phase}.json")
        assert stored["acked_not_in_db"] == stored["received_not_in_db"] == 0, stored
        assert stored["duplicate_rows"] == stored["stored_unacked"] == 0, stored
    sequences = verify_sequences([row["conversation_id"] for row in spec])
    sent = out["offered"]["sent"] + out["saturation"]["sent"]
    assert sequences == {"conversations_with_gaps": 0, "messages": sent, "event_mismatch": 0}


@pytest.fixture
def bare_relay(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = spawn(
        [sys.executable, str(BENCH / "relay.py"), "--port", str(port), "--seconds", "300"],
        dict(os.environ),
        tmp_path / "relay.log",
    )
    try:
        wait_port(port, proc)
        yield f"ws://127.0.0.1:{port}/ws/v1/"
    finally:
        stop(proc)


def test_node_loadgen_against_the_bare_relay(node_tools: Path, bare_relay: str, tmp_path: Path) -> None:
    assert_clean(exchange(bare_relay, relay_pairs(tmp_path), "ws", tmp_path))


def socketio_relays(tmp_path: Path, count: int, redis_url: str | None) -> tuple[Any, list[int]]:
    ports = [free_port() for _ in range(count)]
    extra = ["--redis", redis_url, "--key", f"hctest-sio-{uuid.uuid4().hex[:8]}"] if redis_url else []
    script = " & ".join(
        " ".join(["node", str(NODE_TOOLS / "relay.mjs"), "--port", str(p), "--seconds", "300", *extra])
        for p in ports
    )
    proc = spawn(["bash", "-c", script + " & wait"], dict(os.environ), tmp_path / "socketio.log")
    try:
        for port in ports:
            wait_port(port, proc)
    except Exception:
        stop(proc)
        raise
    return proc, ports


@pytest.mark.parametrize(
    ("processes", "through_haproxy"),
    [(1, False), (2, False), (2, True)],
    ids=["in-process", "redis-adapter", "redis-adapter-behind-haproxy"],
)
def test_node_loadgen_against_socketio(
    node_tools: Path, tmp_path: Path, processes: int, through_haproxy: bool
) -> None:
    from django.conf import settings

    from tests.haproxy import HAProxy

    redis_url = str(settings.REDIS_URL).rsplit("/", 1)[0] if processes > 1 else None
    proc, ports = socketio_relays(tmp_path, processes, redis_url)
    proxy = HAProxy(ports) if through_haproxy else None
    try:
        if proxy is not None:
            proxy.start()  # deploy/haproxy.cfg: its /readyz checks pass on the relay
            urls = proxy.base_url
        else:
            urls = ",".join(f"http://127.0.0.1:{p}" for p in ports)
        out = exchange(urls, relay_pairs(tmp_path), "socketio", tmp_path)
        sessions = {name: int(row["stot"]) for name, row in proxy.servers().items()} if proxy else {}
    finally:
        if proxy is not None:
            proxy.close()
        stop(proc)
    assert_clean(out)
    if processes > 1:
        assert (tmp_path / "socketio.log").read_text().count("(redis adapter)") == processes
    if proxy is not None:  # leastconn spread the 40 sockets over both processes
        assert sessions["web1"] > 0, sessions
        assert sessions["web2"] > 0, sessions


def test_socketio_relay_refuses_a_handshake_without_a_user(node_tools: Path, tmp_path: Path) -> None:
    """The relay authenticates like a chat server would at the handshake: no user id, no socket."""
    proc, ports = socketio_relays(tmp_path, 1, None)
    probe = (
        'import { io } from "socket.io-client";'
        f'const s = io("http://127.0.0.1:{ports[0]}", {{transports: ["websocket"], reconnection: false}});'
        's.on("connect", () => { console.log("connected"); process.exit(1); });'
        's.on("connect_error", (e) => { console.log("refused:" + e.message); process.exit(0); });'
        "setTimeout(() => process.exit(2), 10000);"
    )
    try:
        result = subprocess.run(
            ["node", "--input-type=module", "-e", probe],
            cwd=NODE_TOOLS,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        stop(proc)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "refused:unauthorized"
