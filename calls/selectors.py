"""Reads for calls, scoped to the caller: only a call's participants see it (others get 404)."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from accounts.models import User
from core.errors import NotFound

from . import validators as v
from .models import Call, CallParticipant


def participant_data(participant: CallParticipant) -> dict[str, Any]:
    return {
        "user_id": participant.user_id,
        "role": participant.role,
        "state": participant.state,
        "joined_at": participant.joined_at.isoformat() if participant.joined_at else None,
        "left_at": participant.left_at.isoformat() if participant.left_at else None,
    }


def call_data(call: Call, participants: list[CallParticipant] | None = None) -> dict[str, Any]:
    """The call as clients see it (``participants`` given, or prefetched on the call)."""
    people = participants if participants is not None else list(call.participants.all())
    return {
        "id": call.pk,
        "conversation_id": call.conversation_id,
        "caller_id": call.caller_id,
        "media": call.media,
        "state": call.state,
        "end_reason": call.end_reason or None,
        "created_at": call.created_at.isoformat(),
        "ring_expires_at": call.ring_expires_at.isoformat(),
        "answered_at": call.answered_at.isoformat() if call.answered_at else None,
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        "duration": call.duration,
        "participants": [participant_data(p) for p in sorted(people, key=lambda p: p.pk or 0)],
    }


def _visible_to(user: User) -> QuerySet[Call]:
    return Call.objects.filter(participants__user=user).prefetch_related(
        Prefetch("participants", queryset=CallParticipant.objects.order_by("id"))
    )


def call_list(
    *, user: User, conversation_id: int | None = None, active: bool | None = None
) -> QuerySet[Call]:
    """The caller's calls, newest first (the view paginates by id, never OFFSET)."""
    calls = _visible_to(user)
    if conversation_id is not None:
        calls = calls.filter(conversation_id=conversation_id)
    if active is True:
        calls = calls.filter(state__in=v.ACTIVE_STATES)
    elif active is False:
        calls = calls.filter(state__in=v.FINAL_STATES)
    return calls.order_by("-id")


def call_get(*, user: User, call_id: int) -> Call:
    call = _visible_to(user).filter(pk=call_id).first()
    if call is None:
        raise NotFound("No such call.", code="call_not_found")
    return call
