"""Factories and helpers for messaging tests."""

from __future__ import annotations

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging import services
from messaging.models import Conversation


def pair() -> tuple[User, User, Conversation]:
    """A patient and a verified doctor with their direct conversation."""
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    return patient, doctor, conversation
