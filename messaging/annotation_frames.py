"""The frames of reactions and pins (issue 24), typed: what clients send (``reaction.add``,
``reaction.remove``, ``message.pin``, ``message.unpin``), their ``ack`` data and the logged events
every device of the members who may read the message gets (``reaction.added``,
``reaction.removed``, ``message.pinned``, ``message.unpinned``; replayed by ``sync``).
Registered with messaging's protocol in ``MessagingConfig.ready``; handled by
``annotation_handlers``. Mentions ride ``message.send`` (``protocol.MessageSendData.mentions``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .frames import LoggedEventFrame, ReactionSummary, WireModel
from .protocol import BigInt, ClientFrameModel, FrameData


# --- Client frames --------------------------------------------------------------------------------
class ReactionData(FrameData):
    message_id: BigInt
    emoji: str = Field(min_length=1, max_length=16)


class MessageIdData(FrameData):
    message_id: BigInt


class ReactionAddFrame(ClientFrameModel):
    type: Literal["reaction.add"]
    data: ReactionData


class ReactionRemoveFrame(ClientFrameModel):
    type: Literal["reaction.remove"]
    data: ReactionData


class MessagePinFrame(ClientFrameModel):
    type: Literal["message.pin"]
    data: MessageIdData


class MessageUnpinFrame(ClientFrameModel):
    type: Literal["message.unpin"]
    data: MessageIdData


# --- Acks -------------------------------------------------------------------------------------------
class ReactionAck(WireModel):
    """``reaction.add`` / ``reaction.remove``: the message's reactions now (``changed``: false
    when it was already so)."""

    conversation_id: int
    message_id: int
    seq: int
    user_id: int
    emoji: str
    reactions: list[ReactionSummary]
    changed: bool


class PinAck(WireModel):
    """``message.pin`` / ``message.unpin`` (``changed``: false when it was already so)."""

    conversation_id: int
    message_id: int
    seq: int
    user_id: int
    pinned: bool
    changed: bool


# --- Events -----------------------------------------------------------------------------------------
class ReactionEventData(WireModel):
    conversation_id: int
    message_id: int
    seq: int = Field(ge=1, description="the message's seq")
    user_id: int = Field(description="who reacted (or took the reaction back)")
    emoji: str
    reactions: list[ReactionSummary] = Field(description="the message's reactions after the change")


class PinEventData(WireModel):
    conversation_id: int
    message_id: int
    seq: int = Field(ge=1, description="the message's seq")
    user_id: int = Field(description="who pinned or unpinned it")


class ReactionAddedFrame(LoggedEventFrame):
    type: Literal["reaction.added"]
    data: ReactionEventData


class ReactionRemovedFrame(LoggedEventFrame):
    type: Literal["reaction.removed"]
    data: ReactionEventData


class MessagePinnedFrame(LoggedEventFrame):
    type: Literal["message.pinned"]
    data: PinEventData


class MessageUnpinnedFrame(LoggedEventFrame):
    type: Literal["message.unpinned"]
    data: PinEventData


CLIENT_FRAME_MODELS: tuple[type[ClientFrameModel], ...] = (
    ReactionAddFrame,
    ReactionRemoveFrame,
    MessagePinFrame,
    MessageUnpinFrame,
)
SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (
    ReactionAddedFrame,
    ReactionRemovedFrame,
    MessagePinnedFrame,
    MessageUnpinnedFrame,
)
ACK_MODELS: tuple[type[BaseModel], ...] = (ReactionAck, PinAck)
ERROR_CODES: tuple[str, ...] = (
    "invalid_reaction",
    "e2ee_reaction",
    "reaction_not_allowed",
    "pins_full",
    "pin_not_allowed",
    "not_group_admin",
    "invalid_mentions",
    "mention_not_member",
    "e2ee_mention",
)
