"""The per-user send limit is shared by every socket and server process and survives a
reconnect and a server restart (counted in Redis); refused sends are not stored."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from messaging.models import Message
from messaging.tests.factories import pair
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ENV = {"HEALTHCHAT_SEND_LIMIT_PER_MINUTE": "4"}


def test_send_limit_spans_sockets_processes_and_restarts(live_server_factory, make_token):
    first, second = live_server_factory(ENV), live_server_factory(ENV)
    patient, _doctor, conversation = pair()
    token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)

    async def send_many(url: str, count: int) -> list[dict]:
        client = await WsClient.connect(url, token)
        replies = [
            await client.send_message(conversation.pk, f"m{i}", client_id=str(uuid.uuid4()))
            for i in range(count)
        ]
        await client.close()
        return replies

    async def scenario() -> tuple[list[dict], list[dict], list[dict]]:
        # Start at the beginning of a one-minute window, so the whole test stays inside it.
        if time.time() % 60 > 30:
            await asyncio.sleep(60 - time.time() % 60 + 0.5)
        on_first = await send_many(first.ws_url, 3)
        on_second = await send_many(second.ws_url, 3)  # another socket on another process
        first.stop()
        restarted = live_server_factory(ENV)  # a new process: the count lives in Redis
        after_restart = await send_many(restarted.ws_url, 1)
        return on_first, on_second, after_restart

    on_first, on_second, after_restart = asyncio.run(scenario())
    assert [r["type"] for r in on_first] == ["ack", "ack", "ack"]
    assert [r["type"] for r in on_second] == ["ack", "error", "error"]
    refused = on_second[1]["error"]
    assert refused["code"] == "rate_limited"
    assert 1 <= refused["retry_after"] <= 61
    assert after_restart[0]["type"] == "error"
    assert after_restart[0]["error"]["code"] == "rate_limited"
    assert Message.objects.filter(conversation=conversation).count() == 4
