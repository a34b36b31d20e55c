"""``messaging.raw_pipeline`` against the real PostgreSQL: parameters in text form, answers as
psycopg loads them, a failing statement's error, one round trip for many statements."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from django.db import connection

from messaging.loop_writer import connection_params
from messaging.raw_pipeline import PipelineError, RawPipeline, _convert, dump

pytestmark = pytest.mark.django_db(transaction=True)


def test_placeholders_become_numbered_parameters() -> None:
    query, order = _convert("SELECT %(a)s::int, %(b)s, %(a)s, '100%%'")
    assert query == b"SELECT $1::int, $2, $1, '100%'"
    assert order == ["a", "b"]


def test_text_forms() -> None:
    moment = dt.datetime(2026, 11, 24, 17, 30, 1, 250000, tzinfo=dt.UTC)
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert dump(None) is None
    assert dump(True) == b"t"
    assert dump(False) == b"f"
    assert dump(42) == b"42"
    assert dump("text") == b"text"
    assert dump(key) == b"12345678-1234-5678-1234-567812345678"
    assert dump(moment) == b"2026-11-24T17:30:01.250000+00:00"
    assert dump([1, None, 3]) == b"{1,NULL,3}"
    assert dump(['a"b', "c\\d", None, "NULL"]) == b'{"a\\"b","c\\\\d",NULL,"NULL"}'
    with pytest.raises(TypeError):
        dump(dt.datetime(2026, 1, 1))  # naive: refused, never guessed
    with pytest.raises(TypeError):
        dump(1.5)


async def _pipe() -> tuple[psycopg.AsyncConnection[Any], RawPipeline]:
    conn = await psycopg.AsyncConnection.connect(**connection_params(), autocommit=True)
    return conn, RawPipeline(conn)


async def test_values_go_and_come_back_unchanged() -> None:
    conn, pipe = await _pipe()
    try:
        texts = ['a"b', "c\\d", "{x,y}", "NULL", "日本語 🩺", "", " spaced "]
        moment = dt.datetime(2026, 11, 24, 17, 30, 1, 250000, tzinfo=dt.UTC)
        key = uuid.uuid4()
        rows, numbers = await pipe.round_trip(
            [
                (
                    "SELECT %(texts)s::text[], %(key)s::uuid, %(at)s::timestamptz, %(flag)s::bool",
                    {"texts": [*texts, None], "key": key, "at": moment, "flag": True},
                ),
                ("SELECT * FROM unnest(%(ids)s::bigint[]) ORDER BY 1", {"ids": [3, 1, 2]}),
            ]
        )
        assert rows == [([*texts, None], key, moment, True)]
        assert numbers == [(1,), (2,), (3,)]
        # the same statements again: prepared once, answered the same
        (again,) = await pipe.round_trip(
            [("SELECT * FROM unnest(%(ids)s::bigint[]) ORDER BY 1", {"ids": [5]})]
        )
        assert again == [(5,)]
    finally:
        await conn.close()


async def test_a_failing_statement_raises_and_rolls_the_transaction_back() -> None:
    conn, pipe = await _pipe()
    table = f"raw_pipeline_{uuid.uuid4().hex[:8]}"
    try:
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
        with pytest.raises(PipelineError, match="duplicate key"):
            await pipe.round_trip(
                [
                    ("BEGIN", None),
                    (f"INSERT INTO {table} VALUES (%(id)s)", {"id": 1}),
                    (f"INSERT INTO {table} VALUES (%(id)s)", {"id": 1}),
                    ("COMMIT", None),
                ]
            )
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        await pipe.round_trip([("ROLLBACK", None)])
        (rows,) = await pipe.round_trip([(f"SELECT count(*) FROM {table}", None)])
        assert rows == [(0,)]  # nothing of the failed transaction stayed
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_a_dead_connection_raises() -> None:
    conn, pipe = await _pipe()
    pid = conn.info.backend_pid
    db = connection.settings_dict
    dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
        await other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    with pytest.raises((psycopg.Error, PipelineError)):
        await pipe.round_trip([("SELECT 1", None)])
    await conn.close()


async def test_without_preparation_nothing_is_prepared_on_the_server() -> None:
    """``DATABASE_PREPARE_THRESHOLD=0`` (a PgBouncer that cannot keep named statements):
    unnamed statements, the same answers."""
    conn = await psycopg.AsyncConnection.connect(**connection_params(), autocommit=True)
    pipe = RawPipeline(conn, prepare=False)
    try:
        for _ in range(2):
            (rows,) = await pipe.round_trip(
                [("SELECT * FROM unnest(%(ids)s::bigint[]) ORDER BY 1", {"ids": [2, 1]})]
            )
            assert rows == [(1,), (2,)]
        (prepared,) = await pipe.round_trip([("SELECT count(*) FROM pg_prepared_statements", None)])
        assert prepared == [(0,)]
    finally:
        await conn.close()


async def test_the_loop_writer_follows_the_preparation_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from messaging import loop_writer

    options = connection.settings_dict["OPTIONS"]
    assert loop_writer._prepares() is (options.get("prepare_threshold") is not None)
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {**options, "prepare_threshold": None})
    assert loop_writer._prepares() is False


def test_without_preparation_the_loop_writer_sends_no_startup_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Generic plans are asked at connect only when statements are prepared: a
    transaction-pooling PgBouncer refuses an ``options`` startup parameter it does not ignore
    (tests/test_pgbouncer_live.py runs the loop writer through one)."""
    from messaging import loop_writer

    options = connection.settings_dict["OPTIONS"]
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {**options, "prepare_threshold": 5})
    assert "plan_cache_mode=force_generic_plan" in loop_writer.connection_params()["options"]
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {**options, "prepare_threshold": None})
    assert "options" not in loop_writer.connection_params()
