"""Live: the patient's socket, on a real ASGI server, hears ``visit_note.shared``,
``visit_note.amended``, ``prescription.issued`` and ``prescription.cancelled`` when the doctor acts
over REST on another server process (Redis channel layer between them); no frame carries the
note's or the prescription's text."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests

from accounts.tests.factories import DoctorFactory, PatientFactory
from tests.wsclient import WsClient

from .conftest import VALID_RX, open_consultation

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _post(url: str, token: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_patient_hears_the_record_live(live_server_factory, make_token):
    first, second = live_server_factory(), live_server_factory()
    doctor, patient = DoctorFactory.create(), PatientFactory.create()
    consultation = open_consultation(patient, doctor, "accepted")
    token = {u.pk: make_token(uid=u.firebase_uid, phone_number=u.phone_number) for u in (doctor, patient)}
    api = f"{second.base_url}/api/v1"

    async def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await asyncio.to_thread(_post, f"{api}{path}", token[doctor.pk], body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    seen: list[dict[str, Any]] = []

    async def scenario() -> None:
        sock = await WsClient.connect(first.ws_url, token[patient.pk])
        note = await call(f"/consultations/{consultation.pk}/notes", {"assessment": "secret-diagnosis-xyz"})
        await call(f"/notes/{note['id']}/sign", {"share": True})
        frame = await sock.expect(
            "visit_note.shared", lambda f: f["data"]["note"]["id"] == note["id"], timeout=30
        )
        seen.append(frame)
        assert frame["data"]["note"] == {
            "id": note["id"],
            "consultation_id": consultation.pk,
            "doctor_id": doctor.pk,
            "state": "signed",
            "signed_at": frame["data"]["note"]["signed_at"],
            "shared_at": frame["data"]["note"]["shared_at"],
            "amendment_count": 0,
        }
        await call(f"/notes/{note['id']}/amendments", {"reason": "typo", "text": "secret-amendment-xyz"})
        frame = await sock.expect("visit_note.amended", timeout=30)
        seen.append(frame)
        assert frame["data"]["note"]["amendment_count"] == 1

        issued = await call(f"/consultations/{consultation.pk}/prescriptions", dict(VALID_RX))
        frame = await sock.expect(
            "prescription.issued", lambda f: f["data"]["prescription"]["id"] == issued["id"], timeout=30
        )
        seen.append(frame)
        data = frame["data"]["prescription"]
        assert (data["number"], data["status"], data["patient_id"]) == (
            issued["number"],
            "issued",
            patient.pk,
        )
        await call(f"/prescriptions/{issued['id']}/cancel", {"reason": "secret-reason-xyz"})
        frame = await sock.expect("prescription.cancelled", timeout=30)
        seen.append(frame)
        assert frame["data"]["prescription"]["status"] == "cancelled"
        assert frame["data"]["prescription"]["cancelled_at"]
        seen.extend(sock.inbox)
        await sock.close()
        text = str(seen)
        for private in ("secret-", "Amoxicillin", issued["verification_code"]):
            assert private not in text

    asyncio.run(scenario())
