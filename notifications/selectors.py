"""Push reads: preferences, mute state, unread badges. Scoped to the caller where a client asks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import F, Sum, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import User
from messaging import selectors as messaging_selectors
from messaging.models import Membership

from .models import PushPreference

# "Muted until I unmute": stored as a time no one reaches, shown as ``muted_until: null``.
MUTED_FOREVER = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


def preference_get(*, user: User) -> dict[str, Any]:
    preference = PushPreference.objects.filter(user=user).first()
    previews = preference.previews if preference else bool(settings.PUSH_PREVIEWS_DEFAULT)
    return {
        "previews": previews,
        "mentions_when_muted": preference.mentions_when_muted if preference else True,
    }


def mentions_muted_off(*, user_ids: Iterable[int]) -> set[int]:
    """The users whose mentions stay silent in muted conversations (preference off)."""
    ids = list(user_ids)
    if not ids:
        return set()
    return set(
        PushPreference.objects.filter(user_id__in=ids, mentions_when_muted=False).values_list(
            "user_id", flat=True
        )
    )


def previews_enabled(*, user_ids: Iterable[int]) -> dict[int, bool]:
    """Users with a preference row; others get ``PUSH_PREVIEWS_DEFAULT``."""
    ids = list(user_ids)
    if not ids:
        return {}
    return dict(PushPreference.objects.filter(user_id__in=ids).values_list("user_id", "previews"))


def unread_counts(*, user_ids: Iterable[int]) -> dict[int, int]:
    """Unread messages over each user's active conversations (the badge), one query.

    Messages from before a member joined are not "new" to them: the count starts at the later
    of their read cursor and their join point.
    """
    ids = list(user_ids)
    if not ids:
        return {}
    rows = (
        Membership.objects.filter(user_id__in=ids, left_at__isnull=True)
        .values("user_id")
        .annotate(
            unread=Sum(
                Greatest(F("conversation__last_seq") - Greatest(F("read_seq"), F("joined_seq")), Value(0))
            )
        )
        .values_list("user_id", "unread")
    )
    return {user_id: int(unread or 0) for user_id, unread in rows}


def mute_data(membership: Membership) -> dict[str, Any]:
    until = membership.muted_until
    muted = until is not None and until > timezone.now()
    return {
        "conversation_id": membership.conversation_id,
        "muted": muted,
        "muted_until": until.isoformat() if muted and until and until < MUTED_FOREVER else None,
    }


def mute_get(*, user: User, conversation_id: int) -> dict[str, Any]:
    membership = messaging_selectors.membership_get(user=user, conversation_id=conversation_id)
    return mute_data(membership)
