"""The frames clients send about calls, typed (registered with messaging's protocol in
``CallsConfig.ready``; handled by ``calls/handlers.py``). SDP and candidates are opaque, bounded by
``calls/validators.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from messaging.protocol import BigInt, ClientFrameModel, FrameData


class CallInviteData(FrameData):
    conversation_id: BigInt
    media: Literal["audio", "video"]
    sdp: str


class CallIdData(FrameData):
    call_id: BigInt


class CallSdpData(FrameData):
    call_id: BigInt
    sdp: str


class CallHangupData(FrameData):
    call_id: BigInt
    reason: Literal["hangup", "failed"] = "hangup"


class CallIceData(FrameData):
    call_id: BigInt
    candidate: dict[str, str | int | float | bool | None] = Field(max_length=8)


class CallInviteFrame(ClientFrameModel):
    type: Literal["call.invite"]
    data: CallInviteData


class CallRingingFrame(ClientFrameModel):
    type: Literal["call.ringing"]
    data: CallIdData


class CallAcceptFrame(ClientFrameModel):
    type: Literal["call.accept"]
    data: CallSdpData


class CallRejectFrame(ClientFrameModel):
    type: Literal["call.reject"]
    data: CallIdData


class CallCancelFrame(ClientFrameModel):
    type: Literal["call.cancel"]
    data: CallIdData


class CallHangupFrame(ClientFrameModel):
    type: Literal["call.hangup"]
    data: CallHangupData


class CallIceFrame(ClientFrameModel):
    type: Literal["call.ice"]
    data: CallIceData


class CallUpdateFrame(ClientFrameModel):
    type: Literal["call.update"]
    data: CallSdpData


class CallResumeFrame(ClientFrameModel):
    type: Literal["call.resume"]
    data: CallIdData


CLIENT_FRAME_MODELS: tuple[type[ClientFrameModel], ...] = (
    CallInviteFrame,
    CallRingingFrame,
    CallAcceptFrame,
    CallRejectFrame,
    CallCancelFrame,
    CallHangupFrame,
    CallIceFrame,
    CallUpdateFrame,
    CallResumeFrame,
)

# The codes the call frames can answer with (``error`` frames; docs/protocol.md).
ERROR_CODES: tuple[str, ...] = (
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
