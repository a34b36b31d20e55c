"""Calls on a real uvicorn process (real Redis channel layer, PostgreSQL): two aiortc peers that
signal only through our socket connect and carry a tone, directly and through a coturn relay
with credentials from our endpoint; plus the socket-level rules (multi-device, drops and resume,
authorization, out-of-order and bad frames)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import requests
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from django.db import connection
from django.utils import timezone

from accounts.tests.factories import DeviceFactory, DoctorFactory
from calls import tasks, turn
from calls.models import Call
from calls.tests.conftest import CANDIDATE, SDP_ANSWER, SDP_OFFER
from calls.tests.webrtc import ToneTrack, coturn, dominant_frequency, split_candidates, to_candidate
from messaging.tests.factories import pair
from notifications.models import PushDelivery
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

TURN_SECRET = "live-test-turn-secret-" + os.urandom(4).hex()
TONE_HZ = 440.0
LIVE_ENV = {
    "HEALTHCHAT_WS_RATE": "500",
    "HEALTHCHAT_WS_BURST": "500",
    "CALL_RECONNECT_GRACE_SECONDS": "30",
    "TURN_SECRET": TURN_SECRET,
}
RESULTS = Path(__file__).resolve().parents[2] / "var" / "calls-live-timings.json"


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory):
    with coturn(TURN_SECRET, tmp_path_factory.mktemp("coturn")) as port:
        yield port


@pytest.fixture(scope="module")
def server(live_server_factory, turn_server):
    return live_server_factory({**LIVE_ENV, "TURN_URLS": f"turn:127.0.0.1:{turn_server}?transport=udp"})


def token_for(make_token, user):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number)


async def connect(server, make_token, user, device=None) -> WsClient:
    return await WsClient.connect(server.ws_url, token_for(make_token, user), device_id=device)


# --- Two real WebRTC peers -------------------------------------------------------------------
async def call_with_aiortc(
    caller_ws: WsClient, callee_ws: WsClient, conversation_id: int, config: RTCConfiguration
) -> dict[str, Any]:
    """The caller offers, the callee answers, candidates trickle as call.ice frames, all through
    the server. Returns timings and what the callee received."""
    caller, callee = RTCPeerConnection(config), RTCPeerConnection(config)
    tone = ToneTrack(TONE_HZ)
    caller.addTrack(tone)
    channel = caller.createDataChannel("chat")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    received: asyncio.Queue[Any] = asyncio.Queue()
    messages: asyncio.Queue[str] = asyncio.Queue()
    connected = {"caller": asyncio.Event(), "callee": asyncio.Event()}

    @callee.on("track")
    def on_track(track: Any) -> None:
        received.put_nowait(track)

    @callee.on("datachannel")
    def on_datachannel(dc: Any) -> None:
        dc.on("message", messages.put_nowait)

    def watch(name: str, pc: RTCPeerConnection) -> None:
        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                connected[name].set()

    watch("caller", caller)
    watch("callee", callee)

    try:
        await caller.setLocalDescription(await caller.createOffer())
        local_sdp = caller.localDescription.sdp
        offer_sdp, offer_candidates = split_candidates(local_sdp)
        started = time.perf_counter()
        ack = await caller_ws.request(
            "call.invite", {"conversation_id": conversation_id, "media": "audio", "sdp": offer_sdp}
        )
        assert ack["type"] == "ack", ack
        call_id = ack["data"]["call"]["id"]
        for init in [*offer_candidates, {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}]:
            assert (await caller_ws.request("call.ice", {"call_id": call_id, "candidate": init}))[
                "type"
            ] == "ack"

        invite = await callee_ws.expect("call.invite")
        assert invite["data"]["call"]["id"] == call_id
        assert "a=candidate" not in invite["data"]["sdp"]
        await callee_ws.request("call.ringing", {"call_id": call_id})
        await callee.setRemoteDescription(RTCSessionDescription(invite["data"]["sdp"], "offer"))
        for _ in range(len(offer_candidates) + 1):
            ice = await callee_ws.expect("call.ice", lambda f: f["data"]["call_id"] == call_id)
            assert ice["data"]["user_id"] == ack["data"]["call"]["caller_id"]
            await callee.addIceCandidate(to_candidate(ice["data"]["candidate"]))
        await callee.setLocalDescription(await callee.createAnswer())
        answer_sdp, answer_candidates = split_candidates(callee.localDescription.sdp)
        accepted = await callee_ws.request("call.accept", {"call_id": call_id, "sdp": answer_sdp})
        assert accepted["type"] == "ack", accepted
        assert accepted["data"]["call"]["state"] == "accepted"
        for init in [*answer_candidates, {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}]:
            assert (await callee_ws.request("call.ice", {"call_id": call_id, "candidate": init}))[
                "type"
            ] == "ack"

        assert (await caller_ws.expect("call.ringing"))["data"]["call_id"] == call_id
        answer = await caller_ws.expect("call.accept")
        await caller.setRemoteDescription(RTCSessionDescription(answer["data"]["sdp"], "answer"))
        for _ in range(len(answer_candidates) + 1):
            ice = await caller_ws.expect("call.ice", lambda f: f["data"]["call_id"] == call_id)
            await caller.addIceCandidate(to_candidate(ice["data"]["candidate"]))

        await asyncio.wait_for(asyncio.gather(connected["caller"].wait(), connected["callee"].wait()), 20)
        connect_ms = (time.perf_counter() - started) * 1000
        await asyncio.wait_for(opened.wait(), 10)
        channel.send("hello over the data channel")
        message = await asyncio.wait_for(messages.get(), 10)
        track = await asyncio.wait_for(received.get(), 10)
        frames = [await asyncio.wait_for(track.recv(), 5) for _ in range(60)]  # 1.2 s of audio
        hangup = await caller_ws.request("call.hangup", {"call_id": call_id})
        assert hangup["data"]["call"]["state"] == "ended"
        assert (await callee_ws.expect("call.hangup"))["data"]["call_id"] == call_id
        return {
            "call_id": call_id,
            "connect_ms": connect_ms,
            "message": message,
            "frames": frames,
            "local_sdp": local_sdp,
            "candidates": offer_candidates + answer_candidates,
        }
    finally:
        await caller.close()
        await callee.close()


def record(name: str, value: float) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[name] = round(value, 1)
    RESULTS.write_text(json.dumps(data, indent=2))
    print(f"{name}: {value:.1f} ms")


def test_two_aiortc_peers_connect_only_through_our_socket(server, make_token):
    patient, doctor, conversation = pair()

    async def scenario():
        caller_ws = await connect(server, make_token, patient)
        callee_ws = await connect(server, make_token, doctor)
        with patch("aioice.ice.get_host_addresses", return_value=["127.0.0.1"]):
            result = await call_with_aiortc(
                caller_ws, callee_ws, conversation.pk, RTCConfiguration(iceServers=[])
            )
        await caller_ws.close()
        await callee_ws.close()
        return result

    result = asyncio.run(scenario())
    assert result["message"] == "hello over the data channel"
    assert all(c["candidate"].split()[7] == "host" for c in result["candidates"])
    assert len(result["frames"]) == 60
    assert all(f.samples > 0 for f in result["frames"])
    assert abs(dominant_frequency(result["frames"][10:]) - TONE_HZ) < 15
    record("offer_to_connected_ms_direct", result["connect_ms"])
    call = Call.objects.get(pk=result["call_id"])
    assert call.state == "ended"
    assert call.answered_at is not None


def test_the_same_call_through_a_coturn_relay_with_our_credentials(server, make_token, turn_server):
    patient, doctor, conversation = pair()
    creds = []
    for user in (patient, doctor):
        response = requests.get(
            f"{server.base_url}/api/v1/calls/turn-credentials",
            headers={"Authorization": f"Bearer {token_for(make_token, user)}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        creds.append(response.json())
    assert creds[0]["uris"] == [f"turn:127.0.0.1:{turn_server}?transport=udp"]

    def config(body):
        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=body["uris"], username=body["username"], credential=body["password"])
            ],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )

    async def scenario():
        caller_ws = await connect(server, make_token, patient)
        callee_ws = await connect(server, make_token, doctor)
        with patch("aioice.ice.get_host_addresses", return_value=["127.0.0.1"]):
            result = await call_with_aiortc(caller_ws, callee_ws, conversation.pk, config(creds[0]))
        await caller_ws.close()
        await callee_ws.close()
        return result

    result = asyncio.run(scenario())
    assert result["candidates"]
    assert all(c["candidate"].split()[7] == "relay" for c in result["candidates"])
    assert result["message"] == "hello over the data channel"
    assert abs(dominant_frequency(result["frames"][10:]) - TONE_HZ) < 15
    record("offer_to_connected_ms_turn_relay", result["connect_ms"])


async def gathered_sdp(config: RTCConfiguration) -> str:
    pc = RTCPeerConnection(config)
    try:
        pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def test_coturn_refuses_expired_or_forged_credentials(turn_server, settings):
    settings.TURN_SECRET = TURN_SECRET
    settings.TURN_URLS = [f"turn:127.0.0.1:{turn_server}?transport=udp"]
    settings.TURN_TTL_SECONDS = 60
    fresh = turn.turn_credentials(user_id=1)
    expired = turn.turn_credentials(user_id=1, now=time.time() - 120)  # expired a minute ago
    forged = {**fresh, "password": turn.turn_password("not-the-secret", fresh["username"])}

    def config(body):
        return RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=body["uris"], username=body["username"], credential=body["password"])
            ],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )

    async def scenario():
        with patch("aioice.ice.get_host_addresses", return_value=["127.0.0.1"]):
            return [await gathered_sdp(config(body)) for body in (fresh, expired, forged)]

    ok, stale, bad = asyncio.run(scenario())
    assert "typ relay" in ok
    assert "typ relay" not in stale
    assert "typ relay" not in bad


# --- The rules, over real sockets ---------------------------------------------------------------
def test_every_device_rings_the_first_answer_wins(server, make_token):
    patient, doctor, conversation = pair()
    phone, tablet = DeviceFactory(user=doctor), DeviceFactory(user=doctor)

    async def scenario():
        caller = await connect(server, make_token, patient)
        on_phone = await connect(server, make_token, doctor, phone.pk)
        on_tablet = await connect(server, make_token, doctor, tablet.pk)
        ack = await caller.request(
            "call.invite", {"conversation_id": conversation.pk, "media": "video", "sdp": SDP_OFFER}
        )
        call_id = ack["data"]["call"]["id"]
        assert (await on_phone.expect("call.invite"))["data"]["call"]["id"] == call_id
        assert (await on_tablet.expect("call.invite"))["data"]["call"]["media"] == "video"
        both = await asyncio.gather(
            on_phone.request("call.accept", {"call_id": call_id, "sdp": SDP_ANSWER}),
            on_tablet.request("call.accept", {"call_id": call_id, "sdp": SDP_ANSWER}),
        )
        winners = [r for r in both if r["type"] == "ack"]
        losers = [r for r in both if r["type"] == "error"]
        assert len(winners) == 1, both
        assert len(losers) == 1, both
        assert losers[0]["error"]["code"] == "call_not_ringing"
        loser_ws = on_tablet if both[1]["type"] == "error" else on_phone
        assert (await loser_ws.expect("call.answered_elsewhere"))["data"] == {"call_id": call_id}
        assert (await caller.expect("call.accept"))["data"]["user_id"] == doctor.pk
        assert (await caller.request("call.hangup", {"call_id": call_id}))["type"] == "ack"
        for ws in (caller, on_phone, on_tablet):
            await ws.close()

    asyncio.run(scenario())


def test_a_dropped_call_socket_can_resume(server, make_token):
    patient, doctor, conversation = pair()
    phone = DeviceFactory(user=doctor)

    async def scenario():
        caller = await connect(server, make_token, patient)
        callee = await connect(server, make_token, doctor, phone.pk)
        call_id = (
            await caller.request(
                "call.invite", {"conversation_id": conversation.pk, "media": "audio", "sdp": SDP_OFFER}
            )
        )["data"]["call"]["id"]
        await callee.expect("call.invite")
        assert (await callee.request("call.accept", {"call_id": call_id, "sdp": SDP_ANSWER}))["type"] == "ack"
        await callee.close()  # the network drops
        note = await caller.expect("call.peer_disconnected", timeout=10)
        assert note["data"] == {"call_id": call_id, "user_id": doctor.pk, "grace_seconds": 30.0}
        back = await connect(server, make_token, doctor, phone.pk)
        resumed = await back.request("call.resume", {"call_id": call_id})
        assert resumed["type"] == "ack"
        assert resumed["data"]["call"]["state"] == "accepted"
        assert (await caller.expect("call.peer_resumed"))["data"]["user_id"] == doctor.pk
        # Signalling flows to the new socket.
        await caller.request("call.ice", {"call_id": call_id, "candidate": CANDIDATE})
        assert (await back.expect("call.ice"))["data"]["candidate"] == CANDIDATE
        await caller.request("call.hangup", {"call_id": call_id})
        ended = await back.expect("call.hangup")
        assert ended["data"]["call_id"] == call_id
        for ws in (caller, back):
            await ws.close()

    asyncio.run(scenario())


def test_ring_timeout_reaches_both_sides_live(server, make_token):
    patient, doctor, conversation = pair()

    async def scenario():
        caller = await connect(server, make_token, patient)
        callee = await connect(server, make_token, doctor)
        call_id = (
            await caller.request(
                "call.invite", {"conversation_id": conversation.pk, "media": "audio", "sdp": SDP_OFFER}
            )
        )["data"]["call"]["id"]
        await callee.expect("call.invite")

        def time_out() -> bool:
            """The Celery task, run here: its events reach the server's sockets through Redis."""
            Call.objects.filter(pk=call_id).update(ring_expires_at=timezone.now() - dt.timedelta(seconds=1))
            try:
                return bool(tasks.call_ring_timeout.apply(args=(call_id,)).get())
            finally:
                connection.close()

        assert await asyncio.to_thread(time_out) is True
        for ws in (caller, callee):
            missed = await ws.expect("call.missed")
            assert missed["data"]["call"]["state"] == "missed"
            entry = await ws.expect("message.new")
            assert entry["data"]["message"]["system"]["event"] == "call"
            assert entry["data"]["message"]["system"]["state"] == "missed"
        for ws in (caller, callee):
            await ws.close()

    asyncio.run(scenario())


def test_a_callee_with_no_connected_device_is_rung_by_push(server, make_token):
    patient, doctor, conversation = pair()
    phone = DeviceFactory(user=doctor)

    async def scenario():
        caller = await connect(server, make_token, patient)
        ack = await caller.request(
            "call.invite", {"conversation_id": conversation.pk, "media": "audio", "sdp": SDP_OFFER}
        )
        await caller.close()
        return ack["data"]["call"]["id"]

    call_id = asyncio.run(scenario())
    ring = PushDelivery.objects.get(kind="call", ref=str(call_id))
    assert ring.device_id == phone.pk
    # The caller's socket closed while it rang: the call is cancelled (the offer was that socket's).
    deadline = time.monotonic() + 10
    while Call.objects.get(pk=call_id).state == "ringing" and time.monotonic() < deadline:
        time.sleep(0.05)
    call = Call.objects.get(pk=call_id)
    assert (call.state, call.end_reason) == ("cancelled", "caller_disconnected")
    time.sleep(0.5)  # its after-commit work (history entry, pushes) ends before the tables are flushed


def test_only_members_and_participants_and_bad_frames_keep_the_socket_open(server, make_token):
    patient, doctor, conversation = pair()
    intruder = DoctorFactory()

    async def scenario():
        caller = await connect(server, make_token, patient)
        callee = await connect(server, make_token, doctor)
        stranger = await connect(server, make_token, intruder)
        # Not a member: cannot invite.
        refused = await stranger.request(
            "call.invite", {"conversation_id": conversation.pk, "media": "audio", "sdp": SDP_OFFER}
        )
        assert refused["error"]["code"] == "conversation_not_found"
        # Oversized and malformed input: an error frame, the socket stays open.
        big = await caller.request(
            "call.invite",
            {"conversation_id": conversation.pk, "media": "audio", "sdp": "v=0\r\n" + "a=x\r\n" * 5000},
        )
        assert big["error"]["code"] == "sdp_too_large"
        bad = await caller.request(
            "call.invite", {"conversation_id": conversation.pk, "media": "smell", "sdp": SDP_OFFER}
        )
        assert bad["error"]["code"] == "invalid_frame"
        assert (await caller.request("ping"))["type"] == "pong"
        # Accept before any invite.
        early = await callee.request("call.accept", {"call_id": 987654321, "sdp": SDP_ANSWER})
        assert early["error"]["code"] == "call_not_found"
        call_id = (
            await caller.request(
                "call.invite", {"conversation_id": conversation.pk, "media": "audio", "sdp": SDP_OFFER}
            )
        )["data"]["call"]["id"]
        # Nobody else can inject candidates or end it.
        for kind, data in [
            ("call.ice", {"candidate": CANDIDATE}),
            ("call.hangup", {}),
            ("call.accept", {"sdp": SDP_ANSWER}),
        ]:
            reply = await stranger.request(kind, {"call_id": call_id, **data})
            assert reply["error"]["code"] == "call_not_found", reply
        huge = await caller.request("call.ice", {"call_id": call_id, "candidate": {"candidate": "x" * 3000}})
        assert huge["error"]["code"] == "candidate_too_large"
        await caller.request("call.cancel", {"call_id": call_id})
        late = await caller.request("call.ice", {"call_id": call_id, "candidate": CANDIDATE})
        assert late["error"]["code"] == "call_not_active"  # ice after the call ended
        assert (await callee.request("ping"))["type"] == "pong"
        for ws in (caller, callee, stranger):
            assert ws.close_code is None
            await ws.close()

    asyncio.run(scenario())
