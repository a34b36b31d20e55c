"""Push actions: who gets a push, when, and with what text; the outbox that makes it reliable.

Flow for a new message (``PUSH_OUTBOX_HOOK``, messaging's written hook, run by every writer):

1. One ``PushDelivery`` row per device of every recipient (never the sender's devices, never a
   member who muted the conversation) is written in the message's own transaction, due at the end of the
   grace period. Only then is a Celery task queued (on commit), with the row ids and a
   countdown of ``PUSH_GRACE_SECONDS``. If the broker is down the rows stay ``pending`` and
   beat's ``push_requeue`` queues them later.
2. The task (``push_deliver``) claims the rows still open (``pending``, or ``sending`` whose
   lease ran out because a worker died mid-send), decides again under the row locks (the
   message may be deleted, the member muted or gone, the message already delivered), sends
   the rest with one ``send_each`` per batch, and records every outcome on its row.

"Received on a socket" is the membership's ``delivered_seq``: the app acknowledges every
``message.new`` it gets over its socket with ``message.delivered`` (``receipt_mark``; ``read``
implies delivered). After the grace period the task pushes only if the recipient's
``delivered_seq`` is still below the message's ``seq``. The acknowledgement is per user: once
any of the user's apps has the message, none of their devices gets a push for it (an app that
acknowledges while in the background shows its own local notification).

Privacy: by default the notification names the sender and nothing else; previews (the text)
only with the user's ``previews`` preference and never in an end-to-end encrypted conversation.
Data carries ids only, so the app can ``sync``.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts.models import Device, User
from core import metrics
from core.errors import ApplicationError
from messaging import selectors as messaging_selectors
from messaging.models import Conversation, Membership, Message
from messaging.send_rules import BatchStatement, Written, WrittenHook, registry

from . import fcm, selectors
from .models import PushDelivery, PushPreference

logger = logging.getLogger("healthchat.push")

MUTED_FOREVER = selectors.MUTED_FOREVER
PREVIEW_MAX_CHARS = 200
TASK_CHUNK = fcm.BATCH_SIZE
# ``reason`` of a row claimed again after its worker died mid-send (kept when it is then sent).
LEASE_EXPIRED = "lease_expired"
Kind = PushDelivery.Kind
State = PushDelivery.State
PUSHABLE_PLATFORMS = (Device.Platform.ANDROID, Device.Platform.IOS)


# --- Preferences and mute ---------------------------------------------------------------------
def preference_update(
    *, user: User, previews: bool, mentions_when_muted: bool | None = None
) -> PushPreference:
    """``mentions_when_muted`` left out (``None``): unchanged (a client that knows only
    ``previews`` never turns it back on)."""
    values: dict[str, bool] = {"previews": bool(previews)}
    if mentions_when_muted is not None:
        values["mentions_when_muted"] = bool(mentions_when_muted)
    preference, _ = PushPreference.objects.update_or_create(user=user, defaults=values)
    return preference


def conversation_mute(*, user: User, conversation_id: int, until: dt.datetime | None = None) -> Membership:
    """Mute pushes for a conversation until ``until`` (or until unmuted)."""
    membership = messaging_selectors.membership_get(user=user, conversation_id=conversation_id)
    value = until or MUTED_FOREVER
    if timezone.is_naive(value):
        raise ApplicationError("invalid_mute_until", "until needs a time zone.", fields={"until": ["naive"]})
    if value <= timezone.now():
        raise ApplicationError(
            "invalid_mute_until", "until must be in the future.", fields={"until": ["in the past"]}
        )
    Membership.objects.filter(pk=membership.pk).update(muted_until=value)
    membership.muted_until = value
    return membership


def conversation_unmute(*, user: User, conversation_id: int) -> Membership:
    membership = messaging_selectors.membership_get(user=user, conversation_id=conversation_id)
    Membership.objects.filter(pk=membership.pk).update(muted_until=None)
    membership.muted_until = None
    return membership


# --- Enqueue: outbox rows first, then the task on commit ---------------------------------------
def _chunks(ids: list[int], size: int = TASK_CHUNK) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _queue(ids: list[int], countdown: float) -> None:
    """Queue ``push_deliver`` for ``ids``; a broker failure is logged (beat re-queues the rows)."""
    from . import tasks

    for chunk in _chunks(ids):
        try:
            tasks.push_deliver.apply_async(args=(chunk,), countdown=max(0.0, countdown))
        except Exception:
            # Broker down (or, when eager, the task itself failed): the rows stay open in
            # PostgreSQL and beat's push_requeue queues them again.
            logger.warning(
                "push task for %d deliveries not queued or not run; beat re-queues them",
                len(chunk),
                exc_info=True,
            )


def _write_outbox(rows: list[PushDelivery], lookup: Q, countdown: float) -> list[int]:
    """Insert the rows (duplicates ignored), queue the open ones on commit; returns their ids."""
    if not rows:
        return []
    with transaction.atomic():
        PushDelivery.objects.bulk_create(rows, ignore_conflicts=True)
        ids = list(
            PushDelivery.objects.filter(
                lookup, state=State.PENDING, device_id__in=[r.device_id for r in rows]
            )
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        transaction.on_commit(lambda: _queue(ids, countdown))
    return ids


def _mentioned(message_id: int) -> set[int]:
    """The members a message mentions whose mentions pass a mute (their preference)."""
    mentions = Message.objects.filter(pk=message_id).values_list("mentions", flat=True).first()
    users = {int(e["user_id"]) for e in mentions or ()}
    return users - selectors.mentions_muted_off(user_ids=users)


def _target_devices(
    user_ids: Iterable[int], *, not_muted_in: int | None = None, mentioned: set[int] | None = None
) -> list[int]:
    devices = Device.objects.filter(user_id__in=list(user_ids))
    if not_muted_in is not None:
        muted = Membership.objects.filter(
            conversation_id=not_muted_in, user_id=OuterRef("user_id"), muted_until__gt=timezone.now()
        ).exclude(user_id__in=sorted(mentioned or ()))
        devices = devices.exclude(Exists(muted))
    return list(
        devices.filter(
            Q(fcm_token__isnull=False)
            | Q(installation_id__isnull=False, superseded_at__isnull=True, platform__in=PUSHABLE_PLATFORMS)
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )


_ENQUEUE_MESSAGE_SQL = """
INSERT INTO notifications_pushdelivery
    (kind, device_id, message_id, event, ref, conversation_id, state, reason, attempts,
     due_at, claimed_at, sent_at, fcm_message_id, created_at)
SELECT 'message', d.id, %(message)s, 0, '', %(conversation)s, 'pending', '', 0,
       %(due)s, NULL, NULL, '', %(now)s
FROM accounts_device d
WHERE d.user_id = ANY(%(users)s)
  AND (d.fcm_token IS NOT NULL OR (d.installation_id IS NOT NULL AND d.superseded_at IS NULL
      AND d.platform = ANY(%(platforms)s)))
  AND NOT EXISTS (
      SELECT 1 FROM messaging_membership mb
      WHERE mb.conversation_id = %(conversation)s AND mb.user_id = d.user_id AND mb.muted_until > %(now)s
        -- a mention of the member passes the mute, unless their preference says otherwise
        AND NOT (EXISTS (SELECT 1 FROM messaging_message mm WHERE mm.id = %(message)s
                         AND mm.mentions @> jsonb_build_array(jsonb_build_object('user_id', d.user_id)))
                 AND NOT EXISTS (SELECT 1 FROM notifications_pushpreference pp
                                 WHERE pp.user_id = d.user_id AND NOT pp.mentions_when_muted))
  )
ORDER BY d.id
ON CONFLICT DO NOTHING
RETURNING id
"""


def push_enqueue_message(
    *, message_id: int, conversation_id: int, sender_id: int, recipient_ids: list[int]
) -> list[int]:
    """Record a push per recipient device for a new message, to be decided after the grace.

    Runs on every send (after commit): on PostgreSQL one set-based INSERT ... SELECT finds the
    devices and writes their outbox rows; a Celery task is queued only when there is a device.
    """
    grace = float(settings.PUSH_GRACE_SECONDS)
    now = timezone.now()
    due = now + dt.timedelta(seconds=grace)
    users = sorted(set(recipient_ids) - {sender_id})
    if not users:
        return []
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _ENQUEUE_MESSAGE_SQL,
                {
                    "message": message_id,
                    "conversation": conversation_id,
                    "due": due,
                    "now": now,
                    "users": users,
                    "platforms": [str(p) for p in PUSHABLE_PLATFORMS],
                },
            )
            ids = sorted(row[0] for row in cursor.fetchall())
            if ids:
                transaction.on_commit(lambda: _queue(ids, grace))
        return ids
    rows = [
        PushDelivery(
            kind=Kind.MESSAGE,
            message_id=message_id,
            conversation_id=conversation_id,
            device_id=device_id,
            due_at=due,
        )
        for device_id in _target_devices(
            users, not_muted_in=conversation_id, mentioned=_mentioned(message_id)
        )
    ]
    return _write_outbox(rows, Q(kind=Kind.MESSAGE, message_id=message_id, event=0), grace)


_ENQUEUE_BATCH_SQL = """
INSERT INTO notifications_pushdelivery
    (kind, device_id, message_id, event, ref, conversation_id, state, reason, attempts,
     due_at, claimed_at, sent_at, fcm_message_id, created_at)
SELECT 'message', d.id, m.message_id, 0, '', m.conversation_id, 'pending', '', 0,
       %(due)s, NULL, NULL, '', %(now)s
FROM unnest(%(messages)s::bigint[], %(conversations)s::bigint[], %(senders)s::bigint[])
     AS m(message_id, conversation_id, sender_id)
JOIN messaging_membership mb
  ON mb.conversation_id = m.conversation_id AND mb.left_at IS NULL AND mb.user_id <> m.sender_id
 AND (mb.muted_until IS NULL OR mb.muted_until <= %(now)s
      -- a mention of the member passes the mute, unless their preference says otherwise
      OR (EXISTS (SELECT 1 FROM messaging_message mm WHERE mm.id = m.message_id AND mm.mentions IS NOT NULL
                  AND mm.mentions @> jsonb_build_array(jsonb_build_object('user_id', mb.user_id)))
          AND NOT EXISTS (SELECT 1 FROM notifications_pushpreference pp
                          WHERE pp.user_id = mb.user_id AND NOT pp.mentions_when_muted)))
JOIN accounts_device d
  ON d.user_id = mb.user_id
 AND (d.fcm_token IS NOT NULL OR (d.installation_id IS NOT NULL AND d.superseded_at IS NULL
      AND d.platform = ANY(%(platforms)s)))
ORDER BY m.message_id, d.id
ON CONFLICT DO NOTHING
RETURNING id
"""


def push_enqueue_statement(written: Sequence[Written]) -> BatchStatement | None:
    """The batch hook below as one PostgreSQL statement: the outbox rows of the batch's new
    messages; its answer (read after the COMMIT) queues one push task when any device is due."""
    if not written:
        return None
    grace = float(settings.PUSH_GRACE_SECONDS)
    now = timezone.now()

    def queue(rows: list[tuple[Any, ...]]) -> None:
        ids = sorted(row[0] for row in rows)
        if ids:
            _queue(ids, grace)

    return BatchStatement(
        _ENQUEUE_BATCH_SQL,
        {
            "messages": [w[0] for w in written],
            "conversations": [w[1] for w in written],
            "senders": [w[2] for w in written],
            "due": now + dt.timedelta(seconds=grace),
            "now": now,
            "platforms": [str(p) for p in PUSHABLE_PLATFORMS],
        },
        queue,
    )


def push_enqueue_orm(written: Sequence[Written]) -> None:
    """The outbox hook on databases other than PostgreSQL: each message's rows through the ORM
    (each queues its own task)."""
    for message_id, conversation_id, sender_id in written:
        members = messaging_selectors.active_member_ids(conversation_id=conversation_id)
        push_enqueue_message(
            message_id=message_id,
            conversation_id=conversation_id,
            sender_id=sender_id,
            recipient_ids=members,
        )


# Messaging's written hook (registered by ``NotificationsConfig.ready``): the outbox rows of a
# whole batch of new messages, written in the batch's own transaction (so a push is never lost
# between the commit and the hook) by one statement; one task is queued after the commit when
# any device is due a push. Both batch writers run the statement; in the batch's pipeline the
# statement and the COMMIT share one round trip.
PUSH_OUTBOX_HOOK = WrittenHook(
    name="notifications.push_outbox", statement=push_enqueue_statement, orm=push_enqueue_orm
)


def push_enqueue_batch(written: Sequence[Written]) -> None:
    """The outbox hook alone, in the caller's transaction (``registry.run_hook``)."""
    registry.run_hook(PUSH_OUTBOX_HOOK, written)


def push_enqueue_message_update(*, message_id: int, conversation_id: int, event: int) -> list[int]:
    """A data-only push to the devices that were notified of the message: withdraw or refresh."""
    notified = (
        PushDelivery.objects.filter(
            kind=Kind.MESSAGE, message_id=message_id, state__in=[State.SENT, State.SENDING]
        )
        .order_by("device_id")
        .values_list("device_id", flat=True)
    )
    now = timezone.now()
    rows = [
        PushDelivery(
            kind=Kind.MESSAGE_UPDATED,
            message_id=message_id,
            event=event,
            conversation_id=conversation_id,
            device_id=device_id,
            due_at=now,
        )
        for device_id in notified
    ]
    return _write_outbox(rows, Q(kind=Kind.MESSAGE_UPDATED, message_id=message_id, event=event), 0)


def push_incoming_call(
    *, call_id: str, conversation_id: int, caller_id: int, callee_ids: list[int]
) -> list[int]:
    """Ring the callees' devices: a high-priority data push, short TTL, no grace, mute ignored.

    For the calls app: call inside or outside a transaction; the task is queued on commit.
    """
    ref = _valid_ref(call_id)
    now = timezone.now()
    rows = [
        PushDelivery(kind=Kind.CALL, ref=ref, conversation_id=conversation_id, device_id=d, due_at=now)
        for d in _target_devices(set(callee_ids) - {caller_id})
    ]
    return _write_outbox(rows, Q(kind=Kind.CALL, ref=ref, message__isnull=True), 0)


def push_call_cancelled(*, call_id: str) -> list[int]:
    """Stop the ringing on devices that got the call push (answered elsewhere, hung up, timed out)."""
    ref = _valid_ref(call_id)
    rung = PushDelivery.objects.filter(
        kind=Kind.CALL, ref=ref, state__in=[State.SENT, State.SENDING]
    ).values_list("device_id", "conversation_id")
    now = timezone.now()
    rows = [
        PushDelivery(kind=Kind.CALL_CANCELLED, ref=ref, conversation_id=cid, device_id=d, due_at=now)
        for d, cid in rung
    ]
    return _write_outbox(rows, Q(kind=Kind.CALL_CANCELLED, ref=ref, message__isnull=True), 0)


APPOINTMENT_TEXTS: dict[str, tuple[str, str]] = {
    "appointment.reminder": ("Appointment reminder", "You have an appointment at {time} UTC."),
    "appointment.apology": (
        "Your appointment did not take place",
        "Your doctor could not attend. You have been refunded in full.",
    ),
    "appointment.missed": (
        "Missed appointment",
        "You did not check in for your appointment at {time} UTC. The no-show policy applies.",
    ),
}
# The push ref's prefix of each kind (``appointment_push_ref``).
_APPOINTMENT_PREFIX = {"appointment.reminder": "r", "appointment.apology": "a", "appointment.missed": "m"}


def push_appointment(*, ref: str, user_id: int) -> list[int]:
    """One push per device of ``user_id`` about an appointment, at most once per ``ref`` and
    device (the outbox's unique index); ``ref`` from ``appointment_push_ref``. Call it inside the
    transaction that marks the reminder done, so the outbox rows and that mark commit together.
    No medical content: a fixed text, the appointment's id and time."""
    ref = _valid_ref(ref)
    now = timezone.now()
    rows = [
        PushDelivery(kind=Kind.APPOINTMENT, ref=ref, device_id=d, due_at=now)
        for d in _target_devices([user_id])
    ]
    return _write_outbox(rows, Q(kind=Kind.APPOINTMENT, ref=ref, message__isnull=True), 0)


def appointment_push_ref(*, kind: str, appointment_id: int, starts_at: dt.datetime, slot: str) -> str:
    """``<r|a>:<appointment id>:<start, epoch seconds>:<slot>`` (at most 64 characters): ``r`` a
    reminder (``slot`` its offset in minutes), ``a`` the apology for a doctor's no-show, ``m`` the
    notice of a patient's no-show."""
    if kind not in APPOINTMENT_TEXTS:
        raise ValueError(kind)
    return f"{_APPOINTMENT_PREFIX[kind]}:{appointment_id}:{int(starts_at.timestamp())}:{slot}"


SCHEDULED_FAILED_TEXT = (
    "A scheduled message was not sent",
    "Open healthchat to see why and write again.",
)


def push_scheduled_failed(*, scheduled_id: int, user_id: int, code: str) -> list[int]:
    """Tell the author's phones that a scheduled message was refused at send time: a fixed text,
    the scheduled message's id and the refusal's code (never the message's text). Once per
    scheduled message and device (the outbox's unique index); queued on commit."""
    ref = f"{int(scheduled_id)}:{code}"[:64]
    now = timezone.now()
    rows = [
        PushDelivery(kind=Kind.SCHEDULED_FAILED, ref=ref, device_id=d, due_at=now)
        for d in _target_devices([user_id])
    ]
    return _write_outbox(rows, Q(kind=Kind.SCHEDULED_FAILED, ref=ref, message__isnull=True), 0)


def push_test_create(*, user: User) -> list[int]:
    """Outbox rows for a test push to each of ``user``'s devices (the operator command)."""
    ref = uuid.uuid4().hex
    now = timezone.now()
    rows = [
        PushDelivery(kind=Kind.TEST, ref=ref, device_id=d, due_at=now) for d in _target_devices([user.pk])
    ]
    if not rows:
        return []
    with transaction.atomic():
        PushDelivery.objects.bulk_create(rows)
    return list(
        PushDelivery.objects.filter(kind=Kind.TEST, ref=ref).order_by("pk").values_list("pk", flat=True)
    )


def _valid_ref(value: str) -> str:
    ref = str(value).strip()
    if not ref or len(ref) > 64:
        raise ApplicationError("invalid_call_id", "A call id is 1 to 64 characters.")
    return ref


# --- Deliver: claim, decide, send, record --------------------------------------------------------
@dataclass
class DeliveryReport:
    sent: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    retrying: list[int] = field(default_factory=list)
    # Seconds until the task should run again for rows still open (not yet due, or backing off).
    retry_in: float | None = None

    def wait(self, seconds: float) -> None:
        self.retry_in = seconds if self.retry_in is None else min(self.retry_in, seconds)


@dataclass(frozen=True)
class _Context:
    """What deciding and rendering a batch needs, loaded once per batch."""

    previews: dict[int, bool]
    unread: dict[int, int]


def push_deliver(*, delivery_ids: list[int], ignore_due: bool = False) -> DeliveryReport:
    """Process outbox rows: idempotent (rows already sent or decided are left alone)."""
    report = DeliveryReport()
    claimed = _claim(delivery_ids, report, ignore_due=ignore_due)
    if not claimed:
        return report
    context = _context(claimed)
    pushes = [_render(row, context) for row in claimed]
    results = fcm.send_batch(pushes)
    _record(claimed, pushes, results, report)
    metrics.push_report(report, results)
    return report


def _open_rows(now: dt.datetime) -> Q:
    lease = dt.timedelta(seconds=float(settings.PUSH_SEND_LEASE_SECONDS))
    return Q(state=State.PENDING) | Q(state=State.SENDING, claimed_at__lt=now - lease)


def _claim(ids: list[int], report: DeliveryReport, *, ignore_due: bool) -> list[PushDelivery]:
    """Lock the open rows, skip what policy refuses, mark the rest ``sending`` (committed)."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            PushDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(_open_rows(now), pk__in=ids)
            .select_related("device", "message", "message__sender", "conversation")
            .order_by("pk")
        )
        due = []
        for row in rows:
            if not ignore_due and row.due_at > now:
                report.wait((row.due_at - now).total_seconds())
            else:
                due.append(row)
        memberships = _memberships(due)
        quiet = _mentions_muted_off(due)
        claim: list[PushDelivery] = []
        skips: dict[str, list[int]] = {}
        for row in due:
            reason = _refusal(row, memberships, now, quiet)
            if reason:
                skips.setdefault(reason, []).append(row.pk)
                report.skipped[row.pk] = reason
            else:
                claim.append(row)
        for reason, skipped_ids in skips.items():
            PushDelivery.objects.filter(pk__in=skipped_ids).update(
                state=State.SKIPPED, reason=reason, claimed_at=None
            )
        if claim:
            for row in claim:
                if row.state == State.SENDING:
                    # Its worker died mid-send: FCM may have the push already. Said on the row.
                    row.reason = LEASE_EXPIRED
                row.state, row.claimed_at, row.attempts = State.SENDING, now, row.attempts + 1
            PushDelivery.objects.bulk_update(claim, ["state", "claimed_at", "attempts", "reason"])
    return claim


def _memberships(rows: list[PushDelivery]) -> dict[tuple[int, int], Membership]:
    pairs = {
        (r.message.conversation_id, r.device.user_id)
        for r in rows
        if r.kind == Kind.MESSAGE and r.message is not None
    }
    if not pairs:
        return {}
    conversation_ids = {c for c, _ in pairs}
    user_ids = {u for _, u in pairs}
    found = Membership.objects.filter(conversation_id__in=conversation_ids, user_id__in=user_ids)
    return {(m.conversation_id, m.user_id): m for m in found}


def _mentions_muted_off(rows: list[PushDelivery]) -> set[int]:
    """Of the users mentioned by the rows' messages, those whose mentions a mute silences (one
    query, none when no message mentions anyone)."""
    mentioned = {
        int(e["user_id"])
        for r in rows
        if r.kind == Kind.MESSAGE and r.message is not None
        for e in r.message.mentions or ()
    }
    return selectors.mentions_muted_off(user_ids=mentioned) if mentioned else set()


def _mention_passes_mute(message: Message, user_id: int, quiet: set[int]) -> bool:
    return user_id not in quiet and any(int(e["user_id"]) == user_id for e in message.mentions or ())


def _refusal(
    row: PushDelivery,
    memberships: dict[tuple[int, int], Membership],
    now: dt.datetime,
    quiet: set[int] = frozenset(),  # type: ignore[assignment]
) -> str:
    """Why this row must not be sent now ('' when it may)."""
    device = row.device
    if not device.fcm_token and not (
        device.installation_id and device.superseded_at is None and device.platform in PUSHABLE_PLATFORMS
    ):
        return "no_token"
    if row.kind == Kind.CALL:
        age = (now - row.created_at).total_seconds()
        return "expired" if age > settings.PUSH_CALL_TTL_SECONDS else ""
    if row.kind != Kind.MESSAGE:
        return ""
    message = row.message
    assert message is not None
    if message.deleted_at is not None:
        return "deleted"
    if device.user_id == message.sender_id:
        return "sender"
    membership = memberships.get((message.conversation_id, device.user_id))
    if membership is None or membership.left_at is not None:
        return "not_member"
    if (
        membership.muted_until is not None
        and membership.muted_until > now
        and not _mention_passes_mute(message, device.user_id, quiet)
    ):
        return "muted"
    if membership.delivered_seq >= message.seq:
        return "delivered"
    return ""


def _context(rows: list[PushDelivery]) -> _Context:
    message_users = {r.device.user_id for r in rows if r.kind == Kind.MESSAGE}
    return _Context(
        previews=selectors.previews_enabled(user_ids=message_users),
        unread=selectors.unread_counts(user_ids=message_users),
    )


# --- Rendering: what each push says ---------------------------------------------------------------
def sender_label(user: User) -> str:
    return user.display_name.strip() or "Someone"


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_MAX_CHARS else text[: PREVIEW_MAX_CHARS - 1] + "…"


def _target(device: Device) -> dict[str, Any]:
    """Where FCM sends it: the registration token, else the Firebase installation id."""
    if device.fcm_token:
        return {"token": device.fcm_token, "fid": None}
    return {"token": None, "fid": device.installation_id}


def _render_message(row: PushDelivery, context: _Context) -> fcm.Push:
    message = row.message
    assert message is not None
    conversation: Conversation = row.conversation or message.conversation
    user_id = row.device.user_id
    name = sender_label(message.sender)
    badge = context.unread.get(user_id, 0)
    show_text = (
        context.previews.get(user_id, settings.PUSH_PREVIEWS_DEFAULT)
        and not conversation.e2ee
        and message.kind == Message.Kind.TEXT
        and bool(message.body)
    )
    body: str | None = None
    if message.kind == Message.Kind.SYSTEM and (message.system or {}).get("event") == "call":
        title = f"Missed call from {name}"  # the calls app pushes only its missed-call entries
    elif show_text:
        title = name if conversation.kind == Conversation.Kind.DIRECT else f"{name} in {conversation.name}"
        body = _preview(message.body)
    else:
        title, body = f"New message from {name}", None
    key = f"conversation-{message.conversation_id}"
    return fcm.Push(
        kind=row.kind,
        **_target(row.device),
        title=title,
        body=body,
        data={
            "type": "message.new",
            "conversation_id": str(message.conversation_id),
            "message_id": str(message.pk),
            "seq": str(message.seq),
            "badge": str(badge),
        },
        collapse_key=key,
        tag=key,
        priority="normal",
        ttl_seconds=settings.PUSH_TTL_SECONDS,
        badge=badge,
        channel_id="messages",
    )


def _render_update(row: PushDelivery, context: _Context) -> fcm.Push:
    message = row.message
    assert message is not None
    return fcm.Push(
        kind=row.kind,
        **_target(row.device),
        data={
            "type": "message.updated",
            "conversation_id": str(message.conversation_id),
            "message_id": str(message.pk),
            "seq": str(message.seq),
            "event": str(row.event),
            "deleted": "true" if message.deleted_at is not None else "false",
        },
        # Not the conversation's key: it must not replace a notification still waiting in FCM.
        collapse_key=f"message-{message.pk}",
        priority="normal",
        ttl_seconds=settings.PUSH_TTL_SECONDS,
    )


def _render_call(row: PushDelivery, context: _Context) -> fcm.Push:
    data = {"type": "call.incoming" if row.kind == Kind.CALL else "call.cancelled", "call_id": row.ref}
    if row.conversation_id is not None:
        data["conversation_id"] = str(row.conversation_id)
    return fcm.Push(
        kind=row.kind,
        **_target(row.device),
        data=data,
        # A cancel replaces a ring that is still waiting in FCM for an offline device.
        collapse_key=f"call-{row.ref}",
        priority="high",
        ttl_seconds=settings.PUSH_CALL_TTL_SECONDS,
    )


def _render_test(row: PushDelivery, context: _Context) -> fcm.Push:
    return fcm.Push(
        kind=row.kind,
        **_target(row.device),
        title="healthchat test notification",
        body="Push notifications reach this device.",
        data={"type": "test", "ref": row.ref},
        collapse_key="test",
        tag="test",
        priority="normal",
        ttl_seconds=300,
        channel_id="messages",
    )


def _render_appointment(row: PushDelivery, context: _Context) -> fcm.Push:
    prefix, appointment_id, epoch, _slot = row.ref.split(":", 3)
    kind = next(k for k, p in _APPOINTMENT_PREFIX.items() if p == prefix)
    starts_at = dt.datetime.fromtimestamp(int(epoch), tz=dt.UTC)
    title, body = APPOINTMENT_TEXTS[kind]
    return fcm.Push(
        kind=row.kind,
        **_target(row.device),
        title=title,
        body=body.format(time=starts_at.strftime("%H:%M")),
        data={"type": kind, "appointment_id": appointment_id, "starts_at": starts_at.isoformat()},
        collapse_key=f"appointment-{appointment_id}",
        tag=f"appointment-{appointment_id}",
        priority="high",
        ttl_seconds=settings.PUSH_TTL_SECONDS,
        channel_id="messages",
    )


def _render_scheduled_failed(row: PushDelivery, context: _Context) -> fcm.Push:
    scheduled_id, _sep, code = row.ref.partition(":")
    title, body = SCHEDULED_FAILED_TEXT
    return fcm.Push(
        kind=row.kind,
        **_target(row.device),
        title=title,
        body=body,
        data={"type": "scheduled_message.failed", "scheduled_message_id": scheduled_id, "failure_code": code},
        collapse_key=f"scheduled-{scheduled_id}",
        tag=f"scheduled-{scheduled_id}",
        priority="normal",
        ttl_seconds=settings.PUSH_TTL_SECONDS,
        channel_id="messages",
    )


_RENDERERS: dict[str, Callable[[PushDelivery, _Context], fcm.Push]] = {
    Kind.APPOINTMENT: _render_appointment,
    Kind.MESSAGE: _render_message,
    Kind.MESSAGE_UPDATED: _render_update,
    Kind.CALL: _render_call,
    Kind.CALL_CANCELLED: _render_call,
    Kind.TEST: _render_test,
    Kind.SCHEDULED_FAILED: _render_scheduled_failed,
}


def _render(row: PushDelivery, context: _Context) -> fcm.Push:
    return _RENDERERS[row.kind](row, context)


# --- Recording outcomes -----------------------------------------------------------------------------
def _backoff(attempts: int) -> float:
    base = float(settings.PUSH_RETRY_BACKOFF_SECONDS)
    delay = min(base * 2 ** max(0, attempts - 1), 600.0)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security


def _record(
    rows: list[PushDelivery], pushes: list[fcm.Push], results: list[fcm.Result], report: DeliveryReport
) -> None:
    now = timezone.now()
    prune: list[tuple[PushDelivery, fcm.Push, fcm.Result]] = []
    for row, push, result in zip(rows, pushes, results, strict=True):
        row.claimed_at = None
        if result.ok:
            row.state, row.sent_at, row.fcm_message_id, row.reason = (
                State.SENT,
                now,
                result.message_id[:200],
                # sent, and perhaps a second time: an earlier attempt's outcome was never recorded
                LEASE_EXPIRED if row.reason == LEASE_EXPIRED else "",
            )
            report.sent.append(row.pk)
        elif result.outcome in (fcm.Outcome.UNREGISTERED, fcm.Outcome.INVALID_TOKEN):
            row.state, row.reason = State.FAILED, result.code[:32]
            report.failed[row.pk] = row.reason
            prune.append((row, push, result))
        elif result.outcome is fcm.Outcome.TRANSIENT and row.attempts < settings.PUSH_MAX_ATTEMPTS:
            delay = _backoff(row.attempts)
            row.state, row.reason, row.due_at = (
                State.PENDING,
                result.code[:32],
                now + dt.timedelta(seconds=delay),
            )
            report.retrying.append(row.pk)
            report.wait(delay)
            logger.warning(
                "push %s to device %s failed (%s), attempt %d: retrying in %.0f s",
                row.pk,
                row.device_id,
                result.code,
                row.attempts,
                delay,
            )
        else:
            gave_up = result.outcome is fcm.Outcome.TRANSIENT
            row.state, row.reason = State.FAILED, ("gave_up:" if gave_up else "") + result.code
            row.reason = row.reason[:32]
            report.failed[row.pk] = row.reason
            logger.error(
                "push %s (%s) to device %s %s: %s after %d attempt(s)",
                row.pk,
                row.kind,
                row.device_id,
                "given up" if gave_up else "refused",
                result.code,
                row.attempts,
            )
    with transaction.atomic():
        PushDelivery.objects.bulk_update(
            rows, ["state", "sent_at", "fcm_message_id", "reason", "due_at", "claimed_at"]
        )
        for row, push, result in prune:
            _prune_target(row.device, push, result)


def _prune_target(device: Device, push: fcm.Push, result: fcm.Result) -> None:
    """Forget a token FCM says is dead; the row goes when the token was all it had."""
    if push.token:
        gone = Device.objects.filter(pk=device.pk, fcm_token=push.token)
        deleted, _ = gone.filter(installation_id__isnull=True).delete()
        if not deleted:
            gone.update(fcm_token=None)
        logger.info("pruned push token of device %s (%s)", device.pk, result.code)
    elif result.outcome is fcm.Outcome.UNREGISTERED:
        # The Firebase installation itself no longer exists: the app was uninstalled.
        Device.objects.filter(pk=device.pk, installation_id=push.fid, fcm_token__isnull=True).delete()
        logger.info("removed device %s: its Firebase installation is unregistered", device.pk)


# --- Beat: re-queue what was never processed; forget old rows -----------------------------------
def push_requeue(*, older_than: float | None = None, limit: int = 5000) -> int:
    """Queue tasks for rows due long ago and still open (broker lost, worker died)."""
    now = timezone.now()
    age = float(settings.PUSH_REQUEUE_AFTER_SECONDS if older_than is None else older_than)
    stale = list(
        PushDelivery.objects.filter(_open_rows(now), due_at__lte=now - dt.timedelta(seconds=age))
        .order_by("kind", "message_id", "event", "ref", "pk")
        .values_list("pk", "kind", "message_id", "event", "ref")[:limit]
    )
    groups: dict[tuple[Any, ...], list[int]] = {}
    for pk, *key in stale:
        groups.setdefault(tuple(key), []).append(pk)
    for ids in groups.values():
        _queue(ids, 0)
    if stale:
        logger.info("re-queued %d push deliveries", len(stale))
    return len(stale)


def push_cleanup(*, days: int | None = None) -> int:
    """Delete finished outbox rows older than ``PUSH_RETENTION_DAYS``."""
    keep = settings.PUSH_RETENTION_DAYS if days is None else days
    cutoff = timezone.now() - dt.timedelta(days=keep)
    deleted, _ = (
        PushDelivery.objects.filter(created_at__lt=cutoff)
        .filter(state__in=[State.SENT, State.SKIPPED, State.FAILED])
        .delete()
    )
    return deleted
