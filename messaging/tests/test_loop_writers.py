"""``HEALTHCHAT_LOOP_WRITERS``: with two loop writers a send arriving while a batch is being
written starts its own batch at once on the second connection instead of waiting for the first
batch's COMMIT; seq stays gapless and in lock order, nothing goes to the worker thread. With one
(the default) the send waits and the same writer writes it next."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from messaging import batching
from messaging.models import Message
from messaging.tests.factories import pair, send_item, send_together

pytestmark = pytest.mark.django_db(transaction=True)


async def _while_a_batch_is_written(batcher: batching.SendBatcher) -> list[int]:
    """Send ``a``; while the first loop writer writes it, send ``b`` to the same conversation."""
    patient, doctor, conversation = await sync_to_async(pair)()
    await send_together(batcher, [send_item(patient, conversation.pk, "warm")])  # its kind learned
    first = asyncio.ensure_future(batcher.submit(send_item(patient, conversation.pk, "a")))
    for _ in range(100_000):  # the first loop writer has sent a's round trip
        if batcher.loop_writer.busy:
            break
        await asyncio.sleep(0)
    assert batcher.loop_writer.busy
    second = await batcher.submit(send_item(doctor, conversation.pk, "b"))
    a = await first
    assert a.created
    assert second.created
    rows = await sync_to_async(
        lambda: list(
            Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", "body")
        )
    )()
    assert rows == [(1, "warm"), (2, "a"), (3, "b")]  # b waited for a's lock: gapless, in order
    return [a.data["seq"], second.data["seq"]]


async def test_two_loop_writers_write_the_next_batch_at_once(
    settings: Any, queued_pushes: list[list[int]]
) -> None:
    settings.HEALTHCHAT_LOOP_WRITERS = 2
    batcher = batching.SendBatcher()
    try:
        assert await _while_a_batch_is_written(batcher) == [2, 3]
        first, second = batcher.loop_writers
        assert (first.batches, second.batches) == (2, 1)  # b did not wait for a's batch to end
        assert first.handed_over == second.handed_over == 0
    finally:
        await batcher.close()


async def test_one_loop_writer_writes_the_next_batch_after(
    settings: Any, queued_pushes: list[list[int]]
) -> None:
    settings.HEALTHCHAT_LOOP_WRITERS = 1
    batcher = batching.SendBatcher()
    try:
        assert await _while_a_batch_is_written(batcher) == [2, 3]
        assert len(batcher.loop_writers) == 1
        assert (batcher.loop_writer.batches, batcher.loop_writer.handed_over) == (3, 0)
    finally:
        await batcher.close()
