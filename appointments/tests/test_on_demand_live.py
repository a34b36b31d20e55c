"""Live: an on-demand request reaches two doctors connected to two server processes (Redis
channel layer between them), both accept at once over REST, exactly one wins, and the patient
and the losing doctor hear of it on their sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests

from accounts.models import Specialty
from accounts.tests.factories import DoctorFactory, PatientFactory
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _post(url: str, token: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_request_reaches_two_doctors_on_two_servers_and_one_wins(live_server_factory, make_token):
    first, second = live_server_factory(), live_server_factory()
    specialty = Specialty.objects.create(slug="live-cardiology", name="Live cardiology")
    doctors = [DoctorFactory.create(profile__specialty=specialty) for _ in range(2)]
    patient = PatientFactory.create()
    token = {u.pk: make_token(uid=u.firebase_uid, phone_number=u.phone_number) for u in (*doctors, patient)}

    async def scenario() -> None:
        doctor_sockets = [
            await WsClient.connect(first.ws_url, token[doctors[0].pk]),
            await WsClient.connect(second.ws_url, token[doctors[1].pk]),
        ]
        patient_socket = await WsClient.connect(first.ws_url, token[patient.pk])
        created = await asyncio.to_thread(
            _post,
            f"{second.base_url}/api/v1/on-demand",
            token[patient.pk],
            {"specialty": "live-cardiology", "kind": "chat", "reason": "palpitations"},
        )
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        for sock in (*doctor_sockets, patient_socket):
            frame = await sock.expect(
                "on_demand.updated", lambda f: f["data"]["request"]["id"] == request_id, timeout=30
            )
            assert frame["data"]["request"]["state"] == "open"
            assert "palpitations" not in str(frame)

        answers = await asyncio.gather(
            asyncio.to_thread(
                _post, f"{first.base_url}/api/v1/on-demand/{request_id}/accept", token[doctors[0].pk], {}
            ),
            asyncio.to_thread(
                _post, f"{second.base_url}/api/v1/on-demand/{request_id}/accept", token[doctors[1].pk], {}
            ),
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 409], [a.text for a in answers]
        loser = next(a for a in answers if a.status_code == 409)
        assert loser.json()["error"]["code"] == "request_taken"
        winner_body = next(a for a in answers if a.status_code == 200).json()
        winner_index = [d.pk for d in doctors].index(winner_body["doctor_id"])
        loser_socket = doctor_sockets[1 - winner_index]
        for sock in (patient_socket, loser_socket):
            frame = await sock.expect(
                "on_demand.updated",
                lambda f: (
                    f["data"]["request"]["id"] == request_id and f["data"]["request"]["state"] == "accepted"
                ),
                timeout=30,
            )
            assert frame["data"]["request"]["doctor_id"] == winner_body["doctor_id"]
            assert frame["data"]["request"]["consultation_id"] == winner_body["consultation_id"]
        # The patient's socket also hears of the consultation the acceptance opened.
        await patient_socket.expect(
            "consultation.updated",
            lambda f: f["data"]["consultation"]["id"] == winner_body["consultation_id"],
            timeout=30,
        )
        for sock in (*doctor_sockets, patient_socket):
            await sock.close()

    asyncio.run(scenario())
