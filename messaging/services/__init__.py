"""Messaging actions, one module per domain (each action one function that owns its transaction;
live events and ``message_committed`` only after commit; the channel layer is a fast path only:
every event is also in the per-conversation log that ``sync`` replays).

- ``events``: the signals (``message_committed``, ``message_updated``) and the live fan-out
- ``counters``: a conversation's seq and event numbers under its row lock
- ``contacts``: blocks, who may contact whom, presence subscriptions that end with a relationship
- ``conversations``: the e2ee policy, joining, direct conversations, system messages
- ``send``: one message (REST, admin, commands, the encrypted path)
- ``send_batch``: group commit of many sockets' sends (with ``messaging.loop_writer``)
- ``edit``, ``receipts`` (and typing), ``privacy`` (erasure, export), ``attachments``, ``retention``

Import the names from here (``from messaging import services``): the package is the API."""

from __future__ import annotations

# Issue 24: reactions, mentions, pins (each its own module; ``annotations``: their removal).
from .annotations import annotations_delete_for_messages, annotations_erase_user
from .attachments import (
    TOMBSTONE_NAME,
    TOMBSTONE_SHA256,
    attach_uploads,
    attachment_make_thumbnail,
    attachment_process_media,
    attachment_upload,
    attachments_delete_for_messages,
    attachments_purge_orphans,
    attachments_requeue_processing,
    storage_delete,
)
from .contacts import (
    PRESENCE_REVOKE,
    block_user,
    check_can_contact,
    check_not_blocked,
    contact_rules,
    is_blocked,
    may_fetch_keys,
    presence_end_lost_contacts,
    presence_revoke_on_commit,
    unblock_user,
    verified_doctor,
)
from .conversations import (
    call_log_message_create,
    conversation_open_direct,
    device_keys_event_record,
    e2ee_for_new_conversation,
    membership_join,
    patient_doctor,
    system_message_create,
)
from .counters import allocate, lock
from .edit import message_delete, message_edit, record_update, record_updates
from .events import (
    Committed,
    announce_committed,
    announce_on_commit,
    fan_out,
    fan_out_encrypted,
    fan_out_on_commit,
    message_committed,
    message_updated,
)
from .mentions import MENTIONS_ARE_MEMBERS, export_user_mentions, validate_mentions
from .pins import PinChange, export_user_pins, message_pin, message_unpin, pins_max
from .privacy import erase_user_messages, erase_user_presence, export_user_messages, export_user_uploads
from .reactions import (
    REACTION_EMOJI,
    ReactionChange,
    export_user_reactions,
    reaction_add,
    reaction_remove,
    readable_message,
)
from .receipts import receipt_mark, typing_notify
from .retention import RetentionCounts, conversation_set_legal_hold, retention_due, retention_purge
from .send import (
    DuplicateSend,
    SendRequest,
    SendResult,
    existing_send,
    message_send,
    message_send_encrypted,
    original_send,
    plain_text,
    send,
    send_in_transaction,
    write_message_orm,
    write_message_sql,
)
from .send_batch import (
    GENERIC_PLANS_SQL,
    KINDS_SQL,
    BatchConflict,
    Duplicate,
    FanOut,
    Prepared,
    Refusals,
    batch_outcome,
    committed_of,
    fan_out_all,
    known_kinds,
    message_send_many,
    remember_kinds,
    send_batch_params,
    send_reaches,
)
from .send_checks import CHECKS as SEND_CHECKS
from .send_checks import e2ee_mismatch
from .statements import LOCK_BATCH_SQL, SEND_STATEMENT, send_statement

__all__ = [
    "GENERIC_PLANS_SQL",
    "KINDS_SQL",
    "LOCK_BATCH_SQL",
    "MENTIONS_ARE_MEMBERS",
    "PRESENCE_REVOKE",
    "REACTION_EMOJI",
    "SEND_CHECKS",
    "SEND_STATEMENT",
    "TOMBSTONE_NAME",
    "TOMBSTONE_SHA256",
    "BatchConflict",
    "Committed",
    "Duplicate",
    "DuplicateSend",
    "FanOut",
    "PinChange",
    "Prepared",
    "ReactionChange",
    "Refusals",
    "RetentionCounts",
    "SendRequest",
    "SendResult",
    "allocate",
    "annotations_delete_for_messages",
    "annotations_erase_user",
    "announce_committed",
    "announce_on_commit",
    "attach_uploads",
    "attachment_make_thumbnail",
    "attachment_process_media",
    "attachment_upload",
    "attachments_delete_for_messages",
    "attachments_purge_orphans",
    "attachments_requeue_processing",
    "batch_outcome",
    "block_user",
    "call_log_message_create",
    "check_can_contact",
    "check_not_blocked",
    "committed_of",
    "contact_rules",
    "conversation_open_direct",
    "conversation_set_legal_hold",
    "device_keys_event_record",
    "e2ee_for_new_conversation",
    "e2ee_mismatch",
    "erase_user_messages",
    "erase_user_presence",
    "existing_send",
    "export_user_mentions",
    "export_user_messages",
    "export_user_pins",
    "export_user_reactions",
    "export_user_uploads",
    "fan_out",
    "fan_out_all",
    "fan_out_encrypted",
    "fan_out_on_commit",
    "is_blocked",
    "known_kinds",
    "lock",
    "may_fetch_keys",
    "membership_join",
    "message_committed",
    "message_delete",
    "message_edit",
    "message_pin",
    "message_send",
    "message_send_encrypted",
    "message_send_many",
    "message_unpin",
    "message_updated",
    "original_send",
    "patient_doctor",
    "pins_max",
    "plain_text",
    "presence_end_lost_contacts",
    "presence_revoke_on_commit",
    "reaction_add",
    "reaction_remove",
    "readable_message",
    "receipt_mark",
    "record_update",
    "record_updates",
    "remember_kinds",
    "retention_due",
    "retention_purge",
    "send",
    "send_batch_params",
    "send_in_transaction",
    "send_reaches",
    "send_statement",
    "storage_delete",
    "system_message_create",
    "typing_notify",
    "unblock_user",
    "validate_mentions",
    "verified_doctor",
    "write_message_orm",
    "write_message_sql",
]
