"""Helpers for ratings tests: completed consultations and reviews through the real services."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from accounts.tests.factories import PatientFactory
from messaging.tests.factories import pair
from payments import services as payment_services
from payments.models import Consultation
from payments.tests.factories import requested
from ratings import services
from ratings.models import Review


def completed(patient: User | None = None, doctor: User | None = None) -> Consultation:
    """A consultation requested, accepted and completed through the payments services (the
    development provider authorises and captures at once)."""
    if patient is None or doctor is None:
        patient, doctor, _conversation = pair()
    consultation = requested(patient, doctor)
    payment_services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    payment_services.consultation_complete(user=doctor, consultation_id=consultation.pk)
    consultation.refresh_from_db()
    assert consultation.state == "completed"
    return consultation


def reviewed(doctor: User | None = None, stars: int = 5, comment: str = "", **kw: Any) -> Review:
    """A completed consultation of a new patient (with ``doctor``, or a new one) and its review."""
    consultation = completed() if doctor is None else completed(PatientFactory.create(), doctor)
    return services.review_create(
        patient=consultation.patient, consultation_id=consultation.pk, stars=stars, comment=comment, **kw
    )
