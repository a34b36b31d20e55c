"""Channel-layer group names and event publishing, built in one place.

Only services publish events, and only after commit (``publish_on_commit``): nothing is
announced that was rolled back. The channel layer is at-most-once; PostgreSQL stays the truth.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger("healthchat.realtime")


def user_group(user_id: int) -> str:
    """Every socket of a user joins this group, on every server process."""
    return f"user.{user_id}"


def publish(group: str, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, event)
    except Exception:  # the live event is a hint; sync repairs what is lost
        logger.warning("could not publish %s to %s", event.get("type"), group, exc_info=True)


def publish_on_commit(group: str, event: dict[str, Any]) -> None:
    transaction.on_commit(lambda: publish(group, event))


def presence_group(user_id: int) -> str:
    """Sockets watching ``user_id``'s presence join this group."""
    return f"presence.{user_id}"
