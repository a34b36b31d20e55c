"""A Python aiortc peer that answers a call placed by another client (the SDK in Node, the
console in Chromium), signalling only through our socket (``tests.wsclient.WsClient``) and
relaying through coturn with credentials from ``GET /api/v1/calls/turn-credentials``. The test
that uses it patches ``aioice.ice.get_host_addresses`` (aioice ignores 127.0.0.1 otherwise)."""

from __future__ import annotations

import asyncio
from typing import Any

import requests
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from calls.tests.webrtc import ToneTrack, split_candidates, to_candidate
from tests.wsclient import WsClient


async def aiortc_callee(
    ws: WsClient, http_url: str, token: str, *, tone_hz: float = 880.0, video: bool = False
) -> dict[str, Any]:
    """Answer the first incoming call with aiortc through the relay (credentials from our
    endpoint, candidates trickled as ``call.ice``): a ``tone_hz`` tone back (and, with ``video``,
    a video track), an echo on any data channel; record the caller's audio frames and count its
    video frames; stop at the hang-up."""
    invite = await ws.expect("call.invite", timeout=240)
    call_id = invite["data"]["call"]["id"]
    await ws.request("call.ringing", {"call_id": call_id})
    response = await asyncio.to_thread(
        requests.get,
        f"{http_url}/api/v1/calls/turn-credentials",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    creds = response.json()
    config = RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=creds["uris"], username=creds["username"], credential=creds["password"])
        ],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )
    pc = RTCPeerConnection(config)
    pc.addTrack(ToneTrack(tone_hz))
    if video:
        pc.addTrack(VideoStreamTrack())
    frames: list[Any] = []
    messages: list[str] = []
    recorders: list[asyncio.Task[None]] = []

    @pc.on("datachannel")
    def on_datachannel(channel: Any) -> None:
        @channel.on("message")
        def on_message(message: str) -> None:
            messages.append(message)
            channel.send(f"echo: {message}")

    video_frames = [0]

    async def record(track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ends at hang-up
                return
            if track.kind == "video":
                video_frames[0] += 1
            elif len(frames) < 100:
                frames.append(frame)

    @pc.on("track")
    def on_track(track: Any) -> None:
        recorders.append(asyncio.ensure_future(record(track)))

    try:
        await pc.setRemoteDescription(RTCSessionDescription(invite["data"]["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer, candidates = split_candidates(pc.localDescription.sdp)
        accepted = await ws.request("call.accept", {"call_id": call_id, "sdp": answer})
        assert accepted["type"] == "ack", accepted
        for init in [*candidates, {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}]:
            await ws.request("call.ice", {"call_id": call_id, "candidate": init})
        remote: list[dict[str, Any]] = []
        pending = [f for f in ws.inbox if f["type"] == "call.ice"]
        ws.inbox = [f for f in ws.inbox if f["type"] != "call.ice"]
        ended = None
        while ended is None:
            frame = pending.pop(0) if pending else await ws.recv(timeout=120)
            if frame["type"] == "call.ice" and frame["data"]["call_id"] == call_id:
                remote.append(frame["data"]["candidate"])
                candidate = to_candidate(frame["data"]["candidate"])
                if candidate is not None:
                    await pc.addIceCandidate(candidate)
            elif (
                frame["type"] in ("call.hangup", "call.ended")
                and frame["data"].get("call_id", frame["data"].get("call", {}).get("id")) == call_id
            ):
                ended = frame
        return {
            "call_id": call_id,
            "frames": frames,
            "video_frames": video_frames[0],
            "messages": messages,
            "local_candidates": candidates,
            "remote_candidates": remote,
            "ended": ended,
        }
    finally:
        await pc.close()
