"""Test helpers: aiortc peers that signal only through our WebSocket, a tone track, coturn.

The recipes are the ones in the design notes (Testing: Calls): aioice ignores 127.0.0.1 unless
``get_host_addresses`` is patched; ``RTCConfiguration(iceServers=[])`` keeps aiortc from adding
a public STUN server; aiortc puts every candidate into the SDP, so candidates are stripped from
it and trickled as ``call.ice`` frames instead.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCIceCandidate
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp
from av import AudioFrame

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms


class ToneTrack(MediaStreamTrack):
    """A sine tone at ``frequency`` Hz, mono s16, in real time."""

    kind = "audio"

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = frequency
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(FRAME_SAMPLES) + self._pts) / SAMPLE_RATE
        samples = (np.sin(2 * math.pi * self.frequency * t) * 12000).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += FRAME_SAMPLES
        return frame


def dominant_frequency(frames: list[AudioFrame]) -> float:
    """The strongest frequency in decoded frames (first channel)."""
    chunks = []
    rate = SAMPLE_RATE
    for frame in frames:
        data = frame.to_ndarray()
        channels = len(frame.layout.channels)
        mono = data.reshape(-1, channels)[:, 0] if data.shape[0] == 1 else data[0]
        chunks.append(mono.astype(np.float64))
        rate = frame.sample_rate
    signal = np.concatenate(chunks)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    spectrum[0] = 0
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(np.argmax(spectrum))])


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """The SDP without its ``a=candidate`` lines, and those candidates as WebRTC's
    ``RTCIceCandidateInit`` objects (the shape ``call.ice`` carries)."""
    kept: list[str] = []
    candidates: list[dict[str, Any]] = []
    mid: str | None = None
    index = -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        if line.startswith("a=candidate:"):
            candidates.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
            continue
        if line.startswith("a=end-of-candidates"):
            continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", candidates


def to_candidate(init: dict[str, Any]) -> RTCIceCandidate | None:
    """``call.ice`` candidate → aiortc's candidate (None: end of candidates)."""
    line = init.get("candidate") or ""
    if not line:
        return None
    candidate = candidate_from_sdp(line.split(":", 1)[1])
    candidate.sdpMid = init.get("sdpMid")
    candidate.sdpMLineIndex = init.get("sdpMLineIndex")
    return candidate


def candidate_init(candidate: RTCIceCandidate) -> dict[str, Any]:
    return {
        "candidate": "candidate:" + candidate_to_sdp(candidate),
        "sdpMid": candidate.sdpMid,
        "sdpMLineIndex": candidate.sdpMLineIndex,
    }


# --- coturn ------------------------------------------------------------------------------------
def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TURNSERVER_MISSING = (
    "coturn's turnserver is not installed: `make coturn` installs it (Debian package coturn); "
    "`make test` does so before running the tests."
)


def _tail(log: Path) -> str:
    logs = sorted(log.parent.glob(log.name + "*"))
    return "\n".join(p.read_text(errors="replace")[-2000:] for p in logs)


@contextmanager
def coturn(secret: str, tmp: Path) -> Any:
    """A real coturn on loopback with the TURN REST API (shared secret); yields its port."""
    binary = shutil.which("turnserver") or (
        "/usr/bin/turnserver" if Path("/usr/bin/turnserver").exists() else None
    )
    if binary is None:
        raise RuntimeError(TURNSERVER_MISSING)
    # The port must be free for UDP and TCP; a parallel run's client sockets can take the TCP
    # side between the check and coturn's bind, so a refused start is retried on another port.
    log = tmp / "turnserver-0.log"
    for attempt in range(5):
        port = free_udp_port()
        with socket.socket() as tcp:
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
        low = 40000 + (port % 200) * 100
        log = tmp / f"turnserver-{attempt}.log"
        args = [
            binary,
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            "--use-auth-secret",
            f"--static-auth-secret={secret}",
            "--realm=healthchat.test",
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--fingerprint",
            f"--min-port={low}",
            f"--max-port={low + 99}",
            f"--pidfile={tmp / 'turnserver.pid'}",
            f"--userdb={tmp / f'turnserver-{attempt}.db'}",
            f"--log-file={log}",
            "--simple-log",
        ]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        started = False
        while time.monotonic() < deadline and process.poll() is None:
            with socket.socket() as probe:  # coturn listens on TCP too once it is up
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    started = True
                    break
            if "errno=98" in _tail(log):
                break  # the port was taken meanwhile: try another
            time.sleep(0.05)
        if started:
            break
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    else:
        raise RuntimeError(f"turnserver did not start after 5 ports:\n{_tail(log)}")
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
