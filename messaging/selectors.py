"""Reads for messaging, always scoped to the caller's memberships."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet

from accounts.models import DeviceIdentity, User
from core.errors import ApplicationError, NotFound

from . import frames
from . import validators as v
from .models import Attachment, Block, Conversation, Event, Membership, Message, MessageCiphertext

HISTORY_MAX_LIMIT = 200
SYNC_BATCH = 500
SYNC_NO_CURSOR_TAIL = 100
_MESSAGE_EVENTS = ("message.new", "message.updated")


# --- Serialisation of what clients see --------------------------------------------------
def attachment_data(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.pk,
        "category": attachment.category,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "sha256": attachment.sha256,
        "name": attachment.name,
        "width": attachment.width,
        "height": attachment.height,
        "duration": attachment.duration,
    }


def attachment_state_data(attachment: Attachment) -> dict[str, Any]:
    """What the uploader sees of an upload: the attachment, its processing state and, when it
    was rejected, why (``rejection``: an error code)."""
    return {
        **attachment_data(attachment),
        "state": attachment.state,
        "rejection": attachment.rejection or None,
    }


@dataclass(frozen=True, slots=True)
class WrittenMessage:
    """A plaintext text message a batch's send statement has just written (no row read back):
    the fields ``message_data`` reads, under a ``Message``'s names."""

    pk: int
    conversation_id: int
    seq: int
    client_id: uuid.UUID
    sender_id: int
    created_at: datetime
    body: str
    reply_to_id: int | None
    kind: str = "text"
    edited_at: None = None
    deleted_at: None = None
    system: None = None


def message_data(
    message: Message | WrittenMessage,
    attachments: list[Attachment] | None = None,
    *,
    encrypted: bool | None = None,
    ciphertext: bytes | None = None,
) -> dict[str, Any]:
    """The message as clients see it: the ONE place its wire shape is built (through
    ``frames.message_wire``, which spells the keys), for ``ack`` (single and batched sends, on
    either writer: a ``WrittenMessage``), ``message.new`` / ``message.updated``, ``sync``
    replays, group events and REST history. ``attachments`` given, or prefetched on the message.

    A text message of an end-to-end encrypted conversation (``encrypted``, or read from its
    conversation when that is loaded) has ``body: ""`` and ``ciphertext``: this device's copy
    (given, or prefetched as ``device_ciphertexts``), base64, or null.
    """
    deleted = message.deleted_at is not None
    if attachments is None:
        attachments = (
            []
            if deleted or message.kind == "system" or isinstance(message, WrittenMessage)
            else list(message.attachments.all())
        )
    text_encrypted = (
        encrypted
        if encrypted is not None
        else isinstance(message, Message)
        and Message.conversation.is_cached(message)
        and message.conversation.e2ee
    ) and message.kind == Message.Kind.TEXT
    if text_encrypted and ciphertext is None:
        mine = getattr(message, "device_ciphertexts", None)
        ciphertext = bytes(mine[0].ciphertext) if mine else None
    return frames.message_wire(
        message_id=message.pk,
        conversation_id=message.conversation_id,
        seq=message.seq,
        client_id=str(message.client_id),
        sender_id=message.sender_id,
        kind=message.kind,
        created_at=message.created_at.isoformat(),
        body="" if deleted else message.body,
        attachments=[] if deleted else [attachment_data(a) for a in attachments],
        reply_to=message.reply_to_id,
        edited_at=message.edited_at.isoformat() if message.edited_at else None,
        deleted=deleted,
        system=message.system,
        ciphertext=(None if deleted or ciphertext is None else b64(ciphertext)) if text_encrypted else False,
    )


def b64(raw: bytes | memoryview) -> str:
    return base64.b64encode(bytes(raw)).decode("ascii")


# --- Membership and visibility ----------------------------------------------------------
def membership_get(*, user: User, conversation_id: int, active: bool = True) -> Membership:
    """The caller's membership; 404 (never 403) so non-members learn nothing."""
    qs = Membership.objects.select_related("conversation", "conversation__avatar").filter(
        conversation_id=conversation_id, user=user
    )
    if active:
        qs = qs.filter(left_at__isnull=True)
    membership = qs.first()
    if membership is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return membership


def visible_seq_range(membership: Membership) -> tuple[int, int | None]:
    """(exclusive lower bound, inclusive upper bound or None) of the seqs a member may read:
    both fixed in the membership row (at join and at removal), never read from the group's
    settings of today."""
    return membership.visible_after_seq, membership.left_seq


def active_member_ids(*, conversation_id: int) -> list[int]:
    return list(
        Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True).values_list(
            "user_id", flat=True
        )
    )


def active_member_bounds(*, conversation_id: int) -> list[tuple[int, int]]:
    """``(user_id, visible_after_seq)`` of the active members: who may read a given seq."""
    return list(
        Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True).values_list(
            "user_id", "visible_after_seq"
        )
    )


def shares_conversation(*, user_id: int, other_id: int) -> bool:
    """Both are active members of some conversation."""
    mine = Membership.objects.filter(user_id=user_id, left_at__isnull=True).values("conversation_id")
    return Membership.objects.filter(
        conversation_id__in=mine, user_id=other_id, left_at__isnull=True
    ).exists()


def e2ee_device_owners(*, user_ids: list[int]) -> dict[int, int]:
    """``{device_id: user_id}`` of the devices of ``user_ids`` that published keys (the devices
    an encrypted message must be encrypted for)."""
    return dict(
        DeviceIdentity.objects.filter(device__user_id__in=user_ids).values_list(
            "device_id", "device__user_id"
        )
    )


def contact_ids(*, user: User) -> set[int]:
    """Users who share an active conversation with ``user`` (who may watch their presence)."""
    mine = Membership.objects.filter(user=user, left_at__isnull=True).values("conversation_id")
    return set(
        Membership.objects.filter(conversation_id__in=mine, left_at__isnull=True)
        .exclude(user=user)
        .values_list("user_id", flat=True)
    )


def _block_partners(user_id: int) -> Q:
    """Rows of users in a block with ``user_id``, either way (for a ``user_id`` column)."""
    return Q(user_id__in=Block.objects.filter(blocker_id=user_id).values("blocked_id")) | Q(
        user_id__in=Block.objects.filter(blocked_id=user_id).values("blocker_id")
    )


def presence_contact_ids(*, user_id: int) -> set[int]:
    """Whose presence ``user_id`` may watch (and who may watch theirs): users sharing an active
    conversation with them, not erased, and not in a block with them either way."""
    mine = Membership.objects.filter(user_id=user_id, left_at__isnull=True).values("conversation_id")
    return set(
        Membership.objects.filter(
            conversation_id__in=mine, left_at__isnull=True, user__deleted_at__isnull=True
        )
        .exclude(user_id=user_id)
        .exclude(_block_partners(user_id))
        .values_list("user_id", flat=True)
        .distinct()
    )


def signal_audience_ids(*, conversation_id: int, user_id: int) -> list[int]:
    """Who gets ``user_id``'s typing and receipts in a conversation: the other active members
    who are not in a block with them either way."""
    return list(
        Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True)
        .exclude(user_id=user_id)
        .exclude(_block_partners(user_id))
        .values_list("user_id", flat=True)
    )


def block_partner_ids(*, user_ids: set[int], among: set[int]) -> dict[int, set[int]]:
    """``{user: the users of among in a block with them, either way}`` in one query."""
    rows = Block.objects.filter(
        Q(blocker_id__in=user_ids, blocked_id__in=among) | Q(blocked_id__in=user_ids, blocker_id__in=among)
    ).values_list("blocker_id", "blocked_id")
    partners: dict[int, set[int]] = {uid: set() for uid in user_ids}
    for blocker, blocked in rows:
        if blocker in partners:
            partners[blocker].add(blocked)
        if blocked in partners:
            partners[blocked].add(blocker)
    return partners


# --- Conversations -----------------------------------------------------------------------
def conversation_list(*, user: User) -> QuerySet[Membership]:
    """The caller's conversations with unread counts, in one query (no N+1)."""
    return (
        Membership.objects.filter(user=user, left_at__isnull=True)
        .select_related("conversation", "conversation__avatar")
        .annotate(unread=F("conversation__last_seq") - F("read_seq"))
        .order_by("-conversation__last_message_at", "-conversation_id")
    )


def conversation_members(*, conversation_ids: list[int], viewer_id: int) -> dict[int, list[dict[str, Any]]]:
    """The active members as ``viewer_id`` sees them: the receipts (``delivered_seq``,
    ``read_seq``) of a member in a block with the viewer, either way, are ``None``. One query."""
    in_block = Exists(
        Block.objects.filter(
            Q(blocker_id=viewer_id, blocked_id=OuterRef("user_id"))
            | Q(blocker_id=OuterRef("user_id"), blocked_id=viewer_id)
        )
    )
    rows = (
        Membership.objects.filter(conversation_id__in=conversation_ids, left_at__isnull=True)
        .select_related("user")
        .annotate(in_block=in_block)
        .order_by("conversation_id", "id")
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for m in rows:
        hidden = bool(m.in_block)
        out.setdefault(m.conversation_id, []).append(
            {
                "user_id": m.user_id,
                "display_name": m.user.display_name or "Deleted user",
                "role": m.role,
                "delivered_seq": None if hidden else m.delivered_seq,
                "read_seq": None if hidden else m.read_seq,
            }
        )
    return out


def conversation_data(membership: Membership, members: list[dict[str, Any]]) -> dict[str, Any]:
    c = membership.conversation
    unread = getattr(membership, "unread", c.last_seq - membership.read_seq)
    return {
        "id": c.pk,
        "kind": c.kind,
        "e2ee": c.e2ee,
        "name": c.name,
        "description": c.description,
        "last_seq": c.last_seq,
        "last_message_at": c.last_message_at.isoformat() if c.last_message_at else None,
        "created_at": c.created_at.isoformat(),
        "unread_count": max(0, unread),
        "my_role": membership.role,
        "delivered_seq": membership.delivered_seq,
        "read_seq": membership.read_seq,
        "members": members,
        "avatar": avatar_data(c),
    }


def avatar_data(conversation: Conversation) -> dict[str, Any] | None:
    """A group's avatar as members see it: an attachment they may download (``GET
    attachments/{id}``: a link to the image and its thumbnail). Read with ``conversation__avatar``
    joined (``conversation_list``, ``membership_get``)."""
    if conversation.avatar_id is None:
        return None
    avatar = conversation.avatar
    assert avatar is not None
    return {
        "attachment_id": avatar.pk,
        "content_type": avatar.content_type,
        "width": avatar.width,
        "height": avatar.height,
    }


# --- History (keyset pagination on seq, never OFFSET) ------------------------------------
def message_history(
    *,
    user: User,
    conversation_id: int,
    after_seq: int | None,
    before_seq: int | None,
    limit: int,
    device_id: int | None = None,
) -> tuple[list[Message], bool]:
    """Messages the caller may read, ascending by seq. Returns (messages, has_more).

    In an end-to-end encrypted conversation each message carries the ciphertext of the
    caller's own ``device_id`` (prefetched; none without a device)."""
    membership = membership_get(user=user, conversation_id=conversation_id, active=False)
    lower, upper = visible_seq_range(membership)
    limit = max(1, min(limit, HISTORY_MAX_LIMIT))
    qs = Message.objects.filter(conversation_id=conversation_id, seq__gt=lower).prefetch_related(
        "attachments"
    )
    if membership.conversation.e2ee and device_id is not None:
        qs = qs.prefetch_related(
            Prefetch(
                "ciphertexts",
                queryset=MessageCiphertext.objects.filter(device_id=device_id, device__user_id=user.pk),
                to_attr="device_ciphertexts",
            )
        )
    rows, has_more = _history_page(qs, after_seq=after_seq, before_seq=before_seq, upper=upper, limit=limit)
    for message in rows:
        message.conversation = membership.conversation  # message_data reads its e2ee flag
    return rows, has_more


def _history_page(
    qs: QuerySet[Message], *, after_seq: int | None, before_seq: int | None, upper: int | None, limit: int
) -> tuple[list[Message], bool]:
    if upper is not None:
        qs = qs.filter(seq__lte=upper)
    if after_seq is not None:
        qs = qs.filter(seq__gt=after_seq)
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    if after_seq is None and before_seq is not None:
        rows = list(qs.order_by("-seq")[: limit + 1])
        has_more = len(rows) > limit
        return list(reversed(rows[:limit])), has_more
    if after_seq is None and before_seq is None:
        rows = list(qs.order_by("-seq")[: limit + 1])  # the latest page
        has_more = len(rows) > limit
        return list(reversed(rows[:limit])), has_more
    rows = list(qs.order_by("seq")[: limit + 1])
    return rows[:limit], len(rows) > limit


def message_get_for_member(*, user: User, message_id: int) -> Message:
    message = Message.objects.select_related("conversation").filter(pk=message_id).first()
    if message is None:
        raise NotFound("No such message.", code="message_not_found")
    membership = Membership.objects.filter(
        conversation_id=message.conversation_id, user=user, left_at__isnull=True
    ).first()
    if membership is None:
        raise NotFound("No such message.", code="message_not_found")
    return message


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
    if event.kind in v.DATA_EVENT_KINDS:  # receipt, identity.changed, device.added
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


def event_frame(
    kind: str, message: Message, number: int, *, encrypted: bool = False, ciphertext: bytes | None = None
) -> dict[str, Any]:
    """message.new / message.updated carry the message; member.* and group.updated carry their
    system message (with its seq) plus its payload at the top level of ``data``."""
    data: dict[str, Any] = {"message": message_data(message, encrypted=encrypted, ciphertext=ciphertext)}
    if kind not in ("message.new", "message.updated") and message.system:
        data = {"conversation_id": message.conversation_id, **message.system, **data}
    return {"type": kind, "data": data, "event": number}


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
    return message is None or message.seq > plan.bounds.get(event.conversation_id, 0)


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


# --- Attachments ------------------------------------------------------------------------------
def attachment_get_for_download(*, user_id: int, attachment_id: int) -> Attachment:
    """The uploader before it is sent; afterwards only active members who may see its message."""
    attachment = (
        Attachment.objects.select_related("message", "message__conversation")
        .filter(pk=attachment_id, deleted_at__isnull=True)
        .first()
    )
    missing = NotFound("No such attachment.", code="attachment_not_found")
    if attachment is None:
        raise missing
    message = attachment.message
    if message is None:
        if attachment.uploader_id == user_id:
            return attachment
        # A group's avatar: its active members.
        if not Membership.objects.filter(
            conversation__avatar_id=attachment.pk, user_id=user_id, left_at__isnull=True
        ).exists():
            raise missing
        return attachment
    if message.deleted_at is not None:
        raise missing
    membership = Membership.objects.filter(
        conversation_id=message.conversation_id, user_id=user_id, left_at__isnull=True
    ).first()
    if membership is None:
        raise missing
    lower, _upper = visible_seq_range(membership)
    if message.seq <= lower:
        raise missing
    return attachment


def _content_disposition(attachment: Attachment) -> str:
    from urllib.parse import quote

    kind = "inline" if attachment.category in ("image", "video", "audio") else "attachment"
    return f"{kind}; filename*=UTF-8''{quote(attachment.name)}"


def attachment_link(*, user_id: int, attachment_id: int, build_url: Any) -> dict[str, Any]:
    """A short-lived download link: a presigned storage URL, or our own signed, access-checked
    stream (``build_url(path)`` makes it absolute). Uploads not ``ready`` get no link (``url``
    null): their stored bytes are the uploaded ones, never served."""
    from datetime import timedelta

    from django.conf import settings
    from django.core import signing
    from django.core.files.storage import default_storage
    from django.urls import reverse
    from django.utils import timezone

    attachment = attachment_get_for_download(user_id=user_id, attachment_id=attachment_id)
    if attachment.state != Attachment.State.READY:  # only its uploader sees it (never attached)
        return {**attachment_state_data(attachment), "url": None, "expires_at": None, "thumbnail_url": None}
    ttl = int(settings.ATTACHMENT_URL_TTL_SECONDS)
    expires_at = timezone.now() + timedelta(seconds=ttl)

    def url_for(variant: str, name: str) -> str:
        if hasattr(default_storage, "bucket_name"):
            parameters = {
                "ResponseContentType": "image/jpeg" if variant == "thumb" else attachment.content_type
            }
            if variant == "file":
                parameters["ResponseContentDisposition"] = _content_disposition(attachment)
            return str(default_storage.url(name, parameters=parameters, expire=ttl))  # type: ignore[call-arg]
        token = signing.dumps({"a": attachment.pk, "u": user_id, "v": variant}, salt=ATTACHMENT_SIGNING_SALT)
        return str(build_url(reverse("attachment-content", args=[attachment.pk]) + f"?token={token}"))

    data = {
        **attachment_state_data(attachment),
        "url": url_for("file", str(attachment.file.name)),
        "expires_at": expires_at.isoformat(),
    }
    data["thumbnail_url"] = url_for("thumb", str(attachment.thumbnail.name)) if attachment.thumbnail else None
    return data


ATTACHMENT_SIGNING_SALT = "healthchat.attachment.content"


def attachment_from_token(*, attachment_id: int, token: str) -> tuple[Attachment, str, int]:
    """Check a signed content link, then the holder's access again (it may have ended).
    Returns (attachment, variant, the holder's user id)."""
    from django.conf import settings
    from django.core import signing

    try:
        payload = signing.loads(
            token, salt=ATTACHMENT_SIGNING_SALT, max_age=int(settings.ATTACHMENT_URL_TTL_SECONDS)
        )
    except signing.SignatureExpired as exc:
        raise ApplicationError("link_expired", "This download link has expired.", status=403) from exc
    except signing.BadSignature as exc:
        raise ApplicationError("invalid_link", "This download link is not valid.", status=403) from exc
    if payload.get("a") != attachment_id or payload.get("v") not in ("file", "thumb"):
        raise ApplicationError("invalid_link", "This download link is not valid.", status=403)
    holder_id = int(payload["u"])
    attachment = attachment_get_for_download(user_id=holder_id, attachment_id=attachment_id)
    if attachment.state != Attachment.State.READY:  # links are only made for ready files
        raise ApplicationError("attachment_processing", "The attachment is not ready.", status=409)
    if payload["v"] == "thumb" and not attachment.thumbnail:
        raise NotFound("No thumbnail.", code="attachment_not_found")
    return attachment, str(payload["v"]), holder_id


def content_disposition(attachment: Attachment) -> str:
    return _content_disposition(attachment)
