"""The waiting room live, on two real uvicorn processes sharing PostgreSQL and Redis (the fake
Stripe API at the HTTP boundary): patients check in (frame and REST), the doctor's sockets on
both processes get the queue, each patient their position; the doctor admits in their own order;
the admission opens the consultation (captured, in progress: the chat works) and, with
``start_call``, rings the patient's device with ``call.invite``, which they answer."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
import requests

from accounts.tests.factories import DeviceFactory
from appointments.models import Appointment
from appointments.tests.factories import confirmed_appointment
from calls.tests.conftest import SDP_ANSWER, SDP_OFFER
from payments import selectors as payment_selectors
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

WAIT = 30.0  # a loaded machine: generous, a lost frame still fails


@pytest.fixture(scope="module")
def servers(live_server_factory: Any, fake_stripe_server: Any) -> tuple[Any, Any]:
    env = {
        "HEALTHCHAT_WS_RATE": "500",
        "HEALTHCHAT_WS_BURST": "500",
        "PAYMENTS_PROVIDER": "stripe",
        "STRIPE_SECRET_KEY": "sk_test_healthchat",
        "STRIPE_API_BASE": fake_stripe_server.url,
        "STRIPE_MAX_NETWORK_RETRIES": "2",
        "PLATFORM_FEE_PERCENT": "15",
        "APPOINTMENT_CHECKIN_OPENS_MINUTES": "60",
    }
    return live_server_factory(env), live_server_factory(env)


def token(make_token: Any, user: Any) -> str:
    return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number))


def queue_of(frame: dict[str, Any]) -> list[int]:
    return [entry["appointment_id"] for entry in frame["data"]["queue"]]


def test_check_in_queue_admission_and_call_across_two_processes(
    servers: tuple[Any, Any], make_token: Any, stripe_fake: Any, settings: Any
) -> None:
    one, two = servers
    # Ana's appointment starts in 5 minutes, Ben's (same doctor) in 30.
    ana = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=5), patient_name="Ana")
    ben = confirmed_appointment(
        stripe_fake, starts_in=dt.timedelta(minutes=30), doctor=ana.doctor, patient_name="Ben"
    )
    doctor = ana.doctor
    desk, laptop = DeviceFactory.create(user=doctor), DeviceFactory.create(user=doctor)
    ana_phone = ana.patient.devices.first()
    ben_phone = ben.patient.devices.first()
    assert ana_phone is not None
    assert ben_phone is not None

    async def scenario() -> None:
        # The doctor has a socket on each process; Ana is on one, Ben on two.
        doctor_one = await WsClient.connect(one.ws_url, token(make_token, doctor), device_id=desk.pk)
        doctor_two = await WsClient.connect(two.ws_url, token(make_token, doctor), device_id=laptop.pk)
        ana_ws = await WsClient.connect(one.ws_url, token(make_token, ana.patient), device_id=ana_phone.pk)
        ben_ws = await WsClient.connect(two.ws_url, token(make_token, ben.patient), device_id=ben_phone.pk)
        try:
            # 1. Ana checks in by frame: ack with her place; both doctor sockets see her waiting.
            ack = await ana_ws.request("appointment.check_in", {"appointment_id": ana.pk}, timeout=WAIT)
            assert ack["type"] == "ack", ack
            assert ack["data"]["appointment"]["state"] == "checked_in"
            assert ack["data"]["position"]["position"] == 1
            for sock in (doctor_one, doctor_two):
                frame = await sock.expect("waiting_room.updated", lambda f: queue_of(f) == [ana.pk], WAIT)
                (entry,) = frame["data"]["queue"]
                assert (entry["patient_id"], entry["display_name"]) == (ana.patient_id, "Ana")
                assert "fever" not in str(frame)  # the booking's reason never reaches the queue
            mine = await ana_ws.expect(
                "waiting_room.position", lambda f: f["data"]["appointment_id"] == ana.pk, WAIT
            )
            assert (mine["data"]["position"], mine["data"]["ahead"]) == (1, 0)

            # 2. Ben checks in by REST on the other process: he is second; the doctor sees both.
            answer = await asyncio.to_thread(
                requests.post,
                f"{two.base_url}/api/v1/appointments/{ben.pk}/check-in",
                json={},
                headers={"Authorization": f"Bearer {token(make_token, ben.patient)}"},
                timeout=WAIT,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["position"]["position"] == 2
            for sock in (doctor_one, doctor_two):
                await sock.expect("waiting_room.updated", lambda f: queue_of(f) == [ana.pk, ben.pk], WAIT)
            his = await ben_ws.expect(
                "waiting_room.position", lambda f: f["data"]["appointment_id"] == ben.pk, WAIT
            )
            assert (his["data"]["position"], his["data"]["ahead"]) == (2, 1)
            assert his["data"]["estimated_wait_seconds"] >= 20 * 60

            # 3. The doctor admits Ben first (their order): his consultation opens; Ana is still
            #    first and told so with a new estimate; the queue shrinks on both doctor sockets.
            admitted = await doctor_two.request(
                "waiting_room.admit", {"appointment_id": ben.pk}, timeout=WAIT
            )
            assert admitted["type"] == "ack", admitted
            assert admitted["data"]["appointment"]["state"] == "admitted"
            assert admitted["data"]["consultation"]["state"] == "in_progress"
            assert admitted["data"]["call"] is None
            for sock in (doctor_one, doctor_two):
                await sock.expect("waiting_room.updated", lambda f: queue_of(f) == [ana.pk], WAIT)
            await ben_ws.expect(
                "appointment.updated", lambda f: f["data"]["appointment"]["state"] == "admitted", WAIT
            )
            await ben_ws.expect(
                "consultation.updated", lambda f: f["data"]["consultation"]["state"] == "in_progress", WAIT
            )
            again = await ana_ws.expect(
                "waiting_room.position",
                lambda f: f["data"]["estimated_wait_seconds"] > mine["data"]["estimated_wait_seconds"] + 60,
                WAIT,
            )
            assert again["data"]["position"] == 1  # Ben's consultation is now ahead of her

            # 4. Then Ana, with a video call from the doctor's first socket: her phone rings.
            admitted = await doctor_one.request(
                "waiting_room.admit",
                {"appointment_id": ana.pk, "start_call": "video", "sdp": SDP_OFFER},
                timeout=WAIT,
            )
            assert admitted["type"] == "ack", admitted
            data = admitted["data"]
            assert data["appointment"]["state"] == "admitted"
            assert data["consultation"]["state"] == "in_progress"
            assert data["call_error"] is None
            call = data["call"]
            assert (call["state"], call["media"], call["caller_id"]) == ("ringing", "video", doctor.pk)
            assert call["conversation_id"] == data["consultation"]["conversation_id"]
            for sock in (doctor_one, doctor_two):
                await sock.expect("waiting_room.updated", lambda f: queue_of(f) == [], WAIT)
            invite = await ana_ws.expect("call.invite", lambda f: f["data"]["call"]["id"] == call["id"], WAIT)
            assert invite["data"]["sdp"] == SDP_OFFER
            await ana_ws.expect(
                "consultation.updated", lambda f: f["data"]["consultation"]["state"] == "in_progress", WAIT
            )

            # 5. Ana answers; the doctor's admitting socket is the call device and gets the answer.
            accepted = await ana_ws.request(
                "call.accept", {"call_id": call["id"], "sdp": SDP_ANSWER}, timeout=WAIT
            )
            assert accepted["type"] == "ack", accepted
            answer_frame = await doctor_one.expect(
                "call.accept", lambda f: f["data"]["call_id"] == call["id"], WAIT
            )
            assert answer_frame["data"]["sdp"] == SDP_ANSWER
            # The chat is open too: Ana writes in the consultation's conversation.
            sent = await ana_ws.request(
                "message.send",
                {
                    "conversation_id": call["conversation_id"],
                    "client_id": "7b0c4c2e-2d0f-4d35-9a3b-3f1c2a7e9b10",
                    "body": "Hello doctor",
                },
                timeout=WAIT,
            )
            assert sent["type"] == "ack", sent
            hung = await doctor_one.request("call.hangup", {"call_id": call["id"]}, timeout=WAIT)
            assert hung["type"] == "ack", hung
        finally:
            for sock in (doctor_one, doctor_two, ana_ws, ben_ws):
                await sock.close()

    asyncio.run(scenario())

    for appointment in (ana, ben):
        fresh = Appointment.objects.get(pk=appointment.pk)
        assert fresh.state == "admitted"
        states = [(t.from_state, t.to_state, t.source) for t in fresh.transitions.all()]
        assert states[-2][1:] == ("checked_in", "socket" if appointment is ana else "api")
        assert states[-1][:2] == ("checked_in", "admitted")
        assert fresh.consultation is not None
        assert fresh.consultation.state == "in_progress"
        assert payment_selectors.ledger_summary(consultation_id=fresh.consultation.pk).charge == 3000
