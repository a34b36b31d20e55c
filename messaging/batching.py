"""Group commit for ``message.send`` from sockets: one transaction per batch, per process.

Sends that arrive while a batch is being written wait for the next batch, so under load many
sockets' messages share one COMMIT and one thread hop; a lone send goes straight through. Each
send still gets its own savepoint, seq, ack (after the commit) and error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import DatabaseSyncToAsync

from healthchat import realtime

from . import services

MAX_BATCH = 200
# Batches written at once (each in its own thread and connection): the pipeline is bound by
# round trips, not CPU, so a few overlap. Conversations are locked in ascending id order in
# every batch, so concurrent batches cannot deadlock each other.
MAX_WRITERS = 4


class SendBatcher:
    def __init__(self) -> None:
        self._queue: list[tuple[dict[str, Any], asyncio.Future[services.SendResult]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def send(self, **kwargs: Any) -> services.SendResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[services.SendResult] = loop.create_future()
        self._queue.append((kwargs, future))
        if len(self._writers) < MAX_WRITERS:
            task = loop.create_task(self._drain())
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            items = [kwargs for kwargs, _ in batch]
            pending: realtime.Pending = []
            token = realtime._deferred.set(pending)
            try:
                results: list[Any] = await DatabaseSyncToAsync(
                    services.message_send_many, thread_sensitive=False
                )(items=items)
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


_batchers: dict[int, SendBatcher] = {}


def batcher() -> SendBatcher:
    """One batcher per event loop (per server process)."""
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _batchers:
        _batchers[loop_id] = SendBatcher()
    return _batchers[loop_id]
