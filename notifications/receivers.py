"""Hooks from messaging (sent after commit) into the push services. No logic here. (A new
message's push rows are written in its transaction by the written hook,
``services.PUSH_OUTBOX_HOOK``, not here.)

The message is already committed when these run, inside the sender's request: a failure here
must not turn a successful send into an error, so it is logged instead (the outbox row is the
first thing written; without it there is nothing to retry).
"""

from __future__ import annotations

import logging
from typing import Any

from . import services

logger = logging.getLogger("healthchat.push")


def on_message_updated(*, message_id: int, conversation_id: int, event: int, **_: Any) -> None:
    try:
        services.push_enqueue_message_update(
            message_id=message_id, conversation_id=conversation_id, event=event
        )
    except Exception:
        logger.exception("could not record the update push for message %s", message_id)
