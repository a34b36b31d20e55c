"""A block stops every way of opening a conversation or a consultation with the other side:
a new conversation, the existing conversation (``POST conversations`` returns it), and a paid
consultation request (which opens or reuses the conversation). Whoever blocked, either way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from payments.models import Consultation
from payments.tests.factories import completed, people

pytestmark = pytest.mark.django_db


def block(client_for: Callable[[User], APIClient], blocker: User, blocked: User) -> None:
    answer = client_for(blocker).post("/api/v1/blocks", {"user_id": blocked.pk}, format="json")
    assert answer.status_code == 204, answer.content


def refused_as_blocked(answer: Any) -> None:
    assert answer.status_code == 403, answer.content
    assert answer.json() == {"error": {"code": "blocked", "message": "This user cannot be contacted."}}


@pytest.mark.parametrize("blocker", ["doctor", "patient"])
def test_a_block_stops_opening_the_existing_conversation_and_a_consultation(
    stripe_fake: Any, client_for: Callable[[User], APIClient], blocker: str
) -> None:
    patient, doctor = people()
    consultation = completed(patient, doctor, stripe_fake)  # the conversation exists already
    if blocker == "doctor":
        block(client_for, doctor, patient)
    else:
        block(client_for, patient, doctor)
    patient_api = client_for(patient)
    intents_before = len(stripe_fake.calls("POST", "/v1/payment_intents"))

    refused_as_blocked(patient_api.post("/api/v1/conversations", {"peer_id": doctor.pk}, format="json"))
    refused_as_blocked(
        client_for(doctor).post("/api/v1/conversations", {"peer_id": patient.pk}, format="json")
    )
    refused_as_blocked(
        patient_api.post("/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "chat"}, format="json")
    )
    assert list(Consultation.objects.filter(patient=patient).values_list("pk", flat=True)) == [
        consultation.pk
    ]
    assert len(stripe_fake.calls("POST", "/v1/payment_intents")) == intents_before  # no authorisation


def test_a_block_stops_a_first_consultation_before_any_payment(
    stripe_fake: Any, client_for: Callable[[User], APIClient]
) -> None:
    patient, doctor = people()
    block(client_for, doctor, patient)
    refused_as_blocked(
        client_for(patient).post(
            "/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "chat"}, format="json"
        )
    )
    assert not Consultation.objects.filter(patient=patient).exists()


def test_after_unblocking_both_open_again(stripe_fake: Any, client_for: Callable[[User], APIClient]) -> None:
    patient, doctor = people()
    completed(patient, doctor, stripe_fake)
    block(client_for, doctor, patient)
    assert client_for(doctor).delete(f"/api/v1/blocks/{patient.pk}").status_code == 204
    patient_api = client_for(patient)
    assert patient_api.post("/api/v1/conversations", {"peer_id": doctor.pk}, format="json").status_code == 200
    answer = patient_api.post(
        "/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "chat"}, format="json"
    )
    assert answer.status_code == 201, answer.content
