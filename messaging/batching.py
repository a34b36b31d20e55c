"""Group commit for ``message.send`` from sockets: one transaction per batch, per process.

Sends that arrive while a batch is being written wait for the next batch, so under load many
sockets' messages share one COMMIT and one thread hop; a lone send goes straight through. Each
send still gets its own savepoint, seq, ack (after the commit) and error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from collections.abc import Sequence
from typing import Any

from channels.db import DatabaseSyncToAsync
from django.conf import settings

from core import latency_probe, metrics, realtime
from core.batcher import Batcher

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


class SendBatcher(Batcher[services.SendRequest, services.SendResult]):
    """The shared queue and drain (``core.batcher.Batcher``: a lone send goes straight
    through, the sends arriving while a batch is written share the next one), writing each
    batch in one transaction: on the event loop when the loop writer takes it, else in a
    worker thread (``services.message_send_many``)."""

    drop_cancelled = False  # a send whose socket went away is still written (acked on resend)

    def __init__(self) -> None:
        super().__init__(max_batch=MAX_BATCH, max_workers=MAX_WRITERS, spawn_depth=SPAWN_DEPTH)
        # The common batch is written on the event loop (no thread hop), by the first loop writer
        # that is not busy; the others, and any batch arriving while every loop writer writes,
        # take a worker thread. ``HEALTHCHAT_LOOP_WRITERS`` > 1: a send arriving while a batch
        # is being written starts the next batch at once on another connection instead of
        # waiting for that batch's COMMIT (lower latency at moderate load; issue 26).
        count = max(1, int(getattr(settings, "HEALTHCHAT_LOOP_WRITERS", 1)))
        self.loop_writers = [LoopWriter() for _ in range(count)]
        self.loop_writer = self.loop_writers[0]

    def wants_drain(self) -> bool:
        # A loop writer is idle: the send starts its batch now rather than wait for the one in flight.
        return self.active < len(self.loop_writers) or super().wants_drain()

    async def close(self) -> None:
        """Close the loop writers' connections (tests, shutdown)."""
        for writer in self.loop_writers:
            await writer.close()

    async def run(self, items: list[services.SendRequest]) -> Sequence[services.SendResult | BaseException]:
        # The send limit is counted in Redis while the batch's transaction begins and locks
        # (the writer thread waits for the answer only before its send statement): the
        # round trip overlaps the database's instead of preceding it.
        limit = asyncio.get_running_loop().create_task(
            send_limits.refusals([request.sender.pk for request in items])
        )
        refusals: concurrent.futures.Future[dict[int, Any]] = concurrent.futures.Future()
        limit.add_done_callback(functools.partial(_settle, answer=refusals))
        probe = latency_probe.start_batch(items) if latency_probe.enabled() else None
        with realtime.collecting() as pending:
            try:
                results: Sequence[services.SendResult | BaseException] | None = None
                started = time.perf_counter()
                writer = next((w for w in self.loop_writers if w.takes(items)), None)
                if writer is not None:
                    results = await writer.write(items, limit, LIMIT_WAIT_SECONDS)
                    metrics.writer_ran("loop_writer", results is not None, len(items), started)
                if results is None:
                    latency_probe.mark("thread", probe)
                    started = time.perf_counter()
                    results = await DatabaseSyncToAsync(services.message_send_many, thread_sensitive=False)(
                        requests=items, refusals=functools.partial(_wait, refusals)
                    )
                    metrics.writer_ran("thread_writer", True, len(items), started)
            except Exception as exc:  # the whole batch failed (e.g. the commit): every send
                results = [exc] * len(items)
        latency_probe.mark("written", probe)
        await realtime.flush(pending)
        latency_probe.mark("published", probe)
        return results


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
