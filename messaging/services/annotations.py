"""What hangs off a message (reactions, mentions, pins) goes with its content: one call for
every path that erases a message's content (unsend, retention, account erasure)."""

from __future__ import annotations

from accounts.models import User

from .mentions import mentions_delete_for_messages, mentions_erase_user
from .pins import pins_delete_for_messages, pins_erase_user
from .reactions import reactions_delete_for_messages, reactions_erase_user


def annotations_delete_for_messages(message_ids: list[int]) -> None:
    reactions_delete_for_messages(message_ids)
    mentions_delete_for_messages(message_ids)
    pins_delete_for_messages(message_ids)


def annotations_erase_user(user: User) -> None:
    """An erased account's own reactions, mentions of it and its name on pins."""
    reactions_erase_user(user)
    mentions_erase_user(user)
    pins_erase_user(user)
