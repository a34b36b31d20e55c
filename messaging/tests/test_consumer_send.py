"""A frame for a client that has already gone is dropped quietly, never an error in the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from channels.exceptions import StopConsumer
from uvicorn.protocols.utils import ClientDisconnected

from messaging.consumers import ChatConsumer

pytestmark = pytest.mark.django_db(transaction=True)


async def gone(message: dict[str, Any]) -> None:
    raise ClientDisconnected  # what uvicorn raises when the socket closed under a send


async def hang_up() -> dict[str, Any]:
    raise StopConsumer


@pytest.mark.parametrize("how", ["send_frame", "send_error", "fan_out"])
async def test_a_frame_to_a_disconnected_client_is_dropped_without_a_traceback(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = ChatConsumer()
    # The consumer's own loop installs the server's send (here one whose client has gone).
    await consumer({"type": "websocket", "path": "/ws/v1/", "headers": []}, hang_up, gone)
    with caplog.at_level(logging.DEBUG):
        if how == "send_frame":
            await consumer.send_frame(
                {"type": "sync.done", "ref": "r1", "data": {"cursor": "0", "more": False}}
            )
        elif how == "send_error":
            await consumer.send_error("rate_limited", "Too many frames.", "r1")
        else:  # a live event fanned out to the user's sockets goes straight to the server's send
            await consumer.base_send({"type": "websocket.send", "text": "{}"})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert any("client has disconnected" in r.getMessage() for r in caplog.records)
