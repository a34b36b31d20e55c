"""The batch send statement as the writers run it (a generic plan): no CTE read once per row of
another (issue 26: the generic plan's nested loops read one CTE per row of another, 160,000
tuple reads for a batch of 200), and its answer for a whole batch."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from messaging.models import Conversation, Event, Membership, Message
from messaging.services import send_batch_params
from messaging.services.statements import LOCK_BATCH_SQL, send_statement
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db(transaction=True)

TYPES = "int[], bigint[], bigint[], uuid[], text[], bigint[], bool[], jsonb[], timestamptz"
NAMES = ("ord", "conv", "sender", "cid", "body", "reply", "enc", "ment", "now")


def _numbered_sql() -> str:
    sql = send_statement()
    for position, name in enumerate(NAMES, 1):
        sql = sql.replace(f"%({name})s", f"${position}")
    return sql


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(_nodes(child))
    return out


def _batch(size: int) -> list[tuple[int, int]]:
    """``size`` direct conversations: (conversation id, the patient's id)."""
    return [(conversation.pk, patient.pk) for patient, _doctor, conversation in (pair() for _ in range(size))]


def _generic_plan(sends: list[tuple[int, int]]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the send statement for ``sends`` with the generic plan the writers
    use (rolled back)."""
    params = {
        "ord": list(range(len(sends))),
        "conv": [c for c, _ in sends],
        "sender": [s for _, s in sends],
        "cid": [uuid.uuid4() for _ in sends],
        "body": [f"the knee is better today {i}" for i in range(len(sends))],
        "reply": [None] * len(sends),
        "enc": [False] * len(sends),
        "ment": [None] * len(sends),
        "now": timezone.now(),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute(f"PREPARE plan_check({TYPES}) AS {_numbered_sql()}")
        cursor.execute(LOCK_BATCH_SQL, {"ids": sorted({c for c, _ in sends})})
        client = psycopg.ClientCursor(connection.connection)  # the arguments as literals
        client.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE plan_check("
            + ", ".join(f"%s::{t.strip()}" for t in TYPES.split(","))
            + ")",
            [params[name] for name in NAMES],
        )
        answer = client.fetchone()
        assert answer is not None
        raw = answer[0]
        plan: dict[str, Any] = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        cursor.execute("DEALLOCATE plan_check")
        transaction.set_rollback(True)
    return plan


def test_generic_plan_reads_each_cte_once_per_batch() -> None:
    sends = _batch(12) * 2  # two sends per conversation: numbered 1 and 2 in each
    plan = _generic_plan(sends)
    rescanned = [
        (node.get("CTE Name"), node["Actual Loops"])
        for node in _nodes(plan)
        if node["Node Type"] == "CTE Scan" and node["Actual Loops"] > 1
    ]
    assert rescanned == []


def test_generic_plan_reads_only_the_batchs_conversations_and_memberships() -> None:
    """A send reads its conversation and memberships, not the tables: the generic plan joined
    them by hashing every conversation and membership, per execution (issue 26, session 10:
    most of a one-send transaction's execution, and growing with the tables)."""
    conversations = _batch(30)
    for sends in (conversations[:1], conversations[:4]):
        plan = _generic_plan(sends)
        read = [
            (node["Relation Name"], node["Node Type"], node["Actual Rows"] * node["Actual Loops"])
            for node in _nodes(plan)
            if node.get("Relation Name") in ("messaging_conversation", "messaging_membership")
        ]
        assert {name for name, _, _ in read} == {"messaging_conversation", "messaging_membership"}
        # a direct conversation has two members: at most both per send, per scan
        assert [r for r in read if r[2] > 2 * len(sends)] == []


def test_a_batch_numbers_each_conversation_gaplessly_with_its_events() -> None:
    conversations = _batch(3)
    sends = conversations * 3
    from messaging import services

    now = timezone.now()
    prepared = [
        services.Prepared(
            index,
            services.SendRequest(
                sender=_user(sender), conversation_id=conversation, client_id=uuid.uuid4(), body=f"m{index}"
            ),
            uuid.uuid4(),
            [],
            f"m{index}",
        )
        for index, (conversation, sender) in enumerate(sends)
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(LOCK_BATCH_SQL, {"ids": sorted(c for c, _ in conversations)})
        cursor.execute(send_statement(), send_batch_params(prepared, now))
        rows = sorted(cursor.fetchall())
    assert [row[0] for row in rows] == list(range(9))
    assert all(row[1] is not None for row in rows)
    for conversation, sender in conversations:
        mine = [row for row in rows if sends[row[0]][0] == conversation]
        assert [row[2] for row in mine] == [1, 2, 3]  # seq in arrival order
        assert [row[3] for row in mine] == [1, 2, 3]  # event numbers
        assert mine[0][4] is not None
        assert sorted(mine[0][4]) == sorted(
            Membership.objects.filter(conversation_id=conversation).values_list("user_id", flat=True)
        )
        assert [row[4] for row in mine[1:]] == [None, None]
        stored = list(
            Message.objects.filter(conversation_id=conversation).order_by("seq").values_list("id", "seq")
        )
        assert stored == [(row[1], row[2]) for row in mine]
        events = list(
            Event.objects.filter(conversation_id=conversation)
            .order_by("number")
            .values_list("message_id", "number")
        )
        assert events == [(row[1], row[3]) for row in mine]
        cursors = Membership.objects.get(conversation_id=conversation, user_id=sender)
        assert (cursors.read_seq, cursors.delivered_seq) == (3, 3)
        counters = Conversation.objects.get(pk=conversation)
        assert (counters.last_seq, counters.last_event) == (3, 3)


def test_events_after_other_events_take_the_next_numbers() -> None:
    """The events are written from the messages' ``RETURNING`` (migration 0016): their numbers
    are the seq plus the events the conversation logged besides messages (two numbers here,
    taken as a receipt or a pin takes its number; their rows do not matter to the statement)."""
    from messaging import services
    from messaging.services.counters import allocate

    ((conversation, sender),) = _batch(1)
    prepared = [
        services.Prepared(
            index,
            services.SendRequest(
                sender=_user(sender), conversation_id=conversation, client_id=uuid.uuid4(), body="m"
            ),
            uuid.uuid4(),
            [],
            f"m{index}",
        )
        for index in range(2)
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        base_seq, base_event = Conversation.objects.values_list("last_seq", "last_event").get(pk=conversation)
        allocate(conversation, message=False)
        allocate(conversation, message=False)
        cursor.execute(LOCK_BATCH_SQL, {"ids": [conversation]})
        cursor.execute(send_statement(), send_batch_params(prepared, timezone.now()))
        rows = sorted(cursor.fetchall())
    assert [(row[2], row[3]) for row in rows] == [
        (base_seq + 1, base_event + 3),
        (base_seq + 2, base_event + 4),
    ]
    events = list(
        Event.objects.filter(conversation_id=conversation, kind="message.new", number__gt=base_event)
        .order_by("number")
        .values_list("message_id", "number")
    )
    assert events == [(row[1], row[3]) for row in rows]
    assert Conversation.objects.values_list("last_seq", "last_event").get(pk=conversation) == (
        base_seq + 2,
        base_event + 4,
    )


def test_a_message_that_loses_its_insert_gets_no_event() -> None:
    """Migration 0016: no foreign key from an event to its message; the statement writes the
    events from its messages' ``RETURNING``. Two sends of one client_id in a batch: the second
    loses its insert (ON CONFLICT), so there is one message and one event, no event without a
    message, and the answer carries no message id (the writers roll back and redo the batch)."""
    from messaging import services

    ((conversation, sender),) = _batch(1)
    cid = uuid.uuid4()
    prepared = [
        services.Prepared(
            index,
            services.SendRequest(sender=_user(sender), conversation_id=conversation, client_id=cid, body="m"),
            cid,
            [],
            f"m{index}",
        )
        for index in range(2)
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(LOCK_BATCH_SQL, {"ids": [conversation]})
        cursor.execute(send_statement(), send_batch_params(prepared, timezone.now()))
        rows = sorted(cursor.fetchall())
        messages = list(Message.objects.filter(conversation_id=conversation).values_list("id", flat=True))
        events = list(
            Event.objects.filter(conversation_id=conversation, kind="message.new").values_list(
                "message_id", "number"
            )
        )
        transaction.set_rollback(True)
    assert [row[1] for row in rows] == [None, None]
    assert len(messages) == 1
    assert events == [(messages[0], 1)]


def test_the_send_paths_foreign_keys_are_the_ones_migration_0016_keeps() -> None:
    """The database checks message -> sender (and reply_to) per send; not message ->
    conversation, event -> conversation, event -> message, and events have no message index."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT conrelid::regclass::text, a.attname FROM pg_constraint k
            JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)
            WHERE k.contype = 'f' AND k.conrelid IN ('messaging_message'::regclass, 'messaging_event'::regclass)
            """
        )
        keys = sorted(cursor.fetchall())
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'messaging_event'")
        indexes = sorted(row[0] for row in cursor.fetchall())
    assert keys == [("messaging_message", "reply_to_id"), ("messaging_message", "sender_id")]
    assert indexes == ["event_number_unique", "messaging_event_pkey"]


def _user(pk: int) -> Any:
    from accounts.models import User

    return User.objects.get(pk=pk)


def test_the_send_paths_tables_leave_room_for_hot_updates_and_the_search_index_merges_small() -> None:
    """Migration 0014 (issue 26): fillfactor on the tables every send updates in place, and the
    GIN pending list's limit on the search index (kept by ``search_language`` rebuilds)."""
    from messaging import search_index

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)",
            [["messaging_conversation", "messaging_membership", search_index.INDEX]],
        )
        options = {name: sorted(opts or []) for name, opts in cursor.fetchall()}
        cursor.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'messaging_membership'::regclass AND indnatts = 1"
            " AND indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = 'messaging_membership'::regclass"
            " AND attname = 'conversation_id')"
        )
        (single_column,) = cursor.fetchone() or (None,)
    assert options == {
        "messaging_conversation": ["fillfactor=50"],
        "messaging_membership": ["fillfactor=70"],
        search_index.INDEX: [f"gin_pending_list_limit={search_index.GIN_PENDING_LIST_KB}"],
    }
    assert single_column == 0
