"""Service-level guarantees: gapless seq under concurrency, idempotency, event log, sync cursor."""

import threading
import uuid

import pytest
from django.db import connection

from healthchat.errors import ApplicationError
from messaging import selectors, services
from messaging.models import Event, Message
from messaging.tests.factories import pair


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_get_gapless_unique_seqs():
    patient, doctor, conversation = pair()
    errors: list[BaseException] = []

    def worker(user, n):
        try:
            for i in range(n):
                services.message_send(
                    sender=user, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=f"{i}"
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(u, 25)) for u in (patient, doctor, patient, doctor)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = list(
        Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True)
    )
    assert seqs == list(range(1, 101))
    numbers = list(
        Event.objects.filter(conversation=conversation).order_by("number").values_list("number", flat=True)
    )
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_client_ids_make_one_row():
    patient, _doctor, conversation = pair()
    client_id = uuid.uuid4()
    results = []

    def worker():
        try:
            results.append(
                services.message_send(
                    sender=patient, conversation_id=conversation.pk, client_id=client_id, body="x"
                ).message.pk
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert len(results) == 5
    assert Message.objects.filter(conversation=conversation).count() == 1
    assert Message.objects.get().seq == 1


@pytest.mark.django_db
def test_client_id_reused_for_another_conversation_is_refused():
    patient, _doctor, conversation = pair()
    _p2, _d2, other = pair()
    client_id = uuid.uuid4()
    services.message_send(sender=patient, conversation_id=conversation.pk, client_id=client_id, body="x")
    with pytest.raises(ApplicationError) as info:
        services.message_send(sender=patient, conversation_id=other.pk, client_id=client_id, body="x")
    assert info.value.code in ("client_id_reused", "conversation_not_found")


@pytest.mark.django_db
def test_sync_replays_news_edits_deletes_and_receipts_in_order():
    patient, doctor, conversation = pair()
    _frames, cursor, _ = selectors.sync_events(user=doctor, cursor=None)
    m1 = services.message_send(
        sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="one"
    ).message
    services.message_send(sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="two")
    services.message_edit(user=patient, message_id=m1.pk, body="one!")
    services.receipt_mark(user=doctor, conversation_id=conversation.pk, seq=2, kind="read")
    services.message_delete(user=patient, message_id=m1.pk)
    frames, cursor2, more = selectors.sync_events(user=doctor, cursor=cursor)
    assert not more
    kinds = [f["type"] for f in frames]
    assert kinds == ["message.new", "message.new", "message.updated", "receipt", "message.updated"]
    assert frames[3]["data"] == {
        "conversation_id": conversation.pk,
        "user_id": doctor.pk,
        "read_seq": 2,
        "delivered_seq": 2,
    }
    # The updates carry the message's current state (deleted: no content).
    assert frames[2]["data"]["message"]["deleted"] is True
    assert frames[2]["data"]["message"]["body"] == ""
    assert selectors.sync_events(user=doctor, cursor=cursor2)[0] == []


@pytest.mark.django_db
def test_sync_batches_and_more_flag(monkeypatch):
    patient, doctor, conversation = pair()
    _f, cursor, _ = selectors.sync_events(user=doctor, cursor=None)
    monkeypatch.setattr(selectors, "SYNC_BATCH", 7)
    for i in range(20):
        services.message_send(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=str(i)
        )
    seen = []
    more = True
    rounds = 0
    while more:
        frames, cursor, more = selectors.sync_events(user=doctor, cursor=cursor)
        seen.extend(f["data"]["message"]["seq"] for f in frames)
        rounds += 1
    assert seen == list(range(1, 21))
    assert rounds == 3


@pytest.mark.django_db
def test_receipts_are_monotonic_and_bounded():
    patient, doctor, conversation = pair()
    for i in range(3):
        services.message_send(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=str(i)
        )
    services.receipt_mark(user=doctor, conversation_id=conversation.pk, seq=3, kind="delivered")
    before = Event.objects.count()
    out = services.receipt_mark(user=doctor, conversation_id=conversation.pk, seq=1, kind="delivered")
    assert out["delivered_seq"] == 3
    assert Event.objects.count() == before  # nothing new to tell
    with pytest.raises(ApplicationError) as info:
        services.receipt_mark(user=doctor, conversation_id=conversation.pk, seq=4, kind="read")
    assert info.value.code == "seq_out_of_range"


@pytest.mark.django_db
def test_message_send_query_count(django_assert_num_queries):
    patient, doctor, conversation = pair()
    # savepoint, lock+allocate, check+write+recipients, release
    with django_assert_num_queries(4):
        services.message_send(
            sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
        )
    # a patient in a direct conversation: + the consultation read-only rule (payments)
    with django_assert_num_queries(5):
        services.message_send(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
        )


@pytest.mark.django_db
def test_group_commit_isolates_refused_sends_and_keeps_order(django_assert_max_num_queries):
    patient, doctor, conversation = pair()
    _p2, _d2, other = pair()
    dup = uuid.uuid4()
    items = [
        {"sender": patient, "conversation_id": conversation.pk, "client_id": uuid.uuid4(), "body": "one"},
        {"sender": patient, "conversation_id": other.pk, "client_id": uuid.uuid4(), "body": "not mine"},
        {"sender": doctor, "conversation_id": conversation.pk, "client_id": dup, "body": "two"},
        {"sender": patient, "conversation_id": conversation.pk, "client_id": uuid.uuid4(), "body": "   "},
        {"sender": doctor, "conversation_id": conversation.pk, "client_id": dup, "body": "two again"},
        {"sender": patient, "conversation_id": conversation.pk, "client_id": uuid.uuid4(), "body": "three"},
    ]
    results = services.message_send_many(items=items)
    assert [type(r).__name__ for r in results] == [
        "SendResult",
        "NotFound",
        "SendResult",
        "ApplicationError",
        "SendResult",
        "SendResult",
    ]
    assert results[1].code == "conversation_not_found"
    assert results[3].code == "empty_message"
    assert results[4].created is False
    assert results[4].message.pk == results[2].message.pk
    assert [results[i].message.seq for i in (0, 2, 5)] == [1, 2, 3]
    seqs = list(Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", "body"))
    assert seqs == [(1, "one"), (2, "two"), (3, "three")]
    assert not Message.objects.filter(conversation=other).exists()
