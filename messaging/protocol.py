"""The WebSocket protocol: one typed model per client frame, a tagged union on ``type``
(the frames the server sends are typed in ``frames``).

Unknown fields are refused (``extra="forbid"``). ``docs/protocol.md`` is checked against
``CLIENT_FRAMES``, ``SERVER_FRAMES`` and ``ERROR_CODES`` by a test, so the two cannot drift.
"""

from __future__ import annotations

import json
import re
import typing
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

import orjson
from django.core.exceptions import ImproperlyConfigured
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


class FrameData(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class Empty(FrameData):
    pass


class AuthData(FrameData):
    token: str = Field(min_length=1, max_length=8192)
    device_id: BigInt | None = None


class AuthRefreshData(FrameData):
    token: str = Field(min_length=1, max_length=8192)


class MentionData(FrameData):
    """A member mentioned in the body: ``body[offset:offset + length]`` (Unicode code points)."""

    user_id: BigInt
    offset: int = Field(ge=0, le=2**31 - 1)
    length: int = Field(ge=1, le=2**31 - 1)


class MessageSendData(FrameData):
    conversation_id: BigInt
    client_id: uuid.UUID
    body: str | None = None
    attachment_ids: list[BigInt] | None = Field(default=None, max_length=10)
    reply_to: BigInt | None = None
    ciphertexts: dict[str, str] | None = Field(default=None, max_length=1000)
    # Checked further (members, within the body, HEALTHCHAT_MENTIONS_MAX) by the send path.
    mentions: list[MentionData] | None = Field(default=None, max_length=1000)


class MessageEditData(FrameData):
    message_id: BigInt
    body: str


class MessageDeleteData(FrameData):
    message_id: BigInt


class ReceiptData(FrameData):
    conversation_id: BigInt
    seq: Seq


class TypingData(FrameData):
    conversation_id: BigInt
    active: bool


class SyncData(FrameData):
    cursor: str | None = Field(default=None, max_length=65536)


class PresenceSubscribeData(FrameData):
    user_ids: list[BigInt] = Field(max_length=500)


class ClientFrameModel(FrameData):
    ref: str | None = Field(default=None, max_length=MAX_REF)


class PingFrame(ClientFrameModel):
    type: Literal["ping"]
    data: Empty = Empty()


class AuthFrame(ClientFrameModel):
    type: Literal["auth"]
    data: AuthData


class AuthRefreshFrame(ClientFrameModel):
    type: Literal["auth.refresh"]
    data: AuthRefreshData


class MessageSendFrame(ClientFrameModel):
    type: Literal["message.send"]
    data: MessageSendData


class MessageEditFrame(ClientFrameModel):
    type: Literal["message.edit"]
    data: MessageEditData


class MessageDeleteFrame(ClientFrameModel):
    type: Literal["message.delete"]
    data: MessageDeleteData


class MessageDeliveredFrame(ClientFrameModel):
    type: Literal["message.delivered"]
    data: ReceiptData


class MessageReadFrame(ClientFrameModel):
    type: Literal["message.read"]
    data: ReceiptData


class TypingFrame(ClientFrameModel):
    type: Literal["typing"]
    data: TypingData


class SyncFrame(ClientFrameModel):
    type: Literal["sync"]
    data: SyncData = SyncData()


class PresenceSubscribeFrame(ClientFrameModel):
    type: Literal["presence.subscribe"]
    data: PresenceSubscribeData


# --- The registry: every app's client frames and error codes, one way ----------------------
# Messaging's own are registered below; other apps register theirs in ``AppConfig.ready``
# (``register_frames``), so this module names no other app's frame. ``ClientFrame``,
# ``CLIENT_FRAMES``, ``SERVER_FRAMES`` and ``ERROR_CODES`` always hold every registered one.
_client_models: dict[str, type[ClientFrameModel]] = {}
_error_codes: list[str] = []
ClientFrame: Any = None
CLIENT_FRAMES: tuple[str, ...] = ()
SERVER_FRAMES: tuple[str, ...] = ()
ERROR_CODES: tuple[str, ...] = ()
_adapter: TypeAdapter[Any] | None = None


def frame_type(model: type[BaseModel]) -> str:
    """A frame model's ``type`` (its ``Literal``)."""
    value: str = typing.get_args(model.model_fields["type"].annotation)[0]
    return value


def register_frames(
    *,
    client: Sequence[type[ClientFrameModel]] = (),
    server: Sequence[type[BaseModel]] = (),
    acks: Sequence[type[BaseModel]] = (),
    error_codes: Sequence[str] = (),
) -> None:
    """Add an app's frames: the ones clients send (``client``: typed models, ``extra="forbid"``),
    the ones the server sends (``server``, and ``acks``: the ``ack`` data of its requests) and
    the error codes its frames can answer. A type or code registered twice by different
    models is a start-up error. The app's handlers: ``messaging.handlers.register``."""
    global ClientFrame, CLIENT_FRAMES, SERVER_FRAMES, ERROR_CODES, _adapter
    for model in client:
        name = frame_type(model)
        if _client_models.get(name, model) is not model:
            raise ImproperlyConfigured(f"two client frames are typed {name!r}")
        _client_models[name] = model
    frames.register_server_frames(server, acks=acks)
    for code in error_codes:
        if code not in _error_codes:
            _error_codes.append(code)
    members: Any = Union[tuple(_client_models.values())]  # noqa: UP007
    ClientFrame = Annotated[members, Field(discriminator="type")]
    _adapter = TypeAdapter(ClientFrame)
    CLIENT_FRAMES = tuple(_client_models)
    SERVER_FRAMES = frames.SERVER_FRAMES
    ERROR_CODES = tuple(_error_codes)


# Every code a client can receive in an ``error`` frame (documented in docs/protocol.md).
register_frames(
    client=(
        PingFrame,
        AuthFrame,
        AuthRefreshFrame,
        MessageSendFrame,
        MessageEditFrame,
        MessageDeleteFrame,
        MessageDeliveredFrame,
        MessageReadFrame,
        TypingFrame,
        SyncFrame,
        PresenceSubscribeFrame,
    ),
    error_codes=(
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
    ),
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
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        # What orjson refuses and ``json`` takes (NaN, integers past 64 bits, deep nesting) is
        # answered as before: ``json`` decides, the frame's model refuses what it must.
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
        assert _adapter is not None
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
