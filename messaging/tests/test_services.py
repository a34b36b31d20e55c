"""Service-level guarantees: gapless seq under concurrency, idempotency, event log, sync cursor."""

import threading
import uuid

import pytest
from django.db import connection

from core.errors import ApplicationError
from messaging import selectors, services
from messaging.models import Event, Message
from messaging.send_rules import WrittenHook, registry
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
    monkeypatch.setattr(selectors.sync, "SYNC_BATCH", 7)  # read there
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
    # savepoint, lock+allocate, check+write+recipients, the push outbox hook (written hook), release.
    # The hook's one statement was, before, three queries after the commit (savepoint, the same
    # INSERT ... SELECT, release: notifications' message_committed receiver), uncounted here.
    with django_assert_num_queries(5):
        services.message_send(
            sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
        )
    # a patient in a direct conversation: + the consultation read-only rule (payments)
    with django_assert_num_queries(6):
        services.message_send(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
        )


@pytest.mark.django_db
def test_group_commit_isolates_refused_sends_and_keeps_order(django_assert_max_num_queries):
    patient, doctor, conversation = pair()
    _p2, _d2, other = pair()
    dup = uuid.uuid4()
    items = [
        services.SendRequest(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="one"
        ),
        services.SendRequest(
            sender=patient, conversation_id=other.pk, client_id=uuid.uuid4(), body="not mine"
        ),
        services.SendRequest(sender=doctor, conversation_id=conversation.pk, client_id=dup, body="two"),
        services.SendRequest(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="   "
        ),
        services.SendRequest(sender=doctor, conversation_id=conversation.pk, client_id=dup, body="two again"),
        services.SendRequest(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="three"
        ),
    ]
    results = services.message_send_many(requests=items)
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


@pytest.mark.django_db
def test_group_commit_frames_match_the_stored_rows(django_assert_max_num_queries):
    """The batched statement builds each ack/`message.new` payload without reading the row
    back: it must equal what the selectors make of the stored row."""
    patient, doctor, conversation = pair()
    _p2, doctor2, other = pair()
    first = services.message_send(
        sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="first"
    ).message
    items = [
        services.SendRequest(
            sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="a"
        ),
        services.SendRequest(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body="b",
            reply_to=first.pk,
        ),
        services.SendRequest(sender=doctor2, conversation_id=other.pk, client_id=uuid.uuid4(), body="c"),
    ]
    # lock, consultation rule, the send statement, push outbox; + savepoints
    with django_assert_max_num_queries(8):
        results = services.message_send_many(requests=items)
    for result in results:
        assert isinstance(result, services.SendResult)
        stored = Message.objects.get(pk=result.data["id"])
        assert result.data == selectors.message_data(stored)
    assert [r.data["seq"] for r in results] == [2, 3, 1]
    events = Event.objects.filter(conversation=conversation).order_by("number")
    assert [(e.number, e.message_id) for e in events] == [
        (1, first.pk),
        (2, results[0].data["id"]),
        (3, results[1].data["id"]),
    ]


@pytest.mark.django_db
def test_group_commit_refusals_are_per_send():
    patient, doctor, conversation = pair()
    outsider, _d, _c = pair()
    _p3, _d3, elsewhere = pair()
    foreign_message = services.message_send(
        sender=_p3, conversation_id=elsewhere.pk, client_id=uuid.uuid4(), body="x"
    ).message
    services.block_user(user=outsider, blocked_id=doctor.pk)
    items = [
        services.SendRequest(
            sender=outsider, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
        ),
        services.SendRequest(sender=patient, conversation_id=10**9, client_id=uuid.uuid4(), body="x"),
        services.SendRequest(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body="x",
            reply_to=foreign_message.pk,
        ),
        services.SendRequest(
            sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="ok"
        ),
    ]
    results = services.message_send_many(requests=items)
    assert [getattr(r, "code", None) for r in results[:3]] == [
        "conversation_not_found",
        "conversation_not_found",
        "invalid_reply_to",
    ]
    assert isinstance(results[3], services.SendResult)
    assert results[3].data["seq"] == 1
    services.block_user(user=patient, blocked_id=doctor.pk)
    blocked = services.message_send_many(
        requests=[
            services.SendRequest(
                sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
            )
        ]
    )
    assert getattr(blocked[0], "code", None) == "blocked"
    assert list(Message.objects.filter(conversation=conversation).values_list("seq", flat=True)) == [1]


@pytest.mark.django_db(transaction=True)
def test_group_commit_redoes_the_batch_when_a_concurrent_send_takes_its_client_id(monkeypatch):
    """A send of the same client_id to ANOTHER conversation, committed while the batch's
    statement waits on it: the batch's numbers would leave a gap, so the batch is undone and
    redone send by send (this one is refused, the others are stored, seqs stay gapless)."""
    patient, doctor, conversation = pair()
    _p2, doctor2, _other = pair()
    services.conversation_open_direct(user=patient, peer_id=doctor2.pk)
    mine = services.conversation_open_direct(user=patient, peer_id=doctor2.pk)[0]
    client_id = uuid.uuid4()
    started = threading.Event()
    release = threading.Event()

    def concurrent() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(
                        "INSERT INTO messaging_message (conversation_id, seq, sender_id, client_id, kind,"
                        " body, created_at) VALUES (%s, 1, %s, %s, 'text', 'x', now())",
                        [mine.pk, patient.pk, client_id],
                    )
                    cursor.execute(
                        "UPDATE messaging_conversation SET last_seq = 1, last_event = 1 WHERE id = %s",
                        [mine.pk],
                    )
                started.set()
                release.wait(10)
        finally:
            connection.close()

    redone = []
    one_by_one = services.send_batch._write_one_by_one
    monkeypatch.setattr(
        services.send_batch, "_write_one_by_one", lambda *a: redone.append(len(a[0])) or one_by_one(*a)
    )
    thread = threading.Thread(target=concurrent)
    thread.start()
    assert started.wait(10)
    threading.Timer(0.5, release.set).start()
    results = services.message_send_many(
        requests=[
            services.SendRequest(
                sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="a"
            ),
            services.SendRequest(
                sender=patient, conversation_id=conversation.pk, client_id=client_id, body="b"
            ),
            services.SendRequest(
                sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="c"
            ),
        ]
    )
    thread.join()
    assert redone == [3]
    assert getattr(results[1], "code", None) == "client_id_reused"
    assert [r.data["seq"] for r in (results[0], results[2])] == [1, 2]
    assert list(
        Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", "body")
    ) == [(1, "a"), (2, "c")]
    numbers = list(Event.objects.filter(conversation=conversation).values_list("number", flat=True))
    assert sorted(numbers) == [1, 2]


@pytest.mark.django_db
def test_a_failing_batch_hook_never_undoes_the_batch(monkeypatch, caplog):
    """The fast path runs the batch hooks without savepoints; when one fails, the batch is
    redone send by send with each hook in a savepoint: every message is stored, once."""
    patient, doctor, conversation = pair()
    calls: list[int] = []

    def broken(written):
        calls.append(len(written))
        raise RuntimeError("hook down")

    items = [
        services.SendRequest(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="a"
        ),
        services.SendRequest(
            sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="b"
        ),
    ]
    hook = WrittenHook(name="test.broken", statement=broken, orm=broken)
    with registry.replaced(hooks=[hook]), caplog.at_level("ERROR", logger="healthchat.messaging"):
        results = services.message_send_many(requests=items)
    assert [r.data["seq"] for r in results] == [1, 2]
    assert calls == [2, 2]  # the fast attempt, then the guarded redo
    assert list(
        Message.objects.filter(conversation=conversation).order_by("seq").values_list("body", flat=True)
    ) == [
        "a",
        "b",
    ]
    assert "batch hook failed" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_group_commit_statements_are_prepared_once_with_a_generic_plan():
    """DATABASE_PREPARE_THRESHOLD: after a few batches on a connection the send statement is a
    prepared statement run with a generic plan (not re-parsed and re-planned per batch), and the
    plan mode stays local to the batch's transaction."""
    patient, doctor, conversation = pair()
    assert connection.settings_dict["OPTIONS"]["prepare_threshold"] == 5
    for i in range(8):
        results = services.message_send_many(
            requests=[
                services.SendRequest(
                    sender=patient,
                    conversation_id=conversation.pk,
                    client_id=uuid.uuid4(),
                    body=f"{i}",
                ),
                services.SendRequest(
                    sender=doctor,
                    conversation_id=conversation.pk,
                    client_id=uuid.uuid4(),
                    body=f"{i}",
                ),
            ]
        )
        assert [r.data["seq"] for r in results] == [2 * i + 1, 2 * i + 2]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE %s AND statement NOT LIKE %s",  # the batch's, not a single send's
            ["%WITH input AS%", "%-- one send%"],
        )
        rows = cursor.fetchall()
        cursor.execute("SHOW plan_cache_mode")
        mode = cursor.fetchone()[0]
    assert len(rows) == 1
    generic, custom = rows[0]
    assert generic >= 8 - 5
    assert custom == 0
    assert mode == "auto"  # SET LOCAL: other transactions on the connection plan as usual


@pytest.mark.django_db(transaction=True)
def test_sends_refused_by_the_limit_are_not_stored_and_leave_no_gap(monkeypatch):
    """The send limit answers while the batch's transaction locks (``refusals``, asked once
    the locks are held): refused sends get the limit's error and nothing of them is written,
    on the fast path and when the batch is redone send by send."""
    patient, doctor, conversation = pair()
    limited = ApplicationError("rate_limited", "Too many messages; retry later.", status=429)
    asked: list[int] = []

    def refusals() -> dict[int, Exception]:
        asked.append(1)
        return {1: limited}

    def items() -> list[services.SendRequest]:
        return [
            services.SendRequest(
                sender=user, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body
            )
            for user, body in ((patient, "a"), (patient, "b"), (doctor, "c"))
        ]

    results = services.message_send_many(requests=items(), refusals=refusals)
    assert results[1] is limited
    assert [results[0].data["seq"], results[2].data["seq"]] == [1, 2]
    # The slow path (other databases, a batch redone send by send) drops them too.
    slow = services.send_batch._write_one_by_one
    redone: list[int] = []

    def conflict(*args: object, **kwargs: object) -> None:
        raise services.BatchConflict

    monkeypatch.setattr(services.send_batch, "_plain_batch_results", conflict)
    monkeypatch.setattr(
        services.send_batch, "_write_one_by_one", lambda *a: redone.append(len(a[0])) or slow(*a)
    )
    again = services.message_send_many(requests=items(), refusals=refusals)
    assert redone == [2]
    assert again[1] is limited
    assert [again[0].data["seq"], again[2].data["seq"]] == [3, 4]
    assert list(
        Message.objects.filter(conversation=conversation).order_by("seq").values_list("body", flat=True)
    ) == ["a", "c", "a", "c"]
    assert len(asked) == 3  # once per attempt: fast path, then the failed fast path and its redo


@pytest.mark.django_db(transaction=True)
def test_a_conversation_deleted_after_the_process_remembered_it_is_not_found():
    """The one-round-trip path relies on remembered conversation kinds; a conversation deleted
    since then gets conversation_not_found (the send statement finds no row) and is forgotten."""
    patient, _doctor, conversation = pair()
    other_patient, _d2, other = pair()
    assert services.message_send_many(
        requests=[
            services.SendRequest(
                sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
            )
        ]
    )[0].created
    assert conversation.pk in services.known_kinds
    Message.objects.filter(conversation=conversation).delete()
    Event.objects.filter(conversation=conversation).delete()
    gone = conversation.pk
    conversation.delete()
    results = services.message_send_many(
        requests=[
            services.SendRequest(sender=patient, conversation_id=gone, client_id=uuid.uuid4(), body="y"),
            services.SendRequest(
                sender=other_patient, conversation_id=other.pk, client_id=uuid.uuid4(), body="z"
            ),
        ]
    )
    assert getattr(results[0], "code", None) == "conversation_not_found"
    assert results[1].created
    assert gone not in services.known_kinds


@pytest.mark.django_db(transaction=True)
def test_a_batch_on_a_connection_the_server_closed_is_retried_on_a_new_one():
    """A pooled connection PostgreSQL terminated while idle (restart, failover,
    pg_terminate_backend) costs the next batch nothing: it is written once on a new connection."""
    import psycopg

    patient, doctor, conversation = pair()
    first = services.message_send_many(
        requests=[
            services.SendRequest(
                sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="1"
            )
        ]
    )
    assert first[0].created
    old_pid = connection.connection.info.backend_pid
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"],
        user=settings["USER"],
        dbname=settings["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [old_pid])
    results = services.message_send_many(
        requests=[
            services.SendRequest(
                sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="2"
            ),
            services.SendRequest(
                sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="3"
            ),
        ]
    )
    assert [r.data["seq"] for r in results] == [2, 3]
    assert connection.connection.info.backend_pid != old_pid
    assert list(
        Message.objects.filter(conversation=conversation).order_by("seq").values_list("body", flat=True)
    ) == ["1", "2", "3"]
