"""Reads for messaging, always scoped to the caller's memberships; one module per domain.

- ``wire``: the message as clients see it. ``message_data`` is THE one place its wire shape is
  built (ack, ``message.new``, sync and REST history); ``event_frame`` wraps it in an event frame
- ``members``: memberships and visibility (who is in a conversation, blocks, presence audiences)
- ``conversations``: the caller's conversations, their members, their wire shape
- ``history``: message history (keyset pagination on seq) and single-message access
- ``sync``: replay of the per-conversation event logs (``sync_events``, ``sync_events_many``)
- ``attachments``: access-checked downloads, signed links
- ``versions``: edit history (the texts a message had), for members who may read it

Import the names from here (``from messaging import selectors``): the package is the API. A
module-level setting read by one module (``SYNC_BATCH``) is patched where it is read
(``messaging.selectors.sync``)."""

from __future__ import annotations

from .attachments import (
    ATTACHMENT_SIGNING_SALT,
    attachment_from_token,
    attachment_get_for_download,
    attachment_link,
    content_disposition,
)
from .conversations import conversation_data, conversation_list, conversation_members
from .history import HISTORY_MAX_LIMIT, message_get_for_member, message_history, message_history_data
from .members import (
    active_member_bounds,
    active_member_ids,
    block_partner_ids,
    contact_ids,
    e2ee_device_owners,
    membership_get,
    presence_contact_ids,
    shares_conversation,
    signal_audience_ids,
    visible_seq_range,
)
from .sync import (
    SYNC_BATCH,
    SYNC_NO_CURSOR_TAIL,
    SyncCursor,
    SyncRequest,
    SyncResult,
    sync_events,
    sync_events_many,
)
from .versions import message_readable, message_versions_data
from .wire import WrittenMessage, attachment_data, attachment_state_data, b64, event_frame, message_data

__all__ = [
    "ATTACHMENT_SIGNING_SALT",
    "HISTORY_MAX_LIMIT",
    "SYNC_BATCH",
    "SYNC_NO_CURSOR_TAIL",
    "SyncCursor",
    "SyncRequest",
    "SyncResult",
    "WrittenMessage",
    "active_member_bounds",
    "active_member_ids",
    "attachment_data",
    "attachment_from_token",
    "attachment_get_for_download",
    "attachment_link",
    "attachment_state_data",
    "b64",
    "block_partner_ids",
    "contact_ids",
    "content_disposition",
    "conversation_data",
    "conversation_list",
    "conversation_members",
    "e2ee_device_owners",
    "event_frame",
    "membership_get",
    "message_data",
    "message_get_for_member",
    "message_history",
    "message_history_data",
    "message_readable",
    "message_versions_data",
    "presence_contact_ids",
    "shares_conversation",
    "signal_audience_ids",
    "sync_events",
    "sync_events_many",
    "visible_seq_range",
]
