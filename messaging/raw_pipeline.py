"""Statements sent together on libpq's pipeline mode and answered together, for the loop writer.

psycopg's async pipeline waits on the event loop once per statement (each ``execute`` flushes
and polls the socket through a future) and dumps each parameter through its adapter chain: at
one or two sends per batch (light load) that was ~0.3 ms of Python per batch, a fifth of the
server's CPU per message (py-spy, docs/performance.md "Session 5"). Here a round trip is: queue
every statement on the connection's ``pgconn`` (named prepared statements, text parameters),
one ``PIPELINE_SYNC``, one flush, then wait for the socket to be readable until the sync's
result; rows are loaded by psycopg's own loaders (``Transformer``), so the answers are the
Python values ``execute`` would give.

Only plain parameter types are dumped here (None, bool, int, str, UUID, aware datetime and lists
of them, one level deep); anything else raises ``TypeError`` before anything is sent, and the
caller hands the batch to the worker thread's writer, as for any other error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


class PipelineError(Exception):
    """A statement failed (the server's error for the first one; the rest were skipped)."""


def _convert(sql: str) -> tuple[bytes, list[str]]:
    """``%(name)s`` placeholders → ``$n`` (a name used twice is one parameter); ``%%`` → ``%``."""
    order: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return _PLACEHOLDER.sub(replace, sql).encode(), order


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | str | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.isoformat()
    raise TypeError(f"no text form here for {type(value).__name__}")


def _element(value: Any) -> str:
    if value is None:
        return "NULL"
    text = _scalar(value)
    if isinstance(value, str):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def dump(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text form (the statement's casts or context give its type)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return ("{" + ",".join(_element(v) for v in value) + "}").encode()
    return _scalar(value).encode()


class RawPipeline:
    """One connection's prepared statements and round trips. The connection is used through its
    ``pgconn`` only while a round trip runs (never with psycopg's own pipeline or cursors at the
    same time); after any failure the caller drops the connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], *, prepare: bool = True) -> None:
        """``prepare`` false: unnamed statements, parsed every time (behind a PgBouncer that
        cannot keep named prepared statements; ``DATABASE_PREPARE_THRESHOLD=0``)."""
        self.conn = conn
        self.pgconn = conn.pgconn
        self.prepare = prepare
        # sql -> (statement name, or the query itself when not preparing; parameter order)
        self._statements: dict[str, tuple[bytes, list[str]]] = {}
        self._tx = Transformer(conn)

    def _statement(self, sql: str, queue: list[tuple[Any, ...]]) -> tuple[bytes, list[str]]:
        known = self._statements.get(sql)
        if known is None:
            query, order = _convert(sql)
            if self.prepare:
                known = (f"hc_raw_{len(self._statements)}".encode(), order)
                queue.append(("prepare", known[0], query))
            else:
                known = (query, order)
            self._statements[sql] = known
        return known

    async def round_trip(self, statements: Sequence[tuple[str, dict[str, Any] | None]]) -> list[list[Any]]:
        """Run ``(sql, params)`` statements in order, in one round trip; each one's rows (an
        empty list for a command). Raises ``PipelineError`` if one failed (the transaction, if
        one is open, is then aborted), ``TypeError`` for a parameter not dumped here, or the
        connection's error."""
        queue: list[tuple[Any, ...]] = []
        for sql, params in statements:
            name, order = self._statement(sql, queue)
            values = [dump(params[key]) for key in order] if params else []
            queue.append(("execute", name, values))
        pgconn = self.pgconn
        if pgconn.pipeline_status == pq.PipelineStatus.OFF:
            pgconn.nonblocking = 1
            pgconn.enter_pipeline_mode()
        for entry in queue:
            if entry[0] == "prepare":
                pgconn.send_prepare(entry[1], entry[2])
            elif self.prepare:
                pgconn.send_query_prepared(entry[1], entry[2])
            else:
                pgconn.send_query_params(entry[1], entry[2])
        pgconn.pipeline_sync()
        loop = asyncio.get_running_loop()
        while pgconn.flush():  # 1: not all sent yet (a full socket buffer)
            await _ready(loop, pgconn.socket, write=True)
        answers: list[pq.abc.PGresult] = []
        error: str | None = None
        while True:
            pgconn.consume_input()
            synced = False
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:  # the end of one statement's results
                    continue
                status = result.status
                if status == pq.ExecStatus.PIPELINE_SYNC:
                    synced = True
                    break
                if status in _OK:
                    answers.append(result)
                elif status == pq.ExecStatus.FATAL_ERROR:
                    error = error or (result.error_message.decode(errors="replace").strip() or "error")
                elif status != pq.ExecStatus.PIPELINE_ABORTED:
                    error = error or f"unexpected result status {status}"
            if synced:
                break
            await _ready(loop, pgconn.socket, write=False)
        pgconn.exit_pipeline_mode()
        if error is not None:
            raise PipelineError(error)
        rows: list[list[Any]] = []
        for entry, result in zip(queue, answers, strict=True):  # one result per queued entry
            if entry[0] == "prepare":
                continue
            if result.status == pq.ExecStatus.TUPLES_OK and result.ntuples:
                self._tx.set_pgresult(result)
                rows.append(self._tx.load_rows(0, result.ntuples, tuple))
            else:
                rows.append([])
        return rows


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)
