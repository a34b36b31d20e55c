"""Proof 2 (issue 19): a real call from the console. The doctor's Chromium calls the patient's
Chromium (a second browser context; fake camera and microphone) through our signalling, with
``iceTransportPolicy: "relay"`` through a real coturn (credentials from our endpoint): both reach
``connected``, ``getStats()`` shows inbound audio and video bytes growing on both sides over a
relay candidate pair, and the hang-up lands in the call history with its duration (the chat row,
the database). Then the same call with the patient on aiortc (Python), signalling over our socket.
The console uses only the SDK's CallManager/CallSession (console/static/console/js/calls.js).
Timings of each phase are printed and written to var/browser-call-timings.json."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import pytest
from playwright.sync_api import expect

from accounts.tests.factories import DoctorFactory, PatientFactory
from calls.models import Call
from calls.tests.webrtc import coturn
from messaging.models import Message
from tests.aiortc_peer import aiortc_callee
from tests.browser import CHROMIUM, CHROMIUM_ARGS, ROOT, Timings, assert_accessible, screenshot
from tests.browser.conftest import LIVE_ENV
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TURN_SECRET = "browser-call-turn-secret-" + os.urandom(4).hex()
LAUNCH: dict[str, float] = {}
STATS_JS = """async () => {
  const call = window.healthchat.calls.active()[0];
  if (!call || !call.pc) return null;
  const report = await call.pc.getStats();
  const inbound = {}; const byId = new Map(); let pair = null;
  report.forEach((r) => {
    byId.set(r.id, r);
    if (r.type === "inbound-rtp") inbound[r.kind] = (inbound[r.kind] || 0) + (r.bytesReceived || 0);
    if (r.type === "transport" && r.selectedCandidatePairId) pair = r.selectedCandidatePairId;
  });
  const selected = pair ? byId.get(pair) : null;
  return {
    inbound,
    local: selected ? byId.get(selected.localCandidateId).candidateType : null,
    remote: selected ? byId.get(selected.remoteCandidateId).candidateType : null,
    state: call.pc.connectionState,
  };
}"""


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory: Any) -> Iterator[int]:
    with coturn(TURN_SECRET, tmp_path_factory.mktemp("coturn-browser")) as port:
        yield port


@pytest.fixture(scope="module")
def console_server(live_server_factory: Any, turn_server: int) -> Any:
    """The console's live server with TURN credentials for the coturn above (overrides the
    package's console_server)."""
    return live_server_factory(
        {**LIVE_ENV, "TURN_SECRET": TURN_SECRET, "TURN_URLS": f"turn:127.0.0.1:{turn_server}?transport=udp"}
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium with fake media devices (the package's fixture, timed)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium"
    with sync_playwright() as p:
        started = time.monotonic()
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        LAUNCH["browser_launch_s"] = time.monotonic() - started
        yield instance
        instance.close()


def open_conversation(api: Any, patient: Any, doctor: Any) -> int:
    response = api(patient).post("/api/v1/conversations", {"peer_id": doctor.pk}, format="json")
    assert response.status_code in (200, 201), response.content
    return int(response.json()["id"])


def open_chat(page: Any, conversation_id: int) -> None:
    page.click(f"#conversation-list li[data-conversation-id='{conversation_id}'] button")
    page.wait_for_selector("#chat-body:not([hidden])")


def stats(page: Any) -> dict[str, Any]:
    result = page.evaluate(STATS_JS)
    assert result is not None, "no call in progress"
    return dict(result)


def assert_media_grows(page: Any, kinds: tuple[str, ...], who: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    first = stats(page)
    while not all(first["inbound"].get(k, 0) > 0 for k in kinds):
        assert time.monotonic() < deadline, f"{who}: no inbound {kinds}: {first}"
        time.sleep(0.2)
        first = stats(page)
    time.sleep(1.5)
    later = stats(page)
    for kind in kinds:
        assert later["inbound"][kind] > first["inbound"][kind], (
            f"{who}: {kind} bytes do not grow: {first} {later}"
        )
    assert (later["local"], later["remote"]) == ("relay", "relay"), f"{who}: {later}"
    return later


def write_timings(name: str, timings: Timings) -> None:
    path = ROOT / "var" / "browser-call-timings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {phase: round(seconds, 2) for phase, seconds in timings.phases} | LAUNCH
    path.write_text(json.dumps(data, indent=2))
    print(name, timings.report(), LAUNCH)


def test_doctor_calls_patient_browser_to_browser_through_coturn(signed_in: Any, api: Any) -> None:
    t = Timings()
    patient = PatientFactory.create(display_name="Pat Jones")
    doctor = DoctorFactory.create(display_name="Dr. Ada Martin")
    conversation_id = open_conversation(api, patient, doctor)
    doc = signed_in(doctor)
    pat = signed_in(patient)
    t.mark("sign in both")
    open_chat(doc, conversation_id)
    open_chat(pat, conversation_id)
    t.mark("open chats")

    doc.click("#call-video")
    expect(pat.locator("#call-panel")).to_have_attribute("data-call-state", "ringing")
    expect(pat.locator("#call-title")).to_contain_text("Incoming video call from Dr. Ada Martin")
    expect(doc.locator("#call-panel")).to_have_attribute("data-call-state", "ringing")
    t.mark("invite → ringing")
    assert_accessible(pat, "incoming call")
    pat.click("#call-accept")
    expect(doc.locator("#call-panel")).to_have_attribute("data-call-state", "connected")
    expect(pat.locator("#call-panel")).to_have_attribute("data-call-state", "connected")
    t.mark("accept → both connected")
    call_id = int(doc.locator("#call-panel").get_attribute("data-call-id") or 0)

    doctor_stats = assert_media_grows(doc, ("audio", "video"), "doctor")
    patient_stats = assert_media_grows(pat, ("audio", "video"), "patient")
    t.mark("media grows on both sides")
    screenshot(doc, "console-call")
    assert_accessible(doc, "call")
    doc.click("#call-hangup")
    expect(pat.locator("#call-panel")).to_have_attribute("data-call-state", "ended")
    expect(doc.locator("#call-panel")).to_have_attribute("data-call-state", "ended")
    t.mark("hang-up → both ended")

    call = Call.objects.get(pk=call_id)
    assert (call.state, call.end_reason, call.media) == ("ended", "hangup", "video")
    assert call.duration >= 1
    entry = Message.objects.get(conversation_id=conversation_id, kind="system", system__call_id=call_id)
    assert entry.system is not None
    assert entry.system["duration"] == call.duration
    for page in (doc, pat):
        row = page.locator(f"#messages li[data-seq='{entry.seq}'] .body")
        expect(row).to_have_text(f"Video call · 0:{call.duration:02d}")
    t.mark("history entry")
    write_timings("browser_to_browser", t)
    assert doctor_stats["inbound"]["video"] > 0
    assert patient_stats["inbound"]["audio"] > 0


def test_doctor_calls_patient_on_aiortc_through_coturn(
    signed_in: Any, api: Any, console_server: Any, make_token: Any
) -> None:
    t = Timings()
    patient = PatientFactory.create(display_name="Pat Aiortc")
    doctor = DoctorFactory.create(display_name="Dr. Ada Martin")
    conversation_id = open_conversation(api, patient, doctor)
    token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
    result: dict[str, Any] = {}
    ready = threading.Event()

    def patient_on_aiortc() -> None:
        async def run() -> None:
            ws = await WsClient.connect(console_server.ws_url, token)
            ready.set()
            try:
                result.update(
                    await aiortc_callee(ws, console_server.base_url, token, tone_hz=880.0, video=True)
                )
            finally:
                await ws.close()

        try:
            with patch("aioice.ice.get_host_addresses", return_value=["127.0.0.1"]):
                asyncio.run(run())
        except BaseException as error:  # reported by the assertions below
            result["error"] = repr(error)
            ready.set()

    peer = threading.Thread(target=patient_on_aiortc, daemon=True)
    peer.start()
    doc = signed_in(doctor)
    assert ready.wait(20), "the aiortc patient did not connect"
    open_chat(doc, conversation_id)
    t.mark("sign in + aiortc patient online")
    doc.click("#call-video")
    expect(doc.locator("#call-panel")).to_have_attribute("data-call-state", "connected")
    t.mark("invite → connected (aiortc answers)")
    call_id = int(doc.locator("#call-panel").get_attribute("data-call-id") or 0)
    assert_media_grows(doc, ("audio", "video"), "doctor (from aiortc)")
    t.mark("media grows at the doctor")
    time.sleep(1.0)
    doc.click("#call-hangup")
    expect(doc.locator("#call-panel")).to_have_attribute("data-call-state", "ended")
    peer.join(30)
    t.mark("hang-up")
    assert "error" not in result, result.get("error")
    assert result["call_id"] == call_id
    assert len(result["frames"]) >= 50, len(result["frames"])  # the doctor's (fake) microphone
    assert result["video_frames"] >= 10, result["video_frames"]  # the doctor's (fake) camera
    assert all(c["candidate"].split()[7] == "relay" for c in result["local_candidates"])
    assert all(
        c["candidate"].split()[7] == "relay" for c in result["remote_candidates"] if c.get("candidate")
    )
    assert result["ended"]["type"] == "call.hangup"
    call = Call.objects.get(pk=call_id)
    assert call.state == "ended"
    assert call.duration >= 1
    expect(doc.locator("#messages li[data-seq] .body").last).to_have_text(
        f"Video call · 0:{call.duration:02d}"
    )
    write_timings("browser_to_aiortc", t)
