"""Validation rules for calls, shared by socket frames, services and the models' constraints.

SDP and ICE candidates are relayed opaque: the server only bounds their size and refuses what
cannot be a session description (it never parses or rewrites them).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from core.errors import ApplicationError

MEDIA = ("audio", "video")
STATES = ("ringing", "accepted", "ended", "missed", "rejected", "cancelled", "failed", "busy")
ACTIVE_STATES = ("ringing", "accepted")
FINAL_STATES = tuple(s for s in STATES if s not in ACTIVE_STATES)
# Why a call ended (``Call.end_reason``).
END_REASONS = (
    "hangup",  # a participant hung up an accepted call
    "media_failed",  # a participant reported that the media never connected (state failed)
    "timeout",  # nobody answered within CALL_RING_TIMEOUT_SECONDS
    "rejected",  # the callee declined
    "cancelled",  # the caller gave up before an answer
    "busy",  # the callee was in another call
    "glare",  # both sides called each other at once: this call lost
    "caller_disconnected",  # the caller's socket closed while it was ringing
    "connection_lost",  # a participant's socket stayed away longer than the grace period
)
PARTICIPANT_ROLES = ("caller", "callee")
PARTICIPANT_STATES = ("ringing", "joined", "declined", "missed", "left")

# An SDP offer/answer for audio+video with the usual codecs is 3-8 KB; 16 KB leaves room for
# simulcast and many candidates, and stays well under the socket's frame limit.
SDP_MAX_LENGTH = 16 * 1024
# One candidate line is ~100-250 characters; the whole JSON object is bounded.
CANDIDATE_MAX_LENGTH = 2048
CANDIDATE_MAX_KEYS = 8
JSON_SAFE_INTEGER = 2**53 - 1  # numbers every client (and the channel layer) carries exactly
_SDP_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def validate_media(value: str) -> str:
    if value not in MEDIA:
        raise ApplicationError("invalid_media", "media must be audio or video.")
    return value


def validate_sdp(value: str) -> str:
    """A session description: bounded, starts with ``v=0``, text lines only."""
    if not isinstance(value, str) or not value.strip():
        raise ApplicationError("invalid_sdp", "An SDP session description is required.")
    if len(value) > SDP_MAX_LENGTH:
        raise ApplicationError("sdp_too_large", f"An SDP may have at most {SDP_MAX_LENGTH} characters.")
    if not value.lstrip().startswith("v=0") or _SDP_CONTROL.search(value):
        raise ApplicationError("invalid_sdp", "This is not an SDP session description.")
    return value


def validate_candidate(value: Any) -> dict[str, Any]:
    """An ICE candidate as WebRTC gives it (``{candidate, sdpMid, sdpMLineIndex, ...}``):
    a flat JSON object of bounded size. Its content is not interpreted."""
    if not isinstance(value, dict) or not value or len(value) > CANDIDATE_MAX_KEYS:
        raise ApplicationError(
            "invalid_candidate", f"A candidate is a JSON object with 1 to {CANDIDATE_MAX_KEYS} fields."
        )
    for field in value.values():
        if isinstance(field, dict | list) or (
            isinstance(field, int | float)
            and not isinstance(field, bool)
            and not (math.isfinite(field) and abs(field) <= JSON_SAFE_INTEGER)
        ):
            raise ApplicationError(
                "invalid_candidate", "A candidate's fields are strings, numbers (|n| < 2^53) or null."
            )
    if len(json.dumps(value, separators=(",", ":"))) > CANDIDATE_MAX_LENGTH:
        raise ApplicationError(
            "candidate_too_large", f"A candidate may have at most {CANDIDATE_MAX_LENGTH} characters."
        )
    return value
