"""Fixtures of the clinical record's tests: a verified doctor, a patient, consultations between
them in a chosen state (made through the payments services, development provider)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory
from payments import booking as payment_booking
from payments import services as payment_services
from payments.models import Consultation

VALID_RX: dict[str, Any] = {
    "medication_name": "Amoxicillin",
    "strength": "500 mg",
    "form": "capsule",
    "dose": "1 capsule",
    "route": "oral",
    "frequency": "three times a day",
    "duration": "5 days",
    "quantity": 15,
    "repeats": 0,
    "instructions": "Take with food.",
}


def open_consultation(patient: User, doctor: User, state: str = "accepted") -> Consultation:
    """A consultation of ``patient`` with ``doctor`` moved to ``state`` (paid, accepted,
    in_progress or completed) through the real services."""
    consultation = payment_booking.consultation_request(patient=patient, doctor_id=doctor.pk, kind="chat")
    if state in ("accepted", "in_progress", "completed"):
        payment_services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    if state == "in_progress":
        payment_services.consultation_start(user=doctor, consultation_id=consultation.pk)
    if state == "completed":
        payment_services.consultation_complete(user=doctor, consultation_id=consultation.pk)
    consultation.refresh_from_db()
    assert consultation.state == state, consultation.state
    return consultation


def complete_days_ago(consultation: Consultation, days: float) -> None:
    """Move a completed consultation's completion back in time."""
    from django.utils import timezone

    at = timezone.now() - dt.timedelta(days=days)
    Consultation.objects.filter(pk=consultation.pk).update(
        completed_at=at, closes_at=at + dt.timedelta(days=7)
    )
    consultation.refresh_from_db()


@pytest.fixture
def doctor(db: Any) -> User:
    return DoctorFactory.create(display_name="Dr Rita Record", profile__licence_number="GMC-7654321")


@pytest.fixture
def patient(db: Any) -> User:
    return PatientFactory.create(display_name="Paula Patient")


@pytest.fixture
def stranger(db: Any) -> User:
    return PatientFactory.create(display_name="Sam Stranger")


@pytest.fixture
def consultation(patient: User, doctor: User) -> Consultation:
    return open_consultation(patient, doctor, "accepted")


@pytest.fixture
def as_user(client_for: Callable[..., Any]) -> Callable[[User], Any]:
    return client_for
