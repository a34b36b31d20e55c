"""Reactions: a member adds or removes an emoji (from a bounded set) on a message it may read.

One ``Reaction`` row per (message, user, emoji) (a unique constraint); every change takes the
conversation's row lock (so concurrent adds of the same reaction are serialised: one row, each
caller answered with the same state), rewrites the message's summary (``Message.reactions``,
what history, sync and live frames carry, read without a query), logs ``reaction.added`` /
``reaction.removed`` in the conversation's event log (replayed by ``sync``) and, after the
commit, sends it to every device of the members who may read the message.

End-to-end encrypted conversations refuse them (``e2ee_reaction``): an emoji answering a
clinical message is content, which the server of such a conversation never holds
(docs/e2ee.md#reactions-and-mentions); clients send a reaction there as an encrypted message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from accounts.models import User
from core.errors import ApplicationError, NotFound
from messaging import reach, selectors
from messaging.models import Conversation, Event, Membership, Message, Reaction

from .contacts import check_not_blocked
from .counters import allocate, lock
from .events import fan_out_on_commit

# The reactions a client may send: common chat emoji and a few of care (fully qualified
# Unicode emoji, as the keyboards send them).
REACTION_EMOJI: tuple[str, ...] = (
    "👍",
    "👎",
    "❤️",
    "😂",
    "😮",
    "😢",
    "🙏",
    "👏",
    "🎉",
    "🔥",
    "✅",
    "❌",
    "👀",
    "💯",
    "🤔",
    "😊",
    "🙂",
    "👌",
    "💪",
    "😷",
    "🤒",
    "💊",
    "🩺",
    "❓",
)


def validate_emoji(value: Any) -> str:
    if not isinstance(value, str) or value not in REACTION_EMOJI:
        raise ApplicationError(
            "invalid_reaction",
            "emoji must be one of the supported reactions (docs/protocol.md#reactions).",
        )
    return value


@dataclass(frozen=True)
class ReactionChange:
    """What an add or remove did: the message's summary now, and whether anything changed
    (``False``: the reaction was already there, or already gone: idempotent)."""

    message_id: int
    conversation_id: int
    seq: int
    user_id: int
    emoji: str
    reactions: list[dict[str, Any]]
    changed: bool

    def data(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "seq": self.seq,
            "user_id": self.user_id,
            "emoji": self.emoji,
            "reactions": self.reactions,
            "changed": self.changed,
        }


def readable_message(*, user: User, message_id: int) -> tuple[Message, Membership]:
    """A message the caller, an active member, may read (within its visible range); 404
    ``message_not_found`` otherwise (non-members learn nothing)."""
    message = Message.objects.select_related("conversation").filter(pk=message_id).first()
    membership = (
        None
        if message is None
        else Membership.objects.filter(
            conversation_id=message.conversation_id, user=user, left_at__isnull=True
        ).first()
    )
    if message is None or membership is None or message.seq <= membership.visible_after_seq:
        raise NotFound("No such message.", code="message_not_found")
    return message, membership


def summary_of(rows: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """``[(emoji, user_id)]`` (first reacted first) as clients see them: per emoji, in the
    order it was first used, its count and who."""
    by_emoji: dict[str, list[int]] = {}
    for emoji, user_id in rows:
        by_emoji.setdefault(emoji, []).append(user_id)
    return [{"emoji": e, "count": len(users), "user_ids": users} for e, users in by_emoji.items()]


def refresh_summaries(message_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Rewrite the summary of these messages from their rows (under their conversations'
    locks, taken by the caller); returns it by message."""
    rows: dict[int, list[tuple[str, int]]] = {m: [] for m in message_ids}
    for message_id, emoji, user_id in (
        Reaction.objects.filter(message_id__in=message_ids)
        .order_by("created_at", "id")
        .values_list("message_id", "emoji", "user_id")
    ):
        rows[message_id].append((emoji, user_id))
    summaries = {m: summary_of(r) for m, r in rows.items()}
    for message_id, summary in summaries.items():
        Message.objects.filter(pk=message_id).update(reactions=summary or None)
    return summaries


def _check_may_react(user: User, message: Message) -> None:
    conversation: Conversation = message.conversation
    if conversation.e2ee:
        raise ApplicationError(
            "e2ee_reaction",
            "This conversation is end-to-end encrypted: send the reaction as an encrypted message.",
            status=422,
        )
    if message.kind != Message.Kind.TEXT:
        raise ApplicationError("reaction_not_allowed", "System messages take no reactions.", status=422)
    if message.deleted_at is not None:
        raise ApplicationError("message_deleted", "This message was deleted.", status=409)
    if conversation.kind == Conversation.Kind.DIRECT:
        for peer_id in selectors.active_member_ids(conversation_id=conversation.pk):
            if peer_id != user.pk:
                check_not_blocked(user_id=user.pk, peer_id=peer_id)
    reach.check(sender=user, conversation_id=conversation.pk)


def reaction_add(
    *, user: User, message_id: int, emoji: str, origin_channel: str | None = None
) -> ReactionChange:
    """Add ``emoji`` from ``user`` on the message (idempotent: adding it again changes nothing)."""
    emoji = validate_emoji(emoji)
    message, _membership = readable_message(user=user, message_id=message_id)
    _check_may_react(user, message)
    with transaction.atomic():
        _lock_as_member(user, message)
        message.refresh_from_db(fields=["deleted_at", "reactions"])
        if message.deleted_at is not None:  # deleted meanwhile
            raise ApplicationError("message_deleted", "This message was deleted.", status=409)
        changed = not Reaction.objects.filter(message=message, user=user, emoji=emoji).exists()
        if changed:
            try:
                with transaction.atomic():
                    Reaction.objects.create(message=message, user=user, emoji=emoji)
            except IntegrityError:  # a writer that did not take the lock: it is there
                changed = False
        return _record(user, message, emoji, changed=changed, added=True, origin_channel=origin_channel)


def reaction_remove(
    *, user: User, message_id: int, emoji: str, origin_channel: str | None = None
) -> ReactionChange:
    """Remove ``user``'s ``emoji`` from the message (idempotent: removing a missing one changes nothing)."""
    emoji = validate_emoji(emoji)
    message, _membership = readable_message(user=user, message_id=message_id)
    with transaction.atomic():
        _lock_as_member(user, message)
        message.refresh_from_db(fields=["reactions"])
        changed = Reaction.objects.filter(message=message, user=user, emoji=emoji).delete()[0] > 0
        return _record(user, message, emoji, changed=changed, added=False, origin_channel=origin_channel)


def _lock_as_member(user: User, message: Message) -> None:
    """The conversation's row lock (changes are serialised), then the membership again: the
    caller may have been removed meanwhile."""
    lock(message.conversation_id)
    if not Membership.objects.filter(
        conversation_id=message.conversation_id, user=user, left_at__isnull=True
    ).exists():
        raise NotFound("No such message.", code="message_not_found")


def _record(
    user: User, message: Message, emoji: str, *, changed: bool, added: bool, origin_channel: str | None
) -> ReactionChange:
    """Under the lock: the new summary, the log entry and (after the commit) the live frame to
    the members who may read the message; nothing when nothing changed."""
    conversation_id = message.conversation_id
    if not changed:
        summary = message.reactions or []
        return ReactionChange(message.pk, conversation_id, message.seq, user.pk, emoji, summary, False)
    summary = refresh_summaries([message.pk])[message.pk]
    _seq, number = allocate(conversation_id, message=False)
    kind = Event.Kind.REACTION_ADDED if added else Event.Kind.REACTION_REMOVED
    change = ReactionChange(message.pk, conversation_id, message.seq, user.pk, emoji, summary, True)
    data = {k: v for k, v in change.data().items() if k not in ("conversation_id", "changed")}
    Event.objects.create(conversation_id=conversation_id, number=number, kind=kind, data=data)
    readers = [
        uid
        for uid, bound in selectors.active_member_bounds(conversation_id=conversation_id)
        if message.seq > bound
    ]
    frame = {"type": str(kind), "data": {"conversation_id": conversation_id, **data}, "event": number}
    fan_out_on_commit(user_ids=readers, frame=frame, exclude_channel=origin_channel)
    return change


def reactions_delete_for_messages(message_ids: list[int]) -> None:
    """A message that loses its content (unsent, retention, erasure) loses its reactions."""
    if message_ids:
        Reaction.objects.filter(message_id__in=message_ids).delete()
        Message.objects.filter(pk__in=message_ids, reactions__isnull=False).update(reactions=None)


def reactions_erase_user(user: User) -> None:
    """An erased account's reactions go; the summaries of the messages they were on are rewritten."""
    message_ids = sorted(set(Reaction.objects.filter(user=user).values_list("message_id", flat=True)))
    if message_ids:
        Reaction.objects.filter(user=user).delete()
        refresh_summaries(message_ids)


def export_user_reactions(user: User) -> list[dict[str, Any]]:
    return [
        {
            "message_id": message_id,
            "conversation_id": conversation_id,
            "emoji": emoji,
            "created_at": created_at.isoformat(),
        }
        for message_id, conversation_id, emoji, created_at in Reaction.objects.filter(user=user)
        .order_by("id")
        .values_list("message_id", "message__conversation_id", "emoji", "created_at")
    ]
