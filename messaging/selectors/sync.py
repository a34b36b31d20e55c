"""Sync: replay of the per-conversation event logs, for one caller or a batch of ``sync`` frames."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet

from accounts.models import User
from core.errors import ApplicationError
from messaging import validators as v
from messaging.models import Event, Membership, MessageCiphertext

from .members import block_partner_ids
from .wire import event_frame

SYNC_BATCH = 500
SYNC_NO_CURSOR_TAIL = 100
_MESSAGE_EVENTS = ("message.new", "message.updated")


# --- Sync: replay of the per-conversation event logs -------------------------------------
@dataclass
class SyncCursor:
    positions: dict[int, int]

    def encode(self) -> str:
        raw = json.dumps(
            {"v": 1, "c": {str(k): v for k, v in sorted(self.positions.items())}}, separators=(",", ":")
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str | None) -> SyncCursor | None:
        if not value:
            return None
        try:
            padded = value + "=" * (-len(value) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            positions = {int(k): int(v) for k, v in data["c"].items()}
            if data.get("v") != 1 or any(v < 0 for v in positions.values()):
                raise ValueError("bad cursor")
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, binascii.Error) as exc:
            raise ApplicationError(
                "invalid_cursor", "The sync cursor is not one this server issued."
            ) from exc
        return cls(positions)


def _event_frame(event: Event, encrypted: bool, ciphertexts: dict[int, bytes]) -> dict[str, Any]:
    if event.kind in v.DATA_EVENT_KINDS:  # receipt, device events, reactions, pins
        data = {"conversation_id": event.conversation_id, **(event.data or {})}
        return {"type": event.kind, "data": data, "event": event.number}
    assert event.message is not None
    return event_frame(
        event.kind,
        event.message,
        event.number,
        encrypted=encrypted,
        ciphertext=ciphertexts.get(event.message.pk),
    )


_SYNC_MEMBERSHIP_FIELDS = (
    "user_id",
    "conversation_id",
    "joined_event",
    "visible_after_seq",
    "left_event",
    "left_at",
    "conversation__last_event",
    "conversation__e2ee",
)


@dataclass(frozen=True)
class SyncRequest:
    """One ``sync`` frame: whose, from which cursor, for which device (``sync_events_many``)."""

    user: User
    cursor: str | None
    device_id: int | None = None


SyncResult = tuple[list[dict[str, Any]], str, bool]


@dataclass
class _SyncPlan:
    """One caller's sync: cursor ``positions``, ``ranges`` ``(conversation_id, after, up_to)``
    with events to send, the end-to-end encrypted conversations, and each conversation's
    ``bounds`` (the member's ``visible_after_seq``: an event about an older message is skipped)."""

    positions: dict[int, int]
    ranges: list[tuple[int, int, int]]
    encrypted_ids: set[int]
    bounds: dict[int, int]
    # Users in a block with the caller: their receipts are not replayed (``_hide_blocked``).
    blocked: set[int] = field(default_factory=set)


def _sync_plan(memberships: list[Membership], parsed: SyncCursor | None) -> _SyncPlan:
    """The plan of one caller's memberships and cursor."""
    encrypted_ids = {m.conversation_id for m in memberships if m.conversation.e2ee}
    bounds = {m.conversation_id: m.visible_after_seq for m in memberships}
    positions: dict[int, int] = {}
    ranges: list[tuple[int, int, int]] = []
    for m in memberships:
        top = (
            m.conversation.last_event
            if m.left_event is None
            else min(m.left_event, m.conversation.last_event)
        )
        if parsed is None:
            start = max(m.joined_event, top - SYNC_NO_CURSOR_TAIL)
        else:
            start = max(m.joined_event, parsed.positions.get(m.conversation_id, m.joined_event))
        positions[m.conversation_id] = max(start, 0)
        if top > start:
            ranges.append((m.conversation_id, start, top))
    return _SyncPlan(positions, ranges, encrypted_ids, bounds)


def _visible(event: Event, plan: _SyncPlan) -> bool:
    """An event about a message older than the member's bound (an edit or deletion of history
    they may not read) is not theirs to see, nor the receipt of someone in a block with them."""
    if event.kind == Event.Kind.RECEIPT:
        return (event.data or {}).get("user_id") not in plan.blocked
    message = event.message
    if message is None:  # reactions and pins name their message's seq in their data
        seq = (event.data or {}).get("seq")
        return seq is None or seq > plan.bounds.get(event.conversation_id, 0)
    return message.seq > plan.bounds.get(event.conversation_id, 0)


def _receipt_senders(events: list[Event], caller_id: int) -> set[int]:
    return {
        int(e.data["user_id"])
        for e in events
        if e.kind == Event.Kind.RECEIPT and e.data and e.data.get("user_id") not in (None, caller_id)
    }


def _hide_blocked(plans: list[tuple[int, _SyncPlan, list[Event]]]) -> None:
    """Fill each plan's ``blocked`` (caller id, plan, its events): one query, and none when the
    events hold no receipt of another user."""
    wanted = {caller: _receipt_senders(events, caller) for caller, _plan, events in plans}
    among = set().union(*wanted.values()) if wanted else set()
    if not among:
        return
    partners = block_partner_ids(user_ids={c for c, senders in wanted.items() if senders}, among=among)
    for caller, plan, _events in plans:
        plan.blocked = partners.get(caller, set())


def _sync_frames(
    events: list[Event], more: bool, plan: _SyncPlan, ciphertexts: dict[int, bytes]
) -> SyncResult:
    positions = plan.positions
    frames: list[dict[str, Any]] = []
    for event in events:
        if _visible(event, plan):
            frames.append(_event_frame(event, event.conversation_id in plan.encrypted_ids, ciphertexts))
        positions[event.conversation_id] = event.number
    if not more:  # else conversations not reached in this batch keep their old position
        for conversation_id, _start, top in plan.ranges:
            positions[conversation_id] = max(positions[conversation_id], top)
    return frames, SyncCursor(positions).encode(), more


def _wanted_ciphertexts(events: list[Event], encrypted_ids: set[int]) -> list[int]:
    return [
        e.message_id
        for e in events
        if e.conversation_id in encrypted_ids and e.message_id is not None and e.kind in _MESSAGE_EVENTS
    ]


def _sync_memberships(user_ids: list[int]) -> list[Membership]:
    return list(
        Membership.objects.filter(user_id__in=user_ids)
        .select_related("conversation")
        .only(*_SYNC_MEMBERSHIP_FIELDS)
    )


def _sync_event_query(condition: Q) -> QuerySet[Event]:
    return (
        Event.objects.filter(condition)
        .select_related("message")
        .prefetch_related("message__attachments")
        .order_by("conversation_id", "number")
    )


def sync_events(*, user: User, cursor: str | None, device_id: int | None = None) -> SyncResult:
    """What the caller missed since ``cursor``: (frames in order, new cursor, more to come).

    Messages of end-to-end encrypted conversations carry ``device_id``'s own ciphertext (one
    more query, only when the batch has any)."""
    parsed = SyncCursor.decode(cursor)
    memberships = _sync_memberships([user.pk])
    plan = _sync_plan(memberships, parsed)
    if not plan.ranges:
        return [], SyncCursor(plan.positions).encode(), False
    condition = Q()
    for conversation_id, start, top in plan.ranges:
        condition |= Q(conversation_id=conversation_id, number__gt=start, number__lte=top)
    events = list(_sync_event_query(condition)[: SYNC_BATCH + 1])
    more = len(events) > SYNC_BATCH
    events = events[:SYNC_BATCH]
    _hide_blocked([(user.pk, plan, events)])
    ciphertexts: dict[int, bytes] = {}
    wanted = _wanted_ciphertexts(events, plan.encrypted_ids)
    if wanted and device_id is not None:
        ciphertexts = {
            message_id: bytes(raw)
            for message_id, raw in MessageCiphertext.objects.filter(
                device_id=device_id, message_id__in=wanted
            ).values_list("message_id", "ciphertext")
        }
    return _sync_frames(events, more, plan, ciphertexts)


def sync_events_many(requests: list[SyncRequest]) -> list[SyncResult | ApplicationError]:
    """``sync_events`` for many callers at once (sockets reconnecting together), each answer
    the same as its own ``sync_events`` would be: one memberships query for all of them, one
    events query for every range any of them misses (each conversation's event read once
    however many of its members sync), one ciphertexts query. A caller missing more than
    ``SYNC_BATCH`` events (its answer is cut, ``more``) is answered by ``sync_events`` alone.
    An invalid cursor is that caller's error only."""
    answers: list[SyncResult | ApplicationError | None] = [None] * len(requests)
    parsed: dict[int, SyncCursor | None] = {}
    for i, request in enumerate(requests):
        try:
            parsed[i] = SyncCursor.decode(request.cursor)
        except ApplicationError as exc:
            answers[i] = exc
    by_user: dict[int, list[Membership]] = {}
    if parsed:
        for membership in _sync_memberships(sorted({requests[i].user.pk for i in parsed})):
            by_user.setdefault(membership.user_id, []).append(membership)
    plans: dict[int, _SyncPlan] = {}
    alone: list[int] = []
    spans: dict[int, tuple[int, int]] = {}  # conversation -> (after, up to) over every range
    for i, cursor in parsed.items():
        plan = _sync_plan(by_user.get(requests[i].user.pk, []), cursor)
        # Numbers are unique per conversation: a range holds at most ``top - start`` events.
        if sum(top - start for _c, start, top in plan.ranges) > SYNC_BATCH:
            alone.append(i)
            continue
        plans[i] = plan
        for conversation_id, start, top in plan.ranges:
            low, high = spans.get(conversation_id, (start, top))
            spans[conversation_id] = (min(low, start), max(high, top))
    by_conversation: dict[int, list[Event]] = {}
    if spans:
        condition = Q()
        for conversation_id, (start, top) in sorted(spans.items()):
            condition |= Q(conversation_id=conversation_id, number__gt=start, number__lte=top)
        for event in _sync_event_query(condition):
            by_conversation.setdefault(event.conversation_id, []).append(event)
    chosen: dict[int, list[Event]] = {}
    wanted: set[tuple[int, int]] = set()  # (device, message)
    for i, plan in plans.items():
        events = [
            event
            for conversation_id, start, top in sorted(plan.ranges)
            for event in by_conversation.get(conversation_id, ())
            if start < event.number <= top
        ]
        chosen[i] = events
        device_id = requests[i].device_id
        if device_id is not None:
            wanted.update((device_id, m) for m in _wanted_ciphertexts(events, plan.encrypted_ids))
    _hide_blocked([(requests[i].user.pk, plan, chosen[i]) for i, plan in plans.items()])
    copies: dict[int, dict[int, bytes]] = {}  # device -> message -> its ciphertext
    if wanted:
        rows = MessageCiphertext.objects.filter(
            device_id__in={d for d, _m in wanted}, message_id__in={m for _d, m in wanted}
        ).values_list("device_id", "message_id", "ciphertext")
        for d, m, raw in rows:
            if (d, m) in wanted:
                copies.setdefault(d, {})[m] = bytes(raw)
    for i, plan in plans.items():
        device_id = requests[i].device_id
        ciphertexts = {} if device_id is None else copies.get(device_id, {})
        answers[i] = _sync_frames(chosen[i], False, plan, ciphertexts)
    for i in alone:
        request = requests[i]
        answers[i] = sync_events(user=request.user, cursor=request.cursor, device_id=request.device_id)
    assert all(answer is not None for answer in answers)
    return answers  # type: ignore[return-value]
