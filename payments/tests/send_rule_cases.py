"""Payments' inputs for the generic send-rule loop (``messaging/tests/test_send_rules.py``
``test_every_registered_rule_gives_the_same_outcome_on_every_writer``): for each rule payments
registers, sends and the outcome every writer must give them. The loop finds this module by the
rule's app (``<app>.tests.send_rule_cases``) and fails for a registered rule with no case here."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from messaging import services as messaging
from messaging.tests.factories import pair
from payments.models import Consultation
from payments.tests.factories import requested


def _closed_consultation() -> tuple[Any, Any, int]:
    """A patient and a doctor whose only consultation completed and whose follow-up window has
    ended (requested through the real service, then moved past its window)."""
    patient, doctor, _conversation = pair()
    consultation = requested(patient, doctor)
    Consultation.objects.filter(pk=consultation.pk).update(
        state="completed",
        accepted_at=timezone.now() - dt.timedelta(days=9),
        completed_at=timezone.now() - dt.timedelta(days=8),
        closes_at=timezone.now() - dt.timedelta(minutes=1),
    )
    return patient, doctor, consultation.conversation_id


def patient_after_the_window() -> tuple[messaging.SendRequest, Any]:
    patient, _doctor, conversation_id = _closed_consultation()
    return messaging.SendRequest(
        sender=patient, conversation_id=conversation_id, client_id=uuid.uuid4(), body="x"
    ), "consultation_closed"


def doctor_after_the_window() -> tuple[messaging.SendRequest, Any]:
    _patient, doctor, conversation_id = _closed_consultation()
    return messaging.SendRequest(
        sender=doctor, conversation_id=conversation_id, client_id=uuid.uuid4(), body="x"
    ), 1


def patient_without_consultations() -> tuple[messaging.SendRequest, Any]:
    patient, _doctor, conversation = pair()
    return messaging.SendRequest(
        sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
    ), 1


# rule name -> its cases: (label, build) where build() -> (the send, its outcome: a seq or an error code)
CASES: dict[str, list[tuple[str, Callable[[], tuple[messaging.SendRequest, Any]]]]] = {
    "payments.consultation_closed": [
        ("patient after the window", patient_after_the_window),
        ("doctor after the window", doctor_after_the_window),
        ("patient without consultations", patient_without_consultations),
    ],
}
