"""The event loop's batch writer (``messaging/loop_writer.py``) against the real PostgreSQL and
Redis: the common batch is written on the loop with every guarantee of the thread's writer, and
every other batch is handed over whole, nothing of it stored twice or lost."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from accounts.tests.factories import DeviceFactory
from core import realtime
from messaging import batching, loop_writer, services
from messaging.models import Event, Membership, Message
from messaging.tests.factories import pair, send_item, send_together
from notifications.models import PushDelivery

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_common_batch_is_written_on_the_loop(queued_pushes: list[list[int]]) -> None:
    patient, doctor, conversation = await sync_to_async(pair)()
    phone: Any = await sync_to_async(DeviceFactory)(
        user=doctor, fcm_token="doctor-phone", installation_id=None
    )
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(realtime.user_group(doctor.pk), channel)
    batcher = batching.SendBatcher()
    services.known_kinds.pop(conversation.pk, None)

    first = await send_together(batcher, [send_item(patient, conversation.pk, "first")])
    # A conversation not seen before: its kind is read first, then the batch is written here.
    assert batcher.loop_writer.batches == 1
    assert conversation.pk in services.known_kinds

    results = await send_together(batcher, [send_item(patient, conversation.pk, f"m{i}") for i in range(5)])
    assert batcher.loop_writer.batches == 2
    assert batcher.loop_writer.handed_over == 0
    assert [r.data["seq"] for r in first + results] == [1, 2, 3, 4, 5, 6]
    assert all(r.created for r in results)

    def stored() -> tuple[list[tuple[int, str]], list[int], tuple[int, int], int]:
        messages = list(
            Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", "body")
        )
        events = list(
            Event.objects.filter(conversation=conversation)
            .order_by("number")
            .values_list("number", flat=True)
        )
        mine = Membership.objects.get(conversation=conversation, user=patient)
        return (
            messages,
            events,
            (mine.read_seq, mine.delivered_seq),
            PushDelivery.objects.filter(device=phone).count(),
        )

    messages, events, cursors, pushes = await sync_to_async(stored)()
    assert messages == [(1, "first")] + [(i + 2, f"m{i}") for i in range(5)]
    assert events == [1, 2, 3, 4, 5, 6]  # one event per message, gapless
    assert cursors == (6, 6)  # the sender has read what it sent
    assert pushes == 6  # the outbox rows, written in the batch's transaction
    assert sum(len(ids) for ids in queued_pushes) == 6  # and queued after the commit

    received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(6)]
    assert [e["frame"]["data"]["message"]["seq"] for e in received] == [1, 2, 3, 4, 5, 6]
    assert received[-1]["frame"]["data"]["message"]["body"] == "m4"
    await batcher.loop_writer.close()


async def test_a_resent_client_id_is_handed_over_and_returns_the_original(
    queued_pushes: list[list[int]],
) -> None:
    patient, _doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    await send_together(batcher, [send_item(patient, conversation.pk, "warm")])
    client_id = uuid.uuid4()
    (original,) = await send_together(batcher, [send_item(patient, conversation.pk, "once", client_id)])
    assert batcher.loop_writer.batches == 2

    again = await send_together(
        batcher,
        [send_item(patient, conversation.pk, "once", client_id), send_item(patient, conversation.pk, "new")],
    )
    assert batcher.loop_writer.handed_over == 1  # the whole batch went to the thread's writer
    assert not again[0].created
    assert again[0].data["id"] == original.data["id"]
    assert again[1].created
    assert again[1].data["seq"] == original.data["seq"] + 1
    count = await sync_to_async(Message.objects.filter(conversation=conversation).count)()
    assert count == 3
    await batcher.loop_writer.close()


async def test_a_killed_connection_hands_the_batch_over_and_the_next_one_reconnects(
    queued_pushes: list[list[int]],
) -> None:
    patient, _doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    await send_together(batcher, [send_item(patient, conversation.pk, "warm")])
    await send_together(batcher, [send_item(patient, conversation.pk, "on the loop")])
    writer = batcher.loop_writer
    assert writer.batches == 2
    assert writer._conn is not None
    pid = writer._conn.info.backend_pid
    db = connection.settings_dict
    dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
        await other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])

    lost = await send_together(batcher, [send_item(patient, conversation.pk, f"x{i}") for i in range(3)])
    assert writer.handed_over == 1  # the dead connection: the thread's writer stored them
    assert [r.data["seq"] for r in lost] == [3, 4, 5]
    after = await send_together(batcher, [send_item(patient, conversation.pk, "reconnected")])
    assert writer.batches == 3
    assert writer._conn.info.backend_pid != pid
    assert after[0].data["seq"] == 6
    seqs = await sync_to_async(
        lambda: list(
            Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True)
        )
    )()
    assert seqs == [1, 2, 3, 4, 5, 6]  # each once, gapless
    await writer.close()


async def test_errors_of_single_sends_come_back_from_the_loop(queued_pushes: list[list[int]]) -> None:
    patient, _doctor, conversation = await sync_to_async(pair)()
    stranger, _, other = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    await send_together(
        batcher, [send_item(patient, conversation.pk, "warm"), send_item(stranger, other.pk, "warm")]
    )
    results = await send_together(
        batcher,
        [
            send_item(stranger, conversation.pk, "not a member"),
            send_item(patient, conversation.pk, "   "),
            send_item(patient, conversation.pk, "fine"),
        ],
    )
    assert batcher.loop_writer.batches == 2
    assert batcher.loop_writer.handed_over == 0
    assert getattr(results[0], "code", None) == "conversation_not_found"
    assert getattr(results[1], "code", None) == "empty_message"
    assert results[2].created
    assert results[2].data["seq"] == 2
    await batcher.loop_writer.close()


async def test_turned_off_every_batch_takes_the_thread(settings: Any, queued_pushes: list[list[int]]) -> None:
    settings.HEALTHCHAT_LOOP_WRITER = False
    patient, _doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    for _ in range(3):
        await send_together(batcher, [send_item(patient, conversation.pk, "m")])
    assert batcher.loop_writer.batches == 0
    assert batcher.loop_writer.handed_over == 0
    assert not loop_writer.enabled()


async def test_a_transaction_left_open_is_never_joined(queued_pushes: list[list[int]]) -> None:
    """A batch cancelled mid-transaction (a task cancelled at shutdown) leaves its connection
    inside a transaction: the next batch starts on a new connection, never inside it."""
    patient, _doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    await send_together(batcher, [send_item(patient, conversation.pk, "warm")])
    await send_together(batcher, [send_item(patient, conversation.pk, "on the loop")])
    writer = batcher.loop_writer
    assert writer._conn is not None
    left = writer._conn
    await left.execute("BEGIN")
    await left.execute(
        "UPDATE messaging_conversation SET last_seq = 1000, last_event = 1000 WHERE id = %s",
        [conversation.pk],
    )

    (result,) = await send_together(batcher, [send_item(patient, conversation.pk, "after")])
    assert writer.batches == 3
    assert result.data["seq"] == 3  # not 1001: the half-done transaction was dropped, not committed
    assert left.closed
    seqs = await sync_to_async(
        lambda: list(
            Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True)
        )
    )()
    assert seqs == [1, 2, 3]
    await writer.close()


async def test_a_conversation_that_does_not_exist_is_handed_over(queued_pushes: list[list[int]]) -> None:
    """Its kind cannot be read: the thread's writer answers (not found), the others in the
    batch are stored there, and the next batch is written on the loop again."""
    patient, _doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    services.known_kinds.pop(conversation.pk, None)
    missing = conversation.pk + 10_000
    results = await send_together(
        batcher,
        [send_item(patient, missing, "nowhere"), send_item(patient, conversation.pk, "here")],
    )
    assert batcher.loop_writer.handed_over == 1
    assert batcher.loop_writer.batches == 0
    assert getattr(results[0], "code", None) == "conversation_not_found"
    assert results[1].created
    assert missing not in services.known_kinds

    (after,) = await send_together(batcher, [send_item(patient, conversation.pk, "again")])
    assert batcher.loop_writer.batches == 1
    assert after.data["seq"] == 2
    await batcher.loop_writer.close()


async def test_a_batch_on_the_loop_leaves_no_cyclic_garbage(queued_pushes: list[list[int]]) -> None:
    """Each batch runs in its own task; touching Django's ``connection`` there built a new
    DatabaseWrapper per batch (a dozen objects in reference cycles): CPU per batch, and the
    garbage that made the collector's pauses ~20 ms long on a busy server."""
    patient, _doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    for _ in range(3):  # connection, kinds, prepared statements: made once
        await send_together(batcher, [send_item(patient, conversation.pk, "warm")])
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(20):
            await send_together(batcher, [send_item(patient, conversation.pk, f"m{i}")])
        gc.collect()
        wrappers = [o for o in gc.garbage if type(o).__name__ == "DatabaseWrapper"]
        garbage = len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert batcher.loop_writer.batches == 23
    assert wrappers == []
    assert garbage < 20  # fewer than one object per batch (none is expected)
    await batcher.loop_writer.close()


TRICKY_BODIES = [
    'quotes " and "" and \\" inside',
    "backslashes \\ \\\\ \\n (not a newline) and a real\nnewline\ttab",
    "braces {a,b} , commas , NULL and null",
    "NULL",
    "  leading and trailing spaces are the validator's business  ",
    "unicode: é ü ß 日本語 مرحبا 🩺💊",
    "'single' quotes; DROP TABLE messaging_message; --",
    "$1 %s %(body)s %% placeholders",
]


async def test_bodies_are_stored_exactly_as_sent(queued_pushes: list[list[int]]) -> None:
    """The loop writer sends parameters in PostgreSQL's text form (``raw_pipeline.dump``):
    quotes, backslashes, braces, commas, the word NULL and any Unicode come back unchanged."""
    patient, _doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    results = await send_together(batcher, [send_item(patient, conversation.pk, b) for b in TRICKY_BODIES])
    assert batcher.loop_writer.batches == 1
    assert batcher.loop_writer.handed_over == 0
    assert all(r.created for r in results)
    stored = await sync_to_async(
        lambda: list(
            Message.objects.filter(conversation=conversation).order_by("seq").values_list("body", flat=True)
        )
    )()
    expected = [r.data["body"] for r in results]
    assert stored == expected
    assert [b.strip() for b in TRICKY_BODIES] == [s.strip() for s in stored]
    await batcher.loop_writer.close()
