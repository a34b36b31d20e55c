"""Group commit on the event loop: the common batch of sends without a worker thread.

``services.message_send_many`` writes a batch in a worker thread through Django's connection.
Under light load that costs more than the database does: the hop to the thread and back, and
the thread and the event loop taking turns at the GIL each time a database answer arrives
(measured at an offered 500 msgs/s: 0.6 ms to start the thread, and a batch that needs 1.4 ms
of database time took 3.6 ms in the thread). The loop writer runs the same statements on an
async psycopg connection that this event loop owns, driven through ``raw_pipeline`` (libpq's
pipeline mode, one wait per round trip): BEGIN, the locks, the send statement and the
registered reach rules' statements (``messaging.send_rules``: the same statements the thread's
writer runs); then, with the send limit's answer, the written hooks' statements and COMMIT.

It takes the common batch only: plaintext sends without attachments, no client_id twice (every
registered rule and hook is a statement: the registry refuses any other at start-up). The kind of a conversation this
process has not written to before is read first (one round trip, once: kinds never change), so
the rules are asked in the batch's first round trip. Anything else (a conversation that does
not exist or is gone, a rule refusing a send, a re-sent client_id, a
send losing its insert to a concurrent one, any database error) rolls the transaction back and
hands the whole batch to the worker thread's writer, which handles every case. A batch whose
COMMIT may or may not have happened (the connection died) is handed over too: its sends come
back as the originals (client_id). Nothing is acked before the COMMIT is answered.

One batch at a time uses the connection; a batch that finds it busy takes the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from django.conf import settings
from django.db import close_old_connections
from django.db import connection as django_connection
from django.utils import timezone

from core import latency_probe
from core.errors import ApplicationError

from . import services
from . import validators as v
from .raw_pipeline import PipelineError, RawPipeline
from .send_rules import BatchStatement, registry

logger = logging.getLogger("healthchat.messaging")

Results = list[services.SendResult | Exception]


def enabled() -> bool:
    # The engine from the settings, not ``connection.vendor``: on the event loop Django's
    # connection handler is context-local, so touching ``connection`` in each batch's task built
    # a new DatabaseWrapper (a dozen objects in reference cycles) per batch: CPU, and garbage
    # that made the collector's young-generation passes ~20 ms long.
    return bool(getattr(settings, "HEALTHCHAT_LOOP_WRITER", True)) and _is_postgresql(
        settings.DATABASES["default"]["ENGINE"]
    )


def _is_postgresql(engine: str) -> bool:
    return engine.endswith(".postgresql") or engine.endswith(".postgresql_psycopg2")


class LoopWriter:
    """One per event loop (``batching.SendBatcher`` owns it)."""

    def __init__(self) -> None:
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._pipe: RawPipeline | None = None  # the round trips on ``_conn``
        self._loop: asyncio.AbstractEventLoop | None = None
        self.busy = False
        self.batches = 0  # written here (tests, benchmarks)
        self.handed_over = 0  # given to the worker thread's writer

    def takes(self, requests: Sequence[services.SendRequest]) -> bool:
        """Whether this batch is one the loop writer may try (cheap checks, before any I/O)."""
        if self.busy or not enabled():
            return False
        return not any(request.attachment_ids for request in requests)

    async def write(
        self,
        requests: Sequence[services.SendRequest],
        limit: asyncio.Future[dict[int, Any]],
        limit_wait: float,
    ) -> Results | None:
        """Each request's result, in order; ``None``: not written here (nothing of it stored), the
        caller hands the batch to the worker thread. ``limit`` answers the send limit's refusals
        (``{index: error}``), waited for at most ``limit_wait`` seconds once the locks are sent."""
        self.busy = True
        try:
            results = await self._write(requests, limit, limit_wait)
        finally:
            self.busy = False
        if results is None:
            self.handed_over += 1
        else:
            self.batches += 1
        return results

    async def _write(
        self,
        requests: Sequence[services.SendRequest],
        limit: asyncio.Future[dict[int, Any]],
        limit_wait: float,
    ) -> Results | None:
        results: list[services.SendResult | Exception | None] = [None] * len(requests)
        prepared: list[services.Prepared] = []
        seen: set[tuple[int, uuid.UUID]] = set()
        for index, item in enumerate(requests):
            try:
                cid = v.validate_client_id(item.client_id)
                text = services.plain_text(item.body, [])
            except ApplicationError as exc:
                results[index] = exc
                continue
            key = (item.sender.pk, cid)
            if key in seen:  # the same send twice in one batch: the thread's writer answers it
                return None
            seen.add(key)
            prepared.append(services.Prepared(index, item, cid, [], text))
        if prepared:
            conn = await self._connection()
            if conn is None or self._pipe is None:
                return None
            pipe = self._pipe
            try:
                if not await self._learn_kinds(pipe, {e.request.conversation_id for e in prepared}):
                    return None  # a conversation that does not exist: the thread's writer answers
                done = await self._transaction(pipe, prepared, results, limit, limit_wait)
            except Exception:  # a database error, or a rule or hook that failed
                logger.warning("loop writer: batch handed to the worker thread", exc_info=True)
                # A new connection for the next batch: whatever state this one is in (a dead
                # server, a cached plan a migration invalidated) is not carried over.
                await self._drop(conn)
                return None
            if done is None:
                await self._roll_back(conn, pipe)
                return None
            fan_outs, answers, committed = done
            services.fan_out_all(fan_outs)
            loop = asyncio.get_running_loop()
            for stmt, hook_rows in answers:  # may block (a Celery task queued): in a thread
                if hook_rows:
                    loop.run_in_executor(None, _run_answer, stmt, hook_rows)
            if services.message_committed.has_listeners():  # receivers may block: in a thread
                loop.run_in_executor(None, _announce, committed)
        return [
            r if r is not None else ApplicationError("internal_error", "Not processed.", status=500)
            for r in results
        ]

    async def _transaction(
        self,
        pipe: RawPipeline,
        prepared: list[services.Prepared],
        results: list[services.SendResult | Exception | None],
        limit: asyncio.Future[dict[int, Any]],
        limit_wait: float,
    ) -> (
        tuple[list[services.FanOut], list[tuple[BatchStatement, list[Any]]], list[services.Committed]] | None
    ):
        """The batch's transaction; ``None``: roll back and hand over. Committed: the message
        fan-outs to publish, the batch hooks' answers to run and the ``message_committed``
        announcements."""
        # The send limit's Redis round trip overlaps the database's: its answer is awaited once
        # the batch is written, before the COMMIT. A refusal (a flood) hands the batch over: the
        # thread's writer leaves the refused sends out.
        if limit.done() and (limit.cancelled() or limit.exception() is not None or limit.result()):
            return None
        asked = {e.request.conversation_id for e in prepared}
        plain = prepared
        now = timezone.now()
        rules = self._rule_statements(plain)
        # Round trip 1: BEGIN, the locks, the send statement, the reach rules.
        first = await pipe.round_trip(
            [
                ("BEGIN", None),
                (services.LOCK_BATCH_SQL, {"ids": sorted(asked)}),
                (services.send_statement(), services.send_batch_params(plain, now)),
                *((stmt.sql, stmt.params) for stmt in rules),
            ]
        )
        latency_probe.mark("rt1")
        locked = {int(row[0]): (row[1], row[2]) for row in first[1]}
        rows = sorted(first[2])
        services.remember_kinds(asked, locked)
        if asked - set(locked):
            return None  # a conversation is gone: the thread's writer answers its sends
        if await _refusals(limit, limit_wait):
            return None
        latency_probe.mark("limit")
        for stmt, rule_rows in zip(rules, first[3:], strict=True):
            if stmt.answer(rule_rows):
                return None  # a rule refuses a send: written already, redone send by send
        duplicates: list[services.Duplicate] = []
        try:
            written, fan_outs, members = services.batch_outcome(plain, rows, now, results, duplicates)
        except services.BatchConflict:
            return None
        if duplicates:
            return None  # a re-sent client_id: the thread's writer returns the original
        # Round trip 2: the written hooks (the push outbox) and the COMMIT, answered together.
        hooks = registry.hook_statements(written)
        second = await pipe.round_trip([*((stmt.sql, stmt.params) for stmt in hooks), ("COMMIT", None)])
        latency_probe.mark("commit")
        return fan_outs, list(zip(hooks, second[:-1], strict=True)), services.committed_of(written, members)

    @staticmethod
    async def _learn_kinds(pipe: RawPipeline, asked: set[int]) -> bool:
        """The kinds of conversations this process has not locked before, read once (one
        round trip outside the batch's transaction: they never change); ``False`` if one of
        them does not exist."""
        unknown = asked - services.known_kinds.keys()
        if not unknown:
            return True
        (rows,) = await pipe.round_trip([(services.KINDS_SQL, {"ids": sorted(unknown)})])
        found = {int(row[0]): (row[1], row[2]) for row in rows}
        services.remember_kinds(unknown, found)
        return len(found) == len(unknown)

    @staticmethod
    def _rule_statements(plain: list[services.Prepared]) -> list[BatchStatement]:
        """The registered rules' statements for the batch's sends (the same statements the
        thread's writer runs)."""
        return registry.rule_statements(services.send_reaches(plain))

    async def _connection(self) -> psycopg.AsyncConnection[Any] | None:
        loop = asyncio.get_running_loop()
        conn = self._conn
        idle = conn is not None and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if conn is not None and (conn.closed or conn.broken or self._loop is not loop or not idle):
            # Not idle: a batch was cancelled mid-transaction (the server shutting down a task);
            # never let the next batch's BEGIN run inside what it left.
            if self._loop is loop:
                await self._drop(conn)
            conn = self._conn = None
            self._pipe = None
        if conn is None:
            try:
                conn = await psycopg.AsyncConnection.connect(**connection_params(), autocommit=True)
            except (psycopg.Error, OSError):
                logger.warning("loop writer: cannot connect; batches take the worker thread", exc_info=True)
                return None
            self._conn, self._loop = conn, loop
            self._pipe = RawPipeline(conn, prepare=_prepares())
        return conn

    async def _roll_back(self, conn: psycopg.AsyncConnection[Any], pipe: RawPipeline) -> None:
        """After a handed-over batch: end its transaction, or drop a connection that cannot."""
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await pipe.round_trip([("ROLLBACK", None)])
        except (psycopg.Error, PipelineError, OSError):
            logger.warning("loop writer: connection dropped", exc_info=True)
            await self._drop(conn)

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._conn is conn:
            self._conn = self._pipe = None
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()

    async def close(self) -> None:
        conn, self._conn, self._pipe = self._conn, None, None
        if conn is not None and not conn.closed:
            await conn.close()


def connection_params() -> dict[str, Any]:
    """Django's parameters for its PostgreSQL connection, for an async psycopg one: the same
    server, database, role and options (preparation: ``_prepares``), plus a
    generic plan for every prepared statement (the batch statements' array parameters would
    otherwise be re-planned each time; the thread's writer sets this per transaction). Without
    preparation (``DATABASE_PREPARE_THRESHOLD=0``: behind a transaction-pooling PgBouncer) the
    setting would change nothing (an unnamed statement is planned once anyway) and is not sent:
    PgBouncer refuses an ``options`` startup parameter it was not told to ignore."""
    params = django_connection.get_connection_params()
    # Statements go through ``raw_pipeline`` (pgconn), never psycopg's cursors or preparation.
    params.pop("cursor_factory", None)
    params.pop("prepare_threshold", None)
    if _prepares():
        options = params.get("options", "")
        params["options"] = f"{options} -c plan_cache_mode=force_generic_plan".strip()
    return params


def _prepares() -> bool:
    """Named prepared statements unless the settings turn preparation off
    (``DATABASE_PREPARE_THRESHOLD=0``, or client-side binding)."""
    return django_connection.settings_dict["OPTIONS"].get("prepare_threshold") is not None


async def _refusals(limit: asyncio.Future[dict[int, Any]], wait: float) -> dict[int, Any]:
    """The send limit's answer; fail open (as the limit does when Redis is away)."""
    if limit.done() and not limit.cancelled() and limit.exception() is None:
        return limit.result()
    try:
        return await asyncio.wait_for(asyncio.shield(limit), wait)
    except Exception:
        return {}


def _announce(committed: list[services.Committed]) -> None:
    try:
        services.announce_committed(committed)
    except Exception:
        logger.exception("message_committed receiver failed")
    finally:
        close_old_connections()


def _run_answer(stmt: BatchStatement, rows: list[tuple[Any, ...]]) -> None:
    try:
        stmt.answer(rows)
    except Exception:
        logger.exception("batch hook's after-commit step failed")
    finally:
        # A connection the answer took (a task run eagerly) goes back to the pool, not kept
        # by this executor thread until its next database call.
        close_old_connections()
