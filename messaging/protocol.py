"""The WebSocket protocol: one typed model per client frame, a tagged union on ``type``
(the frames the server sends are typed in ``frames``).

Unknown fields are refused (``extra="forbid"``). ``docs/protocol.md`` is checked against
``CLIENT_FRAMES``, ``SERVER_FRAMES`` and ``ERROR_CODES`` by a test, so the two cannot drift.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.errors import ApplicationError

from . import frames

MAX_REF = 64
# A JSON ``\uD800``-``\uDFFF`` escape: the only way a lone surrogate (not UTF-8 encodable, so
# refused by PostgreSQL) gets into a decoded frame; the text of a WebSocket frame is valid UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


# Ids and seqs are PostgreSQL bigints: a value outside that range is refused here (invalid_frame)
# instead of failing in the database.
BigInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class Empty(_Strict):
    pass


class AuthData(_Strict):
    token: str = Field(min_length=1, max_length=8192)
    device_id: BigInt | None = None


class AuthRefreshData(_Strict):
    token: str = Field(min_length=1, max_length=8192)


class MessageSendData(_Strict):
    conversation_id: BigInt
    client_id: uuid.UUID
    body: str | None = None
    attachment_ids: list[BigInt] | None = Field(default=None, max_length=10)
    reply_to: BigInt | None = None
    ciphertexts: dict[str, str] | None = Field(default=None, max_length=1000)


class MessageEditData(_Strict):
    message_id: BigInt
    body: str


class MessageDeleteData(_Strict):
    message_id: BigInt


class ReceiptData(_Strict):
    conversation_id: BigInt
    seq: Seq


class TypingData(_Strict):
    conversation_id: BigInt
    active: bool


class SyncData(_Strict):
    cursor: str | None = Field(default=None, max_length=65536)


class PresenceSubscribeData(_Strict):
    user_ids: list[BigInt] = Field(max_length=500)


class _Frame(_Strict):
    ref: str | None = Field(default=None, max_length=MAX_REF)


class PingFrame(_Frame):
    type: Literal["ping"]
    data: Empty = Empty()


class AuthFrame(_Frame):
    type: Literal["auth"]
    data: AuthData


class AuthRefreshFrame(_Frame):
    type: Literal["auth.refresh"]
    data: AuthRefreshData


class MessageSendFrame(_Frame):
    type: Literal["message.send"]
    data: MessageSendData


class MessageEditFrame(_Frame):
    type: Literal["message.edit"]
    data: MessageEditData


class MessageDeleteFrame(_Frame):
    type: Literal["message.delete"]
    data: MessageDeleteData


class MessageDeliveredFrame(_Frame):
    type: Literal["message.delivered"]
    data: ReceiptData


class MessageReadFrame(_Frame):
    type: Literal["message.read"]
    data: ReceiptData


class TypingFrame(_Frame):
    type: Literal["typing"]
    data: TypingData


class SyncFrame(_Frame):
    type: Literal["sync"]
    data: SyncData = SyncData()


class PresenceSubscribeFrame(_Frame):
    type: Literal["presence.subscribe"]
    data: PresenceSubscribeData


# --- Calls (calls/handlers.py): SDP and candidates are opaque, bounded by calls/validators.py --
class CallInviteData(_Strict):
    conversation_id: BigInt
    media: Literal["audio", "video"]
    sdp: str


class CallIdData(_Strict):
    call_id: BigInt


class CallSdpData(_Strict):
    call_id: BigInt
    sdp: str


class CallHangupData(_Strict):
    call_id: BigInt
    reason: Literal["hangup", "failed"] = "hangup"


class CallIceData(_Strict):
    call_id: BigInt
    candidate: dict[str, str | int | float | bool | None] = Field(max_length=8)


class CallInviteFrame(_Frame):
    type: Literal["call.invite"]
    data: CallInviteData


class CallRingingFrame(_Frame):
    type: Literal["call.ringing"]
    data: CallIdData


class CallAcceptFrame(_Frame):
    type: Literal["call.accept"]
    data: CallSdpData


class CallRejectFrame(_Frame):
    type: Literal["call.reject"]
    data: CallIdData


class CallCancelFrame(_Frame):
    type: Literal["call.cancel"]
    data: CallIdData


class CallHangupFrame(_Frame):
    type: Literal["call.hangup"]
    data: CallHangupData


class CallIceFrame(_Frame):
    type: Literal["call.ice"]
    data: CallIceData


class CallUpdateFrame(_Frame):
    type: Literal["call.update"]
    data: CallSdpData


class CallResumeFrame(_Frame):
    type: Literal["call.resume"]
    data: CallIdData


ClientFrame = Annotated[
    PingFrame
    | AuthFrame
    | AuthRefreshFrame
    | MessageSendFrame
    | MessageEditFrame
    | MessageDeleteFrame
    | MessageDeliveredFrame
    | MessageReadFrame
    | TypingFrame
    | SyncFrame
    | PresenceSubscribeFrame
    | CallInviteFrame
    | CallRingingFrame
    | CallAcceptFrame
    | CallRejectFrame
    | CallCancelFrame
    | CallHangupFrame
    | CallIceFrame
    | CallUpdateFrame
    | CallResumeFrame,
    Field(discriminator="type"),
]
_adapter: TypeAdapter[Any] = TypeAdapter(ClientFrame)

CLIENT_FRAMES: tuple[str, ...] = (
    "ping",
    "auth",
    "auth.refresh",
    "message.send",
    "message.edit",
    "message.delete",
    "message.delivered",
    "message.read",
    "typing",
    "sync",
    "presence.subscribe",
    "call.invite",
    "call.ringing",
    "call.accept",
    "call.reject",
    "call.cancel",
    "call.hangup",
    "call.ice",
    "call.update",
    "call.resume",
)

# Every frame the server sends: typed in ``frames`` (one model each).
SERVER_FRAMES: tuple[str, ...] = frames.SERVER_FRAMES

# Every code a client can receive in an ``error`` frame (documented in docs/protocol.md).
ERROR_CODES: tuple[str, ...] = (
    "invalid_json",
    "binary_not_supported",
    "frame_too_large",
    "invalid_frame",
    "unknown_type",
    "not_authenticated",
    "invalid_token",
    "token_expired",
    "token_revoked",
    "user_inactive",
    "not_registered",
    "auth_timeout",
    "already_authenticated",
    "token_user_mismatch",
    "device_not_found",
    "rate_limited",
    "idle_timeout",
    "conversation_not_found",
    "message_not_found",
    "not_message_sender",
    "message_deleted",
    "empty_message",
    "message_too_long",
    "invalid_body",
    "invalid_client_id",
    "client_id_reused",
    "invalid_reply_to",
    "e2ee_required",
    "blocked",
    "consultation_closed",
    "seq_out_of_range",
    "invalid_cursor",
    "too_many_subscriptions",
    "e2ee_not_enabled",
    "device_required",
    "devices_mismatch",
    "invalid_ciphertext",
    "attachment_not_found",
    "attachment_already_used",
    "too_many_attachments",
    "attachment_not_encrypted",
    "attachment_encrypted",
    "attachment_processing",
    "attachment_rejected",
    "user_disabled",
    "auth_unavailable",
    "server_busy",
    "internal_error",
    "invalid_media",
    "invalid_sdp",
    "sdp_too_large",
    "invalid_candidate",
    "candidate_too_large",
    "invalid_reason",
    "group_calls_unavailable",
    "callee_unavailable",
    "call_in_progress",
    "already_in_call",
    "call_not_found",
    "call_action_not_allowed",
    "call_not_ringing",
    "call_not_active",
    "not_call_device",
)


def _clean_ref(value: Any) -> str | None:
    """A ``ref`` to echo back: a short string of valid Unicode, else none."""
    if not isinstance(value, str) or len(value) > MAX_REF:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _encodable(raw: Any) -> bool:
    """False when a decoded frame holds a lone surrogate (a string that is not valid Unicode)."""
    try:
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def peek_ref(text: str | None) -> str | None:
    """The ``ref`` of a small frame, without validating it (for rate-limit errors)."""
    if not text or len(text) > 4096:
        return None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return _clean_ref(raw.get("ref")) if isinstance(raw, dict) else None


def parse(text: str) -> Any:
    """Parse one text frame into its typed model, or raise ApplicationError (with ``ref``)."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ApplicationError("invalid_json", "The frame is not valid JSON.") from exc
    if not isinstance(raw, dict):
        raise ApplicationError("invalid_frame", "A frame is a JSON object.")
    ref = _clean_ref(raw.get("ref"))
    if _SURROGATE_ESCAPE.search(text) and not _encodable(raw):
        raise ApplicationError(
            "invalid_frame", "The frame holds a string that is not valid Unicode.", extra={"ref": ref}
        )
    frame_type = raw.get("type")
    if not isinstance(frame_type, str) or frame_type not in CLIENT_FRAMES:
        raise ApplicationError("unknown_type", "Unknown frame type.", extra={"ref": ref})
    try:
        return _adapter.validate_python(raw)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"][1:]) or "frame", "problem": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)[:10]
        ]
        raise ApplicationError(
            "invalid_frame",
            "The frame does not match its schema.",
            fields={"problems": problems},
            extra={"ref": ref},
        ) from exc
