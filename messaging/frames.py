"""The WebSocket protocol, server side: one typed model per frame the server sends.

``protocol.py`` types what clients send; this module types what they receive. The models
describe the wire (``extra="forbid"``, so a field the server sends is a field documented here);
they are not used to build frames on the send path (``message_wire`` and the plain-dict builders
are), but tests validate every frame a live server sends against them, and
``manage.py asyncapi`` generates ``docs/asyncapi.yaml`` from them and ``protocol``'s models.

``message_wire`` is the one place the message's wire shape is built: ``ack`` (live and batched
sends), ``message.new`` / ``message.updated``, ``sync`` replays, group events and REST history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Ref = Annotated[str, Field(max_length=64, description="the request's `ref`, echoed")]
EventNumber = Annotated[int, Field(ge=1, description="the conversation's event-log number (see sync)")]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Objects carried by frames ------------------------------------------------------------
class Attachment(_Out):
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


class Message(_Out):
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
    deleted: bool
    system: dict[str, Any] | None = Field(
        default=None, description="system messages only: what changed (`event` and its fields)"
    )
    ciphertext: str | None = Field(
        default=None,
        description="end-to-end encrypted conversations' text messages only: this device's copy (base64)",
    )


class CallParticipant(_Out):
    user_id: int
    role: Literal["caller", "callee"]
    state: Literal["ringing", "joined", "declined", "missed", "left"]
    joined_at: datetime | None
    left_at: datetime | None


class Call(_Out):
    """A call as clients see it (``calls.selectors.call_data``)."""

    id: int
    conversation_id: int
    caller_id: int
    media: Literal["audio", "video"]
    state: Literal["ringing", "accepted", "ended", "missed", "rejected", "cancelled", "failed", "busy"]
    end_reason: str | None
    created_at: datetime
    ring_expires_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration: int
    participants: list[CallParticipant]


class Problem(_Out):
    field: str
    problem: str


class ErrorFields(_Out):
    problems: list[Problem]


class DeviceList(_Out):
    user_id: int
    device_ids: list[int]


class Error(_Out):
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


# --- Ack data, one shape per request frame -------------------------------------------------
class MessageAck(_Out):
    """``message.send`` (with ``duplicate``), ``message.edit``, ``message.delete``."""

    message: Message
    duplicate: bool | None = None


class ReceiptAck(_Out):
    """``message.delivered`` / ``message.read``: the cursor(s) now."""

    conversation_id: int
    user_id: int
    delivered_seq: int | None = None
    read_seq: int | None = None


class RefreshAck(_Out):
    """``auth.refresh``: the new token's ``exp`` (Unix seconds)."""

    expires_at: int


class PresenceAck(_Out):
    """``presence.subscribe``."""

    subscribed: list[int]
    refused: list[int]


class CallAck(_Out):
    """``call.invite``, ``call.accept``, ``call.reject``, ``call.cancel``, ``call.hangup``,
    ``call.resume``."""

    call: Call


class EmptyAck(_Out):
    """``call.ringing``, ``call.ice``, ``call.update``."""


# --- Frame data ---------------------------------------------------------------------------
class Reconnect(_Out):
    min_ms: int
    max_ms: int


class ReadyData(_Out):
    user_id: int
    device_id: int | None
    reconnect: Reconnect


class MessageData(_Out):
    message: Message


class ReceiptData(_Out):
    conversation_id: int
    user_id: int
    delivered_seq: int | None = None
    read_seq: int | None = None


class TypingData(_Out):
    conversation_id: int
    user_id: int
    active: bool


class SyncDoneData(_Out):
    cursor: str
    more: bool


class SyncRequiredData(_Out):
    reason: Literal["live_events_interrupted"]


class PresenceData(_Out):
    user_id: int
    online: bool
    last_seen: str | None = Field(description="ISO 8601 UTC, seconds, of the last disconnect")


class _MemberEventData(_Out):
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


class KeysLowData(_Out):
    device_id: int
    one_time_prekeys: int
    kyber_prekeys: int
    threshold: int


class DeviceEventData(_Out):
    conversation_id: int
    user_id: int
    device_id: int


class AttachmentUpdatedData(_Out):
    attachment: AttachmentState


class ConsultationSummary(_Out):
    """A consultation as ``consultation.updated`` carries it (``payments.services.consultation_data``)."""

    id: int
    patient_id: int
    doctor_id: int
    kind: Literal["chat", "voice", "video"]
    state: Literal[
        "requested",
        "paid",
        "accepted",
        "in_progress",
        "completed",
        "declined",
        "cancelled",
        "expired",
        "refunded",
    ]
    price: int
    currency: str
    conversation_id: int


class ConsultationUpdatedData(_Out):
    consultation: ConsultationSummary


class CallInviteData(_Out):
    call: Call
    sdp: str


class CallData(_Out):
    call: Call


class CallIdData(_Out):
    call_id: int


class CallUserData(_Out):
    call_id: int
    user_id: int


class CallSdpData(_Out):
    call_id: int
    user_id: int
    sdp: str


class CallCancelData(_Out):
    call_id: int
    reason: Literal["cancelled", "caller_disconnected", "glare"]


class CallHangupData(_Out):
    call_id: int
    user_id: int
    reason: Literal["hangup", "failed"]


class CallIceData(_Out):
    call_id: int
    user_id: int
    candidate: dict[str, str | int | float | bool | None]


class CallPeerDisconnectedData(_Out):
    call_id: int
    user_id: int
    grace_seconds: float


class EmptyData(_Out):
    pass


# --- Frames -------------------------------------------------------------------------------
class _Reply(_Out):
    ref: Ref | None = None


class _Event(_Out):
    pass


class _LoggedEvent(_Out):
    event: EventNumber


class AckFrame(_Reply):
    """Success reply to a request frame; ``data`` depends on the request."""

    type: Literal["ack"]
    data: MessageAck | ReceiptAck | RefreshAck | PresenceAck | CallAck | EmptyAck


class ErrorFrame(_Reply):
    """Failure reply (with the request's ``ref``) or a connection-level error (without)."""

    type: Literal["error"]
    error: Error


class PongFrame(_Reply):
    type: Literal["pong"]
    data: EmptyData


class ReadyFrame(_Reply):
    """The socket is authenticated (``ref``: the ``auth`` frame's; none with header auth)."""

    type: Literal["ready"]
    data: ReadyData


class SyncDoneFrame(_Reply):
    """End of one ``sync`` batch; while ``more``, ``sync`` again with ``cursor``."""

    type: Literal["sync.done"]
    data: SyncDoneData


class MessageNewFrame(_LoggedEvent):
    type: Literal["message.new"]
    data: MessageData


class MessageUpdatedFrame(_LoggedEvent):
    type: Literal["message.updated"]
    data: MessageData


class ReceiptFrame(_LoggedEvent):
    type: Literal["receipt"]
    data: ReceiptData


class TypingFrame(_Event):
    type: Literal["typing"]
    data: TypingData


class SyncRequiredFrame(_Event):
    """The live path was interrupted: ``sync`` from the stored cursor."""

    type: Literal["sync.required"]
    data: SyncRequiredData


class PresenceFrame(_Event):
    type: Literal["presence"]
    data: PresenceData


class MemberAddedFrame(_LoggedEvent):
    type: Literal["member.added"]
    data: MemberAddedData


class MemberRemovedFrame(_LoggedEvent):
    type: Literal["member.removed"]
    data: MemberRemovedData


class MemberLeftFrame(_LoggedEvent):
    type: Literal["member.left"]
    data: MemberLeftData


class MemberRoleChangedFrame(_LoggedEvent):
    type: Literal["member.role_changed"]
    data: MemberRoleChangedData


class GroupUpdatedFrame(_LoggedEvent):
    type: Literal["group.updated"]
    data: GroupUpdatedData


class KeysLowFrame(_Event):
    type: Literal["keys.low"]
    data: KeysLowData


class IdentityChangedFrame(_LoggedEvent):
    type: Literal["identity.changed"]
    data: DeviceEventData


class DeviceAddedFrame(_LoggedEvent):
    type: Literal["device.added"]
    data: DeviceEventData


class AttachmentUpdatedFrame(_Event):
    type: Literal["attachment.updated"]
    data: AttachmentUpdatedData


class ConsultationUpdatedFrame(_Event):
    """A consultation of the user's changed state (a hint: ``GET consultations/{id}`` is the truth)."""

    type: Literal["consultation.updated"]
    data: ConsultationUpdatedData


class CallInviteFrame(_Event):
    type: Literal["call.invite"]
    data: CallInviteData


class CallRingingFrame(_Event):
    type: Literal["call.ringing"]
    data: CallUserData


class CallAcceptFrame(_Event):
    type: Literal["call.accept"]
    data: CallSdpData


class CallRejectFrame(_Event):
    type: Literal["call.reject"]
    data: CallUserData


class CallCancelFrame(_Event):
    type: Literal["call.cancel"]
    data: CallCancelData


class CallHangupFrame(_Event):
    type: Literal["call.hangup"]
    data: CallHangupData


class CallIceFrame(_Event):
    type: Literal["call.ice"]
    data: CallIceData


class CallUpdateFrame(_Event):
    type: Literal["call.update"]
    data: CallSdpData


class CallMissedFrame(_Event):
    type: Literal["call.missed"]
    data: CallData


class CallAnsweredElsewhereFrame(_Event):
    type: Literal["call.answered_elsewhere"]
    data: CallIdData


class CallEndedFrame(_Event):
    type: Literal["call.ended"]
    data: CallData


class CallPeerDisconnectedFrame(_Event):
    type: Literal["call.peer_disconnected"]
    data: CallPeerDisconnectedData


class CallPeerResumedFrame(_Event):
    type: Literal["call.peer_resumed"]
    data: CallUserData


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
    "consultation.updated": ConsultationUpdatedFrame,
    "call.invite": CallInviteFrame,
    "call.ringing": CallRingingFrame,
    "call.accept": CallAcceptFrame,
    "call.reject": CallRejectFrame,
    "call.cancel": CallCancelFrame,
    "call.hangup": CallHangupFrame,
    "call.ice": CallIceFrame,
    "call.update": CallUpdateFrame,
    "call.missed": CallMissedFrame,
    "call.answered_elsewhere": CallAnsweredElsewhereFrame,
    "call.ended": CallEndedFrame,
    "call.peer_disconnected": CallPeerDisconnectedFrame,
    "call.peer_resumed": CallPeerResumedFrame,
}
SERVER_FRAMES: tuple[str, ...] = tuple(SERVER_FRAME_MODELS)

# Every server frame, told apart by ``type``: the registry's models, not a second list of them.
_server_frame: Any = Annotated[Union[tuple(SERVER_FRAME_MODELS.values())], Field(discriminator="type")]  # noqa: UP007
server_frame_adapter: TypeAdapter[Any] = TypeAdapter(_server_frame)

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
        "deleted": deleted,
    }
    if system is not None:
        data["system"] = system
    if ciphertext is not False:
        data["ciphertext"] = ciphertext
    return data
