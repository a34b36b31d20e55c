"""The wire against docs/asyncapi.yaml: a recorded live session and a fresh one.

``tests/contracts/session.jsonl`` is a recording of a real uvicorn session (three users, a direct
conversation, a group, calls on several devices): one JSON line per frame, ``{"dir": "in" |
"out", "frame": ...}`` (``in``: client to server). ``test_recorded_session_matches_asyncapi``
replays it: every frame is validated with ``jsonschema`` against the payload schema the AsyncAPI
document gives its message, and every frame type of the code (both ways) must have an example.
``test_live_session_matches_asyncapi`` plays the same session against a fresh server and checks
what it sends, so the document cannot drift from the wire; re-record the file with
``python scripts/record_session.py`` (the same test with ``HC_RECORD_SESSION=1``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml
from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from accounts.models import DoctorProfile
from accounts.tests.factories import DeviceFactory, DoctorFactory
from accounts.tests.signal_keys import SignalIdentity
from appointments import on_demand
from appointments import services as appointment_services
from appointments.models import Appointment
from calls import services as call_services
from calls.models import Call
from groups import services as groups
from messaging import asyncapi, frames, protocol
from messaging.tests import media_corpus
from messaging.tests.factories import pair
from messaging.tests.test_redis_restart_live import OwnRedis
from payments import services as consultations
from payments.booking import consultation_open
from payments.models import Consultation
from tests.live import free_port
from tests.wsclient import WsClient

RECORDING = Path(__file__).resolve().parent / "contracts" / "session.jsonl"
SDP = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", "sdpMid": "0"}


# --- The document's schemas -------------------------------------------------------------------
def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(asyncapi.DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def _validator(document: dict[str, Any], direction: str, frame_type: str) -> jsonschema.Draft7Validator:
    """The payload schema of the document's message for this frame (``$ref``s into
    ``components/schemas`` resolved against the whole document)."""
    message = document["components"]["messages"][asyncapi.message_key(direction, frame_type)]
    schema = {**message["payload"], "components": document["components"]}
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def check_against_document(records: list[dict[str, Any]]) -> None:
    document = _document()
    for record in records:
        direction = "client" if record["dir"] == "in" else "server"
        frame = record["frame"]
        frame_type = frame["type"]
        known = protocol.CLIENT_FRAMES if direction == "client" else protocol.SERVER_FRAMES
        assert frame_type in known, record
        errors = sorted(_validator(document, direction, frame_type).iter_errors(frame), key=str)
        if record.get("invalid"):  # sent on purpose: the document refuses it as the server did
            assert errors, f"docs/asyncapi.yaml accepts a frame the server refused: {frame}"
            continue
        assert not errors, (
            f"{direction} {frame_type} does not match docs/asyncapi.yaml: {errors[0].message}\n{frame}"
        )
        if direction == "server":
            frames.validate_server_frame(frame)


def check_coverage(records: list[dict[str, Any]]) -> None:
    sent = {r["frame"]["type"] for r in records if r["dir"] == "in"}
    received = {r["frame"]["type"] for r in records if r["dir"] == "out"}
    assert sorted(set(protocol.CLIENT_FRAMES) - sent) == [], "client frames never sent in the session"
    assert sorted(set(protocol.SERVER_FRAMES) - received) == [], "server frames never received in the session"


# --- Recording a session ------------------------------------------------------------------------
class Recorder(WsClient):
    """A test client that writes every frame it sends and receives to a shared log."""

    log: list[dict[str, Any]]

    @classmethod
    async def open(cls, log: list[dict[str, Any]], url: str, **kwargs: Any) -> Recorder:
        client = await cls.connect(url, wait_ready=False, **kwargs)
        assert isinstance(client, Recorder)
        client.log = log
        if kwargs.get("token"):
            await client.expect("ready")
        return client

    invalid = False

    async def send_raw(self, payload: str | bytes) -> None:
        record: dict[str, Any] = {"dir": "in", "frame": json.loads(payload)}
        if self.invalid:
            record["invalid"] = True
        self.log.append(record)
        await self.ws.send(payload)

    async def request_invalid(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        """A frame its schema refuses (recorded as such): the server answers ``error``."""
        self.invalid = True
        try:
            ref = await self.send(type_, data)
        finally:
            self.invalid = False
        return await self.reply(ref)

    async def send(self, type_: str, data: dict[str, Any] | None = None, ref: str | None = None) -> str:
        ref = ref or f"r{uuid.uuid4().hex[:8]}"
        frame: dict[str, Any] = {"type": type_, "ref": ref}
        if data is not None:
            frame["data"] = data
        await self.send_raw(json.dumps(frame))
        return ref

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        if getattr(self, "log", None) is not None:
            self.log.append({"dir": "out", "frame": frame})
        return frame


def _world() -> dict[str, Any]:
    patient, doctor, direct = pair()
    other = DoctorFactory.create()
    return {
        "patient": patient,
        "doctor": doctor,
        "other": other,
        "direct": direct,
        "doctor_device": DeviceFactory.create(user=doctor).pk,
        "patient_device": DeviceFactory.create(user=patient).pk,
        "patient_phone": DeviceFactory.create(user=patient).pk,
    }


def _appointment_cancelled(patient: Any, doctor: Any) -> None:
    """A confirmed appointment of the patient with the doctor, cancelled: ``appointment.updated``
    to both (the frame the session lacked since the appointments merge)."""
    from django.db import transaction

    from appointments import services as appointment_services
    from appointments.models import Appointment

    starts = timezone.now() + timedelta(days=2)
    appointment = Appointment.objects.create(
        doctor=doctor,
        patient=patient,
        kind="chat",
        starts_at=starts,
        ends_at=starts + timedelta(minutes=30),
        state="confirmed",
    )
    with transaction.atomic():
        locked = Appointment.objects.select_for_update().get(pk=appointment.pk)
        appointment_services.move(locked, "cancelled", actor=patient, source="api", note="contract session")


async def _ok(client: WsClient, type_: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = await client.request(type_, data)
    assert reply["type"] in ("ack", "pong"), reply
    return reply


async def _rest(method: str, url: str, token: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    call = functools.partial(requests.request, method, url, headers=headers, timeout=30, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(None, call)


async def play_session(
    server: Any, token_for: Callable[[Any], str], *, second: Any, second_redis: Any
) -> list[dict[str, Any]]:
    """The session: ``server`` for everything, ``second`` (a server on its own Redis,
    ``second_redis``) for ``sync.required``."""
    log: list[dict[str, Any]] = []
    url = server.ws_url
    w = await sync_to_async(_world)()
    doctor, patient, other, direct = w["doctor"], w["patient"], w["other"], w["direct"]
    a = await Recorder.open(log, url, token=token_for(doctor), device_id=w["doctor_device"])
    b = await Recorder.open(log, url)  # authenticates with the auth frame
    ready = await b.request("auth", {"token": token_for(patient), "device_id": w["patient_device"]})
    assert ready["type"] == "ready", ready
    b2 = await Recorder.open(log, url, token=token_for(patient), device_id=w["patient_phone"])

    # Envelope, errors, keep-alive, token refresh.
    await _ok(a, "ping")
    error = await a.request_invalid("message.send", {"conversation_id": direct.pk})
    assert error["type"] == "error", error
    await _ok(a, "auth.refresh", {"token": token_for(doctor)})

    # Messages, receipts, typing, presence, sync.
    sent = await _ok(
        b, "message.send", {"conversation_id": direct.pk, "client_id": str(uuid.uuid4()), "body": "Hi"}
    )
    message_id = sent["data"]["message"]["id"]
    await a.expect("message.new")
    await _ok(b, "message.edit", {"message_id": message_id, "body": "Hello doctor"})
    await a.expect("message.updated")
    # Reactions, pins, a mention (issue 24).
    await _ok(
        b,
        "message.send",
        {
            "conversation_id": direct.pk,
            "client_id": str(uuid.uuid4()),
            "body": "@doctor a question",
            "mentions": [{"user_id": doctor.pk, "offset": 0, "length": 7}],
        },
    )
    await a.expect("message.new")
    await _ok(a, "reaction.add", {"message_id": message_id, "emoji": "👍"})
    await b.expect("reaction.added")
    await _ok(a, "reaction.remove", {"message_id": message_id, "emoji": "👍"})
    await b.expect("reaction.removed")
    await _ok(a, "message.pin", {"message_id": message_id})
    await b.expect("message.pinned")
    await _ok(a, "message.unpin", {"message_id": message_id})
    await b.expect("message.unpinned")
    await sync_to_async(_appointment_cancelled)(patient, doctor)
    await b.expect("appointment.updated")
    await _ok(a, "message.delivered", {"conversation_id": direct.pk, "seq": 1})
    await _ok(a, "message.read", {"conversation_id": direct.pk, "seq": 1})
    await b.expect("receipt")
    await a.send("typing", {"conversation_id": direct.pk, "active": True})
    await b.expect("typing")
    await _ok(b, "message.delete", {"message_id": message_id})
    await _ok(a, "presence.subscribe", {"user_ids": [patient.pk, other.pk]})
    frames_, cursor, more = await a.sync()
    assert frames_
    assert not more

    # A group: created, updated, a member added, promoted, removed; the patient leaves.
    group = await sync_to_async(groups.group_create)(
        creator=doctor, name="Follow-up", member_ids=[patient.pk]
    )
    await b.expect("member.added")
    await sync_to_async(groups.group_update)(actor=doctor, group_id=group.pk, data={"name": "Cardiology"})
    await b.expect("group.updated")
    await sync_to_async(groups.member_add)(actor=doctor, group_id=group.pk, user_id=other.pk)
    await sync_to_async(groups.member_set_role)(
        actor=doctor, group_id=group.pk, user_id=patient.pk, role="admin"
    )
    await b.expect("member.role_changed")
    await sync_to_async(groups.member_remove)(actor=doctor, group_id=group.pk, user_id=other.pk)
    await b.expect("member.removed")
    await sync_to_async(groups.member_leave)(user=patient, group_id=group.pk)
    await a.expect("member.left")

    # The key directory: the patient's phone publishes keys (device.added), is reinstalled
    # (identity.changed); the doctor fetches its bundle, leaving it short (keys.low).
    keys = f"{server.base_url}/api/v1/keys"
    response = await _rest("PUT", keys, token_for(patient), json=SignalIdentity().upload(w["patient_phone"]))
    assert response.status_code in (200, 201), response.content
    await a.expect("device.added")
    response = await _rest("PUT", keys, token_for(patient), json=SignalIdentity().upload(w["patient_phone"]))
    assert response.status_code in (200, 201), response.content
    await a.expect("identity.changed")
    bundle = f"{keys}/{patient.pk}?device_id={w['patient_phone']}"
    response = await _rest("GET", bundle, token_for(doctor))
    assert response.status_code == 200, response.content
    await b2.expect("keys.low")
    await a.sync(cursor)

    # A video upload: its metadata is stripped by the worker (eager here), then attachment.updated.
    video = media_corpus.mp4()
    response = await _rest(
        "POST",
        f"{server.base_url}/api/v1/attachments",
        token_for(patient),
        files={"file": (video.name, video.data, video.content_type)},
    )
    assert response.status_code == 201, response.content
    await b2.expect("attachment.updated")

    # A consultation request the doctor let expire: both participants hear consultation.updated.
    consultation_id = await sync_to_async(_unanswered_request)(patient, doctor, direct)
    await sync_to_async(consultations.consultation_expire)(consultation_id=consultation_id)
    await a.expect("consultation.updated")
    await b2.expect("consultation.updated")

    # A held appointment slot released (the payment never came): both sides hear appointment.updated.
    await sync_to_async(_released_hold)(patient, doctor)
    await a.expect("appointment.updated")
    await b2.expect("appointment.updated")

    # The patient asks for the first available doctor of the doctor's specialty: both hear it.
    await sync_to_async(_on_demand_request)(patient, doctor)
    await a.expect("on_demand.updated")
    await b2.expect("on_demand.updated")

    # The doctor schedules a message for later: their devices hear scheduled_message.updated.
    response = await _rest(
        "POST",
        f"{server.base_url}/api/v1/scheduled-messages",
        token_for(doctor),
        json={
            "conversation_id": direct.pk,
            "body": "Take your second dose at 20:00",
            "send_at": (timezone.now() + timedelta(hours=1)).isoformat(),
        },
    )
    assert response.status_code == 201, response.content
    await a.expect("scheduled_message.updated")

    # The patient reports the doctor and a moderator warns them: the patient's devices hear
    # report.updated, the doctor's moderation.notice.
    await sync_to_async(_reported_and_warned)(patient, doctor)
    await b2.expect("report.updated")
    await a.expect("moderation.notice")

    # The waiting room: a confirmed appointment starting in 5 minutes; the patient checks in
    # (the doctor hears waiting_room.updated, the patient's devices waiting_room.position), the
    # doctor admits them (the consultation opens).
    appointment_id = await sync_to_async(_confirmed_appointment)(patient, doctor)
    checked_in = await _ok(b, "appointment.check_in", {"appointment_id": appointment_id})
    assert checked_in["data"]["position"]["position"] == 1, checked_in
    await a.expect("waiting_room.updated", lambda f: len(f["data"]["queue"]) == 1)
    await b2.expect("waiting_room.position")
    admitted = await _ok(a, "waiting_room.admit", {"appointment_id": appointment_id})
    assert admitted["data"]["consultation"]["state"] == "in_progress", admitted
    await a.expect("waiting_room.updated", lambda f: f["data"]["queue"] == [])
    await b2.expect("appointment.updated", lambda f: f["data"]["appointment"]["state"] == "admitted")

    # The clinical record of that consultation (issue 23): the doctor signs and shares a note,
    # amends it, issues a prescription and cancels it; both sides hear each step.
    consultation_id = admitted["data"]["consultation"]["id"]
    api = f"{server.base_url}/api/v1"
    note = await _rest(
        "POST", f"{api}/consultations/{consultation_id}/notes", token_for(doctor), json={"plan": "rest"}
    )
    assert note.status_code == 201, note.content
    note_id = note.json()["id"]
    response = await _rest("POST", f"{api}/notes/{note_id}/sign", token_for(doctor), json={"share": True})
    assert response.status_code == 200, response.content
    await b2.expect("visit_note.shared")
    await a.expect("visit_note.shared")
    response = await _rest(
        "POST",
        f"{api}/notes/{note_id}/amendments",
        token_for(doctor),
        json={"reason": "r", "text": "and fluids"},
    )
    assert response.status_code == 201, response.content
    await b2.expect("visit_note.amended")
    await a.expect("visit_note.amended")
    prescription = await _rest(
        "POST",
        f"{api}/consultations/{consultation_id}/prescriptions",
        token_for(doctor),
        json={"medication_name": "Paracetamol", "dose": "1 g", "frequency": "every 6 hours", "quantity": 16},
    )
    assert prescription.status_code == 201, prescription.content
    await b2.expect("prescription.issued")
    await a.expect("prescription.issued")
    response = await _rest(
        "POST",
        f"{api}/prescriptions/{prescription.json()['id']}/cancel",
        token_for(doctor),
        json={"reason": "duplicate"},
    )
    assert response.status_code == 200, response.content
    await b2.expect("prescription.cancelled")
    await a.expect("prescription.cancelled")

    # A socket whose server lost its live path (a Redis restart) is told to sync.
    c = await Recorder.open(log, second.ws_url, token=token_for(patient))
    second_redis.stop()
    second_redis.start()
    await c.expect("sync.required", timeout=20)
    await c.close()

    # An answered call: ring, trickle, answer (the other device stops), renegotiate, a dropped
    # socket resumed, hang up.
    invite = await _ok(a, "call.invite", {"conversation_id": direct.pk, "media": "audio", "sdp": SDP})
    call_id = invite["data"]["call"]["id"]
    await b.expect("call.invite")
    await b2.expect("call.invite")
    await _ok(b, "call.ringing", {"call_id": call_id})
    await a.expect("call.ringing")
    await _ok(a, "call.ice", {"call_id": call_id, "candidate": CANDIDATE})
    await b.expect("call.ice")
    await _ok(b, "call.accept", {"call_id": call_id, "sdp": SDP})
    await a.expect("call.accept")
    await b2.expect("call.answered_elsewhere")
    await _ok(a, "call.update", {"call_id": call_id, "sdp": SDP})
    await b.expect("call.update")
    await b.close()
    await a.expect("call.peer_disconnected")
    b = await Recorder.open(log, url, token=token_for(patient), device_id=w["patient_device"])
    await _ok(b, "call.resume", {"call_id": call_id})
    await a.expect("call.peer_resumed")
    await _ok(a, "call.hangup", {"call_id": call_id})
    await b.expect("call.hangup")
    await b.expect("call.ended")

    # Rejected, cancelled and missed calls.
    for ending in ("call.reject", "call.cancel", "missed"):
        invite = await _ok(a, "call.invite", {"conversation_id": direct.pk, "media": "video", "sdp": SDP})
        call_id = invite["data"]["call"]["id"]
        await b.expect("call.invite")
        if ending == "call.reject":
            await _ok(b, "call.reject", {"call_id": call_id})
            await a.expect("call.reject")
        elif ending == "call.cancel":
            await _ok(a, "call.cancel", {"call_id": call_id})
            await b.expect("call.cancel")
        else:
            await sync_to_async(_ring_out)(call_id)
            await a.expect("call.missed")
        await b2.expect("call.ended" if ending != "missed" else "call.missed")

    for client in (a, b, b2):
        await client.close()
    return log


def _unanswered_request(patient: Any, doctor: Any, direct: Any) -> int:
    """A chat consultation requested and past its expiry (no payment authorised)."""
    consultation = Consultation.objects.create(
        patient=patient,
        doctor=doctor,
        kind=Consultation.Kind.CHAT,
        price=3000,
        currency="EUR",
        platform_fee=300,
        conversation=direct,
        provider="development",
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    return consultation.pk


def _released_hold(patient: Any, doctor: Any) -> None:
    """An appointment held for the patient, released by the system (its hold timed out)."""
    starts_at = timezone.now() + timedelta(days=2)
    with transaction.atomic():
        appointment = Appointment.objects.create(
            doctor=doctor,
            patient=patient,
            kind="chat",
            starts_at=starts_at,
            ends_at=starts_at + timedelta(minutes=30),
            state=Appointment.State.HELD,
            hold_expires_at=timezone.now(),
        )
        appointment_services.move(
            appointment, Appointment.State.RELEASED, actor=None, source="task", note="hold timed out"
        )


def _confirmed_appointment(patient: Any, doctor: Any) -> int:
    """A confirmed appointment starting in 5 minutes, its consultation authorised (the
    development provider authorises at once and captures anything)."""
    consultation = consultation_open(
        patient=patient,
        profile=doctor.doctor_profile,
        kind="chat",
        reason="",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    assert consultation.state == Consultation.State.PAID, consultation.state
    starts_at = timezone.now() + timedelta(minutes=5)
    appointment = Appointment.objects.create(
        doctor=doctor,
        patient=patient,
        consultation=consultation,
        kind="chat",
        starts_at=starts_at,
        ends_at=starts_at + timedelta(minutes=20),
        state=Appointment.State.CONFIRMED,
    )
    return appointment.pk


def _on_demand_request(patient: Any, doctor: Any) -> None:
    """An on-demand request of the doctor's specialty (the doctor is verified, with a fee)."""
    specialty = DoctorProfile.objects.get(user=doctor).specialty.slug
    on_demand.request_create(patient=patient, specialty=specialty, kind="chat")


def _reported_and_warned(patient: Any, doctor: Any) -> None:
    """A report of the doctor by the patient, resolved with a warning by an operator."""
    from accounts.actors import Operator
    from moderation import services as moderation

    report, _ = moderation.report_create(reporter=patient, target="user", user_id=doctor.pk, reason="other")
    moderation.report_warn(report_id=report.pk, actor=Operator(command="contract session"))


def _ring_out(call_id: int) -> None:
    Call.objects.filter(pk=call_id).update(ring_expires_at=timezone.now() - timedelta(seconds=1))
    assert call_services.call_ring_timeout(call_id=call_id)


# --- Tests ------------------------------------------------------------------------------------
def _read_recording() -> list[dict[str, Any]]:
    return [json.loads(line) for line in RECORDING.read_text(encoding="utf-8").splitlines() if line]


def test_recorded_session_matches_asyncapi() -> None:
    records = _read_recording()
    check_against_document(records)
    check_coverage(records)


def test_a_frame_the_document_does_not_allow_fails_the_check() -> None:
    bad = {"dir": "out", "frame": {"type": "pong", "ref": "p1", "data": {"extra": 1}}}
    with pytest.raises(AssertionError, match=r"does not match docs/asyncapi\.yaml"):
        check_against_document([bad])
    with pytest.raises(AssertionError, match="never sent"):
        check_coverage([])


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_live_session_matches_asyncapi(
    live_server_factory: Any, make_token: Callable[..., str], tmp_path: Path
) -> None:
    limits = {"HEALTHCHAT_WS_RATE": "500", "HEALTHCHAT_WS_BURST": "500"}
    server = live_server_factory(limits)
    own_redis = OwnRedis(free_port(), tmp_path)
    own_redis.start()
    try:
        second = live_server_factory(
            {**limits, "REDIS_URL": own_redis.url, "CELERY_BROKER_URL": own_redis.url}
        )

        def token_for(user: Any) -> str:
            return make_token(uid=user.firebase_uid, phone_number=user.phone_number)

        records = asyncio.run(play_session(server, token_for, second=second, second_redis=own_redis))
    finally:
        own_redis.stop()
    check_against_document(records)
    check_coverage(records)
    if os.environ.get("HC_RECORD_SESSION") == "1":
        RECORDING.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(_redacted(r), sort_keys=True) + "\n" for r in records]
        RECORDING.write_text("".join(lines), encoding="utf-8")


def _redacted(record: dict[str, Any]) -> dict[str, Any]:
    """The recording without the session's tokens (minted for the test, but a token is a token)."""
    frame = record["frame"]
    if record["dir"] == "in" and frame["type"] in ("auth", "auth.refresh"):
        frame = {**frame, "data": {**frame["data"], "token": "redacted.test.token"}}
    return {**record, "frame": frame}
