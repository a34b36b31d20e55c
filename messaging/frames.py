"""The WebSocket protocol, server side: one typed model per frame the server sends.

``protocol.py`` types what clients send; this module types what they receive. The models
describe the wire (``extra="forbid"``, so a field the server sends is a field documented here);
they are not used to build frames on the send path (``message_wire`` and the plain-dict builders
are), but tests validate every frame a live server sends against them, and
``manage.py asyncapi`` generates ``docs/asyncapi.yaml`` from them and ``protocol``'s models.

``message_wire`` spells the message's wire shape, and its one caller is
``selectors.message_data`` (a stored ``Message``, or a batch's just-written ``WrittenMessage``):
``ack`` (single and batched sends, on either writer), ``message.new`` / ``message.updated``,
``sync`` replays, group events and REST history all come from there.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

Ref = Annotated[str, Field(max_length=64, description="the request's `ref`, echoed")]
EventNumber = Annotated[int, Field(ge=1, description="the conversation's event-log number (see sync)")]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Objects carried by frames ------------------------------------------------------------
class Attachment(WireModel):
    """A file sent with a message (download: ``GET /api/v1/attachments/{id}``)."""

    id: int
    category: str
    content_type: str
    size: int
    sha256: str
    name: str
    width: int | None
    height: int | None
    duration: float | None


class AttachmentState(Attachment):
    """An upload as its uploader sees it: the attachment and its processing state."""

    state: Literal["processing", "ready", "rejected"]
    rejection: str | None


class MentionEntity(WireModel):
    """A member mentioned in a message's body: ``body[offset:offset + length]`` (code points)."""

    user_id: int
    offset: int = Field(ge=0)
    length: int = Field(ge=1)


class ReactionSummary(WireModel):
    """One emoji on a message: how many members reacted with it, and who (first first)."""

    emoji: str
    count: int = Field(ge=1)
    user_ids: list[int]


class Message(WireModel):
    """A message as clients see it (``message_wire``); also REST history's item."""

    id: int
    conversation_id: int
    seq: int = Field(ge=1)
    client_id: uuid.UUID
    sender_id: int
    kind: Literal["text", "system"]
    created_at: datetime
    body: str
    attachments: list[Attachment]
    reply_to: int | None
    edited_at: datetime | None
    edit_count: int = Field(
        default=0,
        ge=0,
        description="how many times the text was edited (0: never; its versions: "
        "GET /api/v1/messages/{id}/versions); 0 on a deleted message",
    )
    deleted: bool
    system: dict[str, Any] | None = Field(
        default=None, description="system messages only: what changed (`event` and its fields)"
    )
    ciphertext: str | None = Field(
        default=None,
        description="end-to-end encrypted conversations' text messages only: this device's copy (base64)",
    )
    mentions: list[MentionEntity] = Field(
        default_factory=list, description="members the sender mentioned (offsets in code points of body)"
    )
    reactions: list[ReactionSummary] = Field(
        default_factory=list, description="each emoji on the message, first used first: its count and who"
    )


class Problem(WireModel):
    field: str
    problem: str


class ErrorFields(WireModel):
    problems: list[Problem]


class DeviceList(WireModel):
    user_id: int
    device_ids: list[int]


class Error(WireModel):
    """``error.code`` from ``protocol.ERROR_CODES``; the other fields only where that code says."""

    code: str
    message: str
    fields: ErrorFields | None = None
    retry_after: int | None = Field(default=None, description="rate_limited (per-user send limit): seconds")
    retry_after_ms: int | None = Field(default=None, description="server_busy: milliseconds")
    call_id: int | None = Field(default=None, description="call_in_progress: the call already there")
    missing_devices: list[int] | None = Field(default=None, description="devices_mismatch")
    extra_devices: list[int] | None = Field(default=None, description="devices_mismatch")
    devices: list[DeviceList] | None = Field(default=None, description="devices_mismatch")
    opens_at: str | None = Field(default=None, description="check_in_too_early: when check-in opens")


# --- Ack data, one shape per request frame -------------------------------------------------
class MessageAck(WireModel):
    """``message.send`` (with ``duplicate``), ``message.edit``, ``message.delete``."""

    message: Message
    duplicate: bool | None = None


class ReceiptAck(WireModel):
    """``message.delivered`` / ``message.read``: the cursor(s) now."""

    conversation_id: int
    user_id: int
    delivered_seq: int | None = None
    read_seq: int | None = None


class RefreshAck(WireModel):
    """``auth.refresh``: the new token's ``exp`` (Unix seconds)."""

    expires_at: int


class PresenceAck(WireModel):
    """``presence.subscribe``."""

    subscribed: list[int]
    refused: list[int]


class EmptyAck(WireModel):
    """``call.ringing``, ``call.ice``, ``call.update``."""


# --- Frame data ---------------------------------------------------------------------------
class Reconnect(WireModel):
    min_ms: int
    max_ms: int


class ReadyData(WireModel):
    user_id: int
    device_id: int | None
    reconnect: Reconnect


class MessageData(WireModel):
    message: Message


class ReceiptData(WireModel):
    conversation_id: int
    user_id: int
    delivered_seq: int | None = None
    read_seq: int | None = None


class TypingData(WireModel):
    conversation_id: int
    user_id: int
    active: bool


class SyncDoneData(WireModel):
    cursor: str
    more: bool


class SyncRequiredData(WireModel):
    reason: Literal["live_events_interrupted"]


class PresenceData(WireModel):
    user_id: int
    online: bool
    last_seen: str | None = Field(description="ISO 8601 UTC, seconds, of the last disconnect")


class _MemberEventData(WireModel):
    conversation_id: int
    message: Message = Field(description="the system message recording the change")


class MemberAddedData(_MemberEventData):
    event: Literal["member.added"]
    user_id: int
    by: int


class MemberRemovedData(_MemberEventData):
    event: Literal["member.removed"]
    user_id: int
    by: int


class MemberLeftData(_MemberEventData):
    event: Literal["member.left"]
    user_id: int


class MemberRoleChangedData(_MemberEventData):
    event: Literal["member.role_changed"]
    user_id: int
    role: Literal["owner", "admin", "member"]
    by: int


class GroupUpdatedData(_MemberEventData):
    event: Literal["group.updated"]
    by: int
    name: str | None = None
    description: str | None = None
    history_visible_to_new_members: bool | None = None
    avatar: Literal["set", "removed"] | None = Field(
        default=None, description="the avatar changed: read the group again for the new one"
    )


class KeysLowData(WireModel):
    device_id: int
    one_time_prekeys: int
    kyber_prekeys: int
    threshold: int


class DeviceEventData(WireModel):
    conversation_id: int
    user_id: int
    device_id: int


class AttachmentUpdatedData(WireModel):
    attachment: AttachmentState


class EmptyData(WireModel):
    pass


# --- Frames -------------------------------------------------------------------------------
class ReplyFrame(WireModel):
    ref: Ref | None = None


class EventFrame(WireModel):
    pass


class LoggedEventFrame(WireModel):
    event: EventNumber


# The ``ack`` data of every request, by app: messaging's here, other apps' registered
# (``register_server_frames``); ``EmptyAck`` last.
_ack_models: list[type[BaseModel]] = [MessageAck, ReceiptAck, RefreshAck, PresenceAck]


def _ack_frame() -> type[BaseModel]:
    data: Any = Union[(*_ack_models, EmptyAck)]
    ack: Any = Literal["ack"]
    model: type[BaseModel] = create_model(
        "AckFrame",
        __base__=ReplyFrame,
        __doc__="Success reply to a request frame; ``data`` depends on the request.",
        __module__=__name__,
        type=(ack, ...),
        data=(data, ...),
    )
    return model


AckFrame = _ack_frame()


class ErrorFrame(ReplyFrame):
    """Failure reply (with the request's ``ref``) or a connection-level error (without)."""

    type: Literal["error"]
    error: Error


class PongFrame(ReplyFrame):
    type: Literal["pong"]
    data: EmptyData


class ReadyFrame(ReplyFrame):
    """The socket is authenticated (``ref``: the ``auth`` frame's; none with header auth)."""

    type: Literal["ready"]
    data: ReadyData


class SyncDoneFrame(ReplyFrame):
    """End of one ``sync`` batch; while ``more``, ``sync`` again with ``cursor``."""

    type: Literal["sync.done"]
    data: SyncDoneData


class MessageNewFrame(LoggedEventFrame):
    type: Literal["message.new"]
    data: MessageData


class MessageUpdatedFrame(LoggedEventFrame):
    type: Literal["message.updated"]
    data: MessageData


class ReceiptFrame(LoggedEventFrame):
    type: Literal["receipt"]
    data: ReceiptData


class TypingFrame(EventFrame):
    type: Literal["typing"]
    data: TypingData


class SyncRequiredFrame(EventFrame):
    """The live path was interrupted: ``sync`` from the stored cursor."""

    type: Literal["sync.required"]
    data: SyncRequiredData


class PresenceFrame(EventFrame):
    type: Literal["presence"]
    data: PresenceData


class MemberAddedFrame(LoggedEventFrame):
    type: Literal["member.added"]
    data: MemberAddedData


class MemberRemovedFrame(LoggedEventFrame):
    type: Literal["member.removed"]
    data: MemberRemovedData


class MemberLeftFrame(LoggedEventFrame):
    type: Literal["member.left"]
    data: MemberLeftData


class MemberRoleChangedFrame(LoggedEventFrame):
    type: Literal["member.role_changed"]
    data: MemberRoleChangedData


class GroupUpdatedFrame(LoggedEventFrame):
    type: Literal["group.updated"]
    data: GroupUpdatedData


class KeysLowFrame(EventFrame):
    type: Literal["keys.low"]
    data: KeysLowData


class IdentityChangedFrame(LoggedEventFrame):
    type: Literal["identity.changed"]
    data: DeviceEventData


class DeviceAddedFrame(LoggedEventFrame):
    type: Literal["device.added"]
    data: DeviceEventData


class AttachmentUpdatedFrame(EventFrame):
    type: Literal["attachment.updated"]
    data: AttachmentUpdatedData


# Every frame the server sends, by ``type`` (``protocol.SERVER_FRAMES`` is its keys).
SERVER_FRAME_MODELS: dict[str, type[BaseModel]] = {
    "ack": AckFrame,
    "error": ErrorFrame,
    "pong": PongFrame,
    "ready": ReadyFrame,
    "message.new": MessageNewFrame,
    "message.updated": MessageUpdatedFrame,
    "receipt": ReceiptFrame,
    "typing": TypingFrame,
    "sync.done": SyncDoneFrame,
    "sync.required": SyncRequiredFrame,
    "presence": PresenceFrame,
    "member.added": MemberAddedFrame,
    "member.removed": MemberRemovedFrame,
    "member.left": MemberLeftFrame,
    "member.role_changed": MemberRoleChangedFrame,
    "group.updated": GroupUpdatedFrame,
    "keys.low": KeysLowFrame,
    "identity.changed": IdentityChangedFrame,
    "attachment.updated": AttachmentUpdatedFrame,
    "device.added": DeviceAddedFrame,
}
SERVER_FRAMES: tuple[str, ...] = tuple(SERVER_FRAME_MODELS)


def _server_adapter() -> TypeAdapter[Any]:
    """Every server frame, told apart by ``type``: the registry's models, not a second list."""
    union: Any = Annotated[Union[tuple(SERVER_FRAME_MODELS.values())], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(union)


server_frame_adapter: TypeAdapter[Any] = _server_adapter()


def register_server_frames(
    models: Sequence[type[BaseModel]], *, acks: Sequence[type[BaseModel]] = ()
) -> None:
    """Add an app's server frames (by their ``type``) and its requests' ``ack`` data (called by
    ``protocol.register_frames``, the one way an app registers its frames)."""
    global AckFrame, SERVER_FRAMES, server_frame_adapter
    for model in models:
        name = typing.get_args(model.model_fields["type"].annotation)[0]
        if SERVER_FRAME_MODELS.get(name, model) is not model:
            raise ImproperlyConfigured(f"two server frames are typed {name!r}")
        SERVER_FRAME_MODELS[name] = model
    added = [model for model in acks if model not in _ack_models]
    if added:
        _ack_models.extend(added)
        AckFrame = SERVER_FRAME_MODELS["ack"] = _ack_frame()
    SERVER_FRAMES = tuple(SERVER_FRAME_MODELS)
    server_frame_adapter = _server_adapter()


# WebSocket close codes the server uses (the consumer's constants come from here).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_IDLE = 4408
CLOSE_FLOOD = 4429
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_CODES: dict[int, str] = {
    CLOSE_UNAUTHORIZED: "authentication failed (invalid_token, token_expired, token_revoked, user_inactive, "
    "user_disabled, auth_unavailable), auth_timeout, the token reached its exp without auth.refresh, or "
    "the user was signed out everywhere; sign in again and reconnect with a fresh token",
    CLOSE_FORBIDDEN: "not_registered or device_not_found during authentication, a browser Origin that is not "
    "allowed, or the account was deleted or deactivated; do not reconnect",
    CLOSE_IDLE: "idle: no frame from the client for HEALTHCHAT_WS_IDLE_TIMEOUT seconds (idle_timeout)",
    CLOSE_FLOOD: "flooding: after 10 rate_limited warnings, the next frame over the rate limit",
    CLOSE_INTERNAL_ERROR: "an unexpected server failure during authentication (internal_error)",
    1012: "the server process is restarting (sent by the ASGI server); reconnect after ready.data.reconnect "
    "and sync",
    CLOSE_TRY_AGAIN_LATER: "too many sockets authenticating at once (server_busy, retry_after_ms)",
    1009: "a WebSocket message over the ASGI server's hard limit (16 MiB); smaller oversized frames get "
    "frame_too_large",
}


def validate_server_frame(frame: dict[str, Any]) -> BaseModel:
    """The frame as its model, or pydantic's ValidationError (tests; never the send path)."""
    result: BaseModel = server_frame_adapter.validate_python(frame)
    return result


# --- The message's wire shape: built here only ----------------------------------------------
def message_wire(
    *,
    message_id: int,
    conversation_id: int,
    seq: int,
    client_id: str,
    sender_id: int,
    kind: str,
    created_at: str,
    body: str,
    attachments: list[dict[str, Any]],
    reply_to: int | None,
    edited_at: str | None,
    deleted: bool,
    system: dict[str, Any] | None = None,
    ciphertext: str | Literal[False] | None = False,
    mentions: list[dict[str, int]] | None = None,
    reactions: list[dict[str, Any]] | None = None,
    edit_count: int = 0,
) -> dict[str, Any]:
    """The message as every client path sends it (``Message`` above): a plain dict.

    ``system`` appears only on system messages; ``ciphertext`` only when given (``False``:
    not an encrypted conversation's text message)."""
    data: dict[str, Any] = {
        "id": message_id,
        "conversation_id": conversation_id,
        "seq": seq,
        "client_id": client_id,
        "sender_id": sender_id,
        "kind": kind,
        "created_at": created_at,
        "body": body,
        "attachments": attachments,
        "reply_to": reply_to,
        "edited_at": edited_at,
        "edit_count": edit_count,
        "deleted": deleted,
        "mentions": mentions or [],
        "reactions": reactions or [],
    }
    if system is not None:
        data["system"] = system
    if ciphertext is not False:
        data["ciphertext"] = ciphertext
    return data
