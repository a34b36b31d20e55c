"""The frames the server sends about calls, typed (registered with messaging's protocol in
``CallsConfig.ready``): the call as clients see it (``calls.selectors.call_data``), the ``ack``
data of the call requests, and the ``call.*`` events."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from messaging.frames import EventFrame, WireModel


class CallParticipant(WireModel):
    user_id: int
    role: Literal["caller", "callee"]
    state: Literal["ringing", "joined", "declined", "missed", "left"]
    joined_at: datetime | None
    left_at: datetime | None


class Call(WireModel):
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


class CallAck(WireModel):
    """``call.invite``, ``call.accept``, ``call.reject``, ``call.cancel``, ``call.hangup``,
    ``call.resume``."""

    call: Call


class CallInviteData(WireModel):
    call: Call
    sdp: str


class CallData(WireModel):
    call: Call


class CallIdData(WireModel):
    call_id: int


class CallUserData(WireModel):
    call_id: int
    user_id: int


class CallSdpData(WireModel):
    call_id: int
    user_id: int
    sdp: str


class CallCancelData(WireModel):
    call_id: int
    reason: Literal["cancelled", "caller_disconnected", "glare"]


class CallHangupData(WireModel):
    call_id: int
    user_id: int
    reason: Literal["hangup", "failed"]


class CallIceData(WireModel):
    call_id: int
    user_id: int
    candidate: dict[str, str | int | float | bool | None]


class CallPeerDisconnectedData(WireModel):
    call_id: int
    user_id: int
    grace_seconds: float


class CallInviteFrame(EventFrame):
    type: Literal["call.invite"]
    data: CallInviteData


class CallRingingFrame(EventFrame):
    type: Literal["call.ringing"]
    data: CallUserData


class CallAcceptFrame(EventFrame):
    type: Literal["call.accept"]
    data: CallSdpData


class CallRejectFrame(EventFrame):
    type: Literal["call.reject"]
    data: CallUserData


class CallCancelFrame(EventFrame):
    type: Literal["call.cancel"]
    data: CallCancelData


class CallHangupFrame(EventFrame):
    type: Literal["call.hangup"]
    data: CallHangupData


class CallIceFrame(EventFrame):
    type: Literal["call.ice"]
    data: CallIceData


class CallUpdateFrame(EventFrame):
    type: Literal["call.update"]
    data: CallSdpData


class CallMissedFrame(EventFrame):
    type: Literal["call.missed"]
    data: CallData


class CallAnsweredElsewhereFrame(EventFrame):
    type: Literal["call.answered_elsewhere"]
    data: CallIdData


class CallEndedFrame(EventFrame):
    type: Literal["call.ended"]
    data: CallData


class CallPeerDisconnectedFrame(EventFrame):
    type: Literal["call.peer_disconnected"]
    data: CallPeerDisconnectedData


class CallPeerResumedFrame(EventFrame):
    type: Literal["call.peer_resumed"]
    data: CallUserData


# The call frames the server sends, in the order the protocol documents them.
SERVER_FRAME_MODELS: tuple[type[BaseModel], ...] = (
    CallInviteFrame,
    CallRingingFrame,
    CallAcceptFrame,
    CallRejectFrame,
    CallCancelFrame,
    CallHangupFrame,
    CallIceFrame,
    CallUpdateFrame,
    CallMissedFrame,
    CallAnsweredElsewhereFrame,
    CallEndedFrame,
    CallPeerDisconnectedFrame,
    CallPeerResumedFrame,
)
ACK_MODELS: tuple[type[BaseModel], ...] = (CallAck,)
