"""Factories and helpers for messaging tests."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging import batching, services
from messaging.models import Conversation


def pair() -> tuple[User, User, Conversation]:
    """A patient and a verified doctor with their direct conversation."""
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    return patient, doctor, conversation


def send_item(
    sender: User, conversation_id: int, body: str, client_id: uuid.UUID | None = None
) -> services.SendRequest:
    """A plaintext ``message.send`` as the socket handler hands it to the batcher."""
    return services.SendRequest(
        sender=sender, conversation_id=conversation_id, client_id=client_id or uuid.uuid4(), body=body
    )


async def send_together(batcher: batching.SendBatcher, items: list[services.SendRequest]) -> list[Any]:
    """Sends queued in one event-loop turn: one batch. Each result or exception, in order."""
    return await asyncio.gather(*(batcher.submit(item) for item in items), return_exceptions=True)
