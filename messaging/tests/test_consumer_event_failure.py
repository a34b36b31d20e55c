"""A channel-layer event the socket fails to handle is logged (and so reported to Sentry) without
the event's text, and the socket goes on with the next event (issue 21): the consumer's event
drains (``_drain`` with the project's layer, ``_channel_events`` with another) log inside
``core.logs.hiding`` the event's strings, as ``receive`` does for a failing frame handler."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from channels.exceptions import StopConsumer

from messaging.consumers import ChatConsumer
from tests.sentry_ingest import CANARIES, CANARY_FILE, CANARY_PHONE, CANARY_TEXT

pytestmark = pytest.mark.django_db(transaction=True)

BODY = f"{CANARY_TEXT}: call me on {CANARY_PHONE}, the scan is {CANARY_FILE}"
FAILED = "channel event client.event failed"


class BrokenSendError(RuntimeError):
    """What the server's send raises here: its message quotes the frame it could not write."""


async def broken_send(message: dict[str, Any]) -> None:
    raise BrokenSendError(f"could not write {message.get('text')}")


def message_new(n: int) -> dict[str, Any]:
    message = {"id": n, "conversation_id": 7, "seq": n, "kind": "text", "body": BODY, "mentions": []}
    return {
        "type": "client.event",
        "frame": {"type": "message.new", "data": {"message": message}, "event": n},
    }


@pytest.mark.parametrize("layer", ["project", "in_memory"])
async def test_a_failing_event_is_logged_without_its_text_and_the_next_one_is_handled(
    layer: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    if layer == "in_memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    stop = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await stop.wait()
        raise StopConsumer

    consumer = ChatConsumer()
    running = asyncio.create_task(
        consumer({"type": "websocket", "path": "/ws/v1/", "headers": []}, receive, broken_send)
    )
    for _ in range(200):
        if getattr(consumer, "channel_name", None):
            break
        await asyncio.sleep(0.01)
    # The project's layer hands events to an inbox drained by ``_drain``; another layer's go
    # through ``_channel_events``.
    assert hasattr(consumer.channel_layer, "new_inbox") == (layer == "project")
    with caplog.at_level(logging.DEBUG):
        await consumer.channel_layer.send(consumer.channel_name, message_new(1))
        await consumer.channel_layer.send(consumer.channel_name, message_new(2))
        for _ in range(500):
            failed = [record for record in caplog.records if record.getMessage() == FAILED]
            if len(failed) == 2:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(running, 10)

    assert len(failed) == 2, caplog.text  # the second event was handled after the first failed
    for record in failed:
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
        assert record.exc_text is not None
        # The error's quote of the frame (the event's strings) is hidden.
        assert "BrokenSendError: could not write [redacted]" in record.exc_text, record.exc_text
    text = caplog.text.lower()
    assert "brokensenderror" in text
    leaks = [canary for canary in CANARIES if canary.lower() in text]
    assert leaks == [], caplog.text
