"""The consultation rule asked by the event loop's batch writer: in the batch's own round trip;
a refusal hands the batch to the thread's writer, which stores the others and not the refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from messaging import batching
from messaging.models import Message
from messaging.tests.factories import send_item, send_together

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_rule_refusal_is_handed_over_and_nothing_of_it_stored(
    stripe_fake: Any, queued_pushes: list[list[int]]
) -> None:
    from payments.models import Consultation
    from payments.tests.factories import completed, people

    def consultation_closed() -> tuple[Any, Any, int, Any]:
        patient, doctor = people()
        consultation = completed(patient, doctor, stripe_fake)
        return patient, doctor, consultation.conversation_id, consultation

    patient, doctor, conversation_id, consultation = await sync_to_async(consultation_closed)()
    batcher = batching.SendBatcher()
    await send_together(batcher, [send_item(doctor, conversation_id, "warm")])
    await send_together(batcher, [send_item(patient, conversation_id, "inside the window")])
    assert batcher.loop_writer.batches == 2  # the rule asked on the loop, in the batch's round trip

    await sync_to_async(Consultation.objects.filter(pk=consultation.pk).update)(
        closes_at=timezone.now() - dt.timedelta(minutes=1)
    )
    results = await send_together(
        batcher,
        [send_item(patient, conversation_id, "refused"), send_item(doctor, conversation_id, "still fine")],
    )
    assert batcher.loop_writer.handed_over == 1
    assert getattr(results[0], "code", None) == "consultation_closed"
    assert results[1].created
    assert results[1].data["seq"] == 3
    bodies = await sync_to_async(
        lambda: list(
            Message.objects.filter(conversation_id=conversation_id)
            .order_by("seq")
            .values_list("body", flat=True)
        )
    )()
    assert bodies == ["warm", "inside the window", "still fine"]
    await batcher.loop_writer.close()


async def test_a_first_send_to_a_conversation_not_seen_before_is_ruled_too(
    stripe_fake: Any, queued_pushes: list[list[int]]
) -> None:
    """The loop writer reads an unknown conversation's kind before the batch, so the reach
    rule is asked for its very first send as well."""
    from messaging import services
    from payments.models import Consultation
    from payments.tests.factories import completed, people

    def consultation_closed() -> tuple[Any, Any, int]:
        patient, doctor = people()
        consultation = completed(patient, doctor, stripe_fake)
        Consultation.objects.filter(pk=consultation.pk).update(
            closes_at=timezone.now() - dt.timedelta(minutes=1)
        )
        return patient, doctor, consultation.conversation_id

    patient, _doctor, conversation_id = await sync_to_async(consultation_closed)()
    services.known_kinds.pop(conversation_id, None)
    batcher = batching.SendBatcher()
    (result,) = await send_together(batcher, [send_item(patient, conversation_id, "too late")])
    assert getattr(result, "code", None) == "consultation_closed"
    assert batcher.loop_writer.handed_over == 1  # refused on the loop, answered by the thread's writer
    count = await sync_to_async(
        Message.objects.filter(conversation_id=conversation_id, body="too late").count
    )()
    assert count == 0
    await batcher.loop_writer.close()
