"""Group commit for ``message.send`` from sockets: one transaction per batch, per process.

Sends that arrive while a batch is being written wait for the next batch, so under load many
sockets' messages share one COMMIT and one thread hop; a lone send goes straight through. Each
send still gets its own savepoint, seq, ack (after the commit) and error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from typing import Any

from channels.db import DatabaseSyncToAsync

from core import realtime

from . import send_limits, services
from .loop_writer import LoopWriter

MAX_BATCH = 200
# Batches written at once (each in its own thread and connection): the pipeline is bound by
# round trips, not CPU, so a few overlap. Conversations are locked in ascending id order in
# every batch, so concurrent batches cannot deadlock each other.
MAX_WRITERS = 4
# A second (third, ...) writer starts only when this many sends wait: at low load one writer
# gathers whatever arrives during its commit into its next batch (fewer, fuller transactions:
# less CPU per message, lower latency); under load the writers overlap their commits.
SPAWN_DEPTH = 16
# The writer thread waits this long for the send limit's answer, then lets the batch through.
LIMIT_WAIT_SECONDS = 1.0


class SendBatcher:
    def __init__(self) -> None:
        self._queue: list[tuple[dict[str, Any], asyncio.Future[services.SendResult]]] = []
        self._writers: set[asyncio.Task[None]] = set()
        # Writers still inside their loop: counted down synchronously when a writer finds the
        # queue empty, so a send never waits behind a writer that is already leaving.
        self._active = 0
        # The common batch is written on the event loop (no thread hop); the others, and any
        # batch arriving while it writes, take a worker thread.
        self.loop_writer = LoopWriter()

    async def send(self, **kwargs: Any) -> services.SendResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[services.SendResult] = loop.create_future()
        self._queue.append((kwargs, future))
        if not self._active or (len(self._queue) >= SPAWN_DEPTH and self._active < MAX_WRITERS):
            self._active += 1
            task = loop.create_task(self._drain())
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        return await future

    async def _drain(self) -> None:
        try:
            await self._drain_queue()
        finally:
            self._active -= 1

    async def _drain_queue(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            # The send limit is counted in Redis while the batch's transaction begins and locks
            # (the writer thread waits for the answer only before its send statement): the
            # round trip overlaps the database's instead of preceding it.
            limit = asyncio.get_running_loop().create_task(
                send_limits.refusals([kwargs["sender"].pk for kwargs, _ in batch])
            )
            refusals: concurrent.futures.Future[dict[int, Any]] = concurrent.futures.Future()
            limit.add_done_callback(functools.partial(_settle, answer=refusals))
            items = [kwargs for kwargs, _ in batch]
            pending: realtime.Pending = []
            token = realtime._deferred.set(pending)
            try:
                results: list[Any] | None = None
                if self.loop_writer.takes(items):
                    results = await self.loop_writer.write(items, limit, LIMIT_WAIT_SECONDS)
                if results is None:
                    results = await DatabaseSyncToAsync(services.message_send_many, thread_sensitive=False)(
                        items=items, refusals=functools.partial(_wait, refusals)
                    )
            except Exception as exc:  # the whole batch failed (e.g. the commit): every send
                results = [exc] * len(batch)
            finally:
                realtime._deferred.reset(token)
            await realtime.flush(pending)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def _settle(task: asyncio.Task[dict[int, Any]], answer: concurrent.futures.Future[dict[int, Any]]) -> None:
    try:
        answer.set_result(task.result())
    except BaseException:  # fail open, as the limit does when Redis is away
        answer.set_result({})


def _wait(answer: concurrent.futures.Future[dict[int, Any]]) -> dict[int, Any]:
    """In the writer thread: the send limit's refusals for the batch (fail open after a second)."""
    try:
        return answer.result(timeout=LIMIT_WAIT_SECONDS)
    except concurrent.futures.TimeoutError:
        return {}


_batchers: dict[int, SendBatcher] = {}


def batcher() -> SendBatcher:
    """One batcher per event loop (per server process)."""
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _batchers:
        _batchers[loop_id] = SendBatcher()
    return _batchers[loop_id]
