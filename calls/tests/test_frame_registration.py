"""The call frames belong to calls: typed in ``calls/protocol.py`` and ``calls/frames.py``,
registered with messaging's protocol and dispatch table the one way every app registers its
frames; messaging's code names none of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from django.core.exceptions import ImproperlyConfigured

from calls import frames as call_frames
from calls import handlers as call_handlers
from calls import protocol as call_protocol
from messaging import frames, handlers, protocol

MESSAGING = Path(protocol.__file__).resolve().parent


def test_the_call_frames_are_registered_by_calls() -> None:
    client_types = [protocol.frame_type(m) for m in call_protocol.CLIENT_FRAME_MODELS]
    assert client_types
    assert set(client_types) <= set(protocol.CLIENT_FRAMES)
    server_types = [protocol.frame_type(m) for m in call_frames.SERVER_FRAME_MODELS]
    assert set(server_types) <= set(protocol.SERVER_FRAMES)
    assert all(
        frames.SERVER_FRAME_MODELS[t] is m
        for t, m in zip(server_types, call_frames.SERVER_FRAME_MODELS, strict=True)
    )
    assert set(call_protocol.ERROR_CODES) <= set(protocol.ERROR_CODES)
    for frame_type, handler in call_handlers.HANDLERS.items():
        assert handlers.HANDLERS[frame_type] is handler
    assert call_handlers.socket_closed in handlers.DISCONNECT_HOOKS
    # A call request's ack is typed: the ack frame accepts a call, as it did before.
    call = {
        "id": 1,
        "conversation_id": 2,
        "caller_id": 3,
        "media": "audio",
        "state": "ringing",
        "end_reason": None,
        "created_at": "2026-01-01T00:00:00Z",
        "ring_expires_at": "2026-01-01T00:00:30Z",
        "answered_at": None,
        "ended_at": None,
        "duration": 0,
        "participants": [],
    }
    frames.validate_server_frame({"type": "ack", "ref": "r", "data": {"call": call}})


def test_messaging_names_no_call_frame() -> None:
    for path in MESSAGING.glob("*.py"):
        text = path.read_text()
        assert '"call.' not in text, path.name
        assert "class Call" not in text, path.name


def test_a_frame_type_taken_twice_is_a_start_up_error() -> None:
    class Impostor(protocol.ClientFrameModel):
        type: Literal["call.invite"]
        data: protocol.Empty

    with pytest.raises(ImproperlyConfigured):
        protocol.register_frames(client=[Impostor])

    async def other(conn: Any, frame: Any) -> None:
        return None

    with pytest.raises(ImproperlyConfigured):
        handlers.register({"call.invite": other})
    assert protocol.parse('{"type": "call.ringing", "data": {"call_id": 1}}').type == "call.ringing"
