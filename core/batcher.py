"""Calls from many sockets that arrive together, answered by one worker-thread hop.

``ThreadBatcher(fn)``: ``await batcher.submit(item)`` queues ``item``; a drain task hands every
queued item (up to ``max_batch``) to ``fn(items)`` in one worker thread (its own database
connection, as ``run_service``) and gives each caller its own result or exception. A lone call
goes straight through (no waiting); under a burst (a reconnect storm) the calls that arrive
while a batch runs share the next one: one thread hop, one query per step and one audit INSERT
for the whole batch instead of one of each per socket. ``Batcher`` is the queue and drain every
batcher of the project shares: ``ThreadBatcher`` and ``LoopBatcher`` here, and messaging's group
commit of sends (``messaging.batching.SendBatcher``), which overrides ``run``.

``fn`` must return one entry per item, in order: the result, or the exception that caller gets.
It must not publish channel-layer events (none of its users does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from channels.db import DatabaseSyncToAsync

from core import metrics

I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")

BatchFn = Callable[[list[I]], Sequence[R | BaseException]]
AsyncBatchFn = Callable[[list[I]], Awaitable[Sequence[R | BaseException]]]


class Batcher(Generic[I, R]):
    """Queue and drain (see the module): ``max_workers`` batches may run at once; the second
    starts only when ``spawn_depth`` calls wait, so at low load one drain gathers whatever
    arrives during its batch into its next one. ``drop_cancelled``: an item whose caller was
    cancelled before its batch ran is left out (a read nobody waits for); a batcher of writes
    sets it False, so what was submitted is written whether or not its caller still waits."""

    drop_cancelled = True

    def __init__(self, *, max_batch: int = 200, max_workers: int = 2, spawn_depth: int = 32) -> None:
        self.max_batch = max_batch
        self.max_workers = max_workers
        self.spawn_depth = spawn_depth
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0
        self.batches = 0  # batches run (tests, benchmarks)
        self.items = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: I) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self.wants_drain():
            self._active += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    @property
    def active(self) -> int:
        """Drains running now."""
        return self._active

    def wants_drain(self) -> bool:
        """Whether the item just queued starts another drain: none runs, or ``spawn_depth``
        items wait and fewer than ``max_workers`` run."""
        return not self._active or (len(self._queue) >= self.spawn_depth and self._active < self.max_workers)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                if self.drop_cancelled:
                    batch = [(item, future) for item, future in batch if not future.done()]
                if not batch:
                    continue
                self.batches += 1
                self.items += len(batch)
                results: Sequence[R | BaseException]
                started = time.perf_counter()
                try:
                    results = await self.run([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{self!r} answered {len(results)} of {len(batch)} items")
                except Exception as exc:  # the whole batch failed: every caller gets the error
                    results = [exc] * len(batch)
                metrics.batch_ran(self, len(batch), started)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._active -= 1

    async def run(self, items: list[I]) -> Sequence[R | BaseException]:
        raise NotImplementedError


class ThreadBatcher(Batcher[I, R]):
    """``fn(items)`` in a worker thread with its own database connection (``run_service``)."""

    def __init__(self, fn: BatchFn[I, R], **options: int) -> None:
        super().__init__(**options)
        self.fn = fn

    async def run(self, items: list[I]) -> Sequence[R | BaseException]:
        return await DatabaseSyncToAsync(self.fn, thread_sensitive=False)(items)


class LoopBatcher(Batcher[I, R]):
    """``await fn(items)`` on the event loop: one Redis round trip (a pipeline) for the calls
    that arrive together, one batch at a time by default."""

    def __init__(self, fn: AsyncBatchFn[I, R], *, max_batch: int = 1000, max_workers: int = 1) -> None:
        super().__init__(max_batch=max_batch, max_workers=max_workers)
        self.fn = fn

    async def run(self, items: list[I]) -> Sequence[R | BaseException]:
        return await self.fn(items)


_batchers: dict[tuple[int, int], Any] = {}


def _forget_closed(registry: dict[tuple[int, int], Any]) -> None:
    """Drop the batchers of closed loops (tests run one loop per test)."""
    for key in [k for k, b in registry.items() if b.loop is None or b.loop.is_closed()]:
        del registry[key]


_loop_batchers: dict[tuple[int, int], Any] = {}


def loop_batcher(fn: AsyncBatchFn[I, R], **options: int) -> LoopBatcher[I, R]:
    """``LoopBatcher`` of ``fn`` (a function or a bound method: keyed by what it is bound to)
    for the running event loop."""
    loop = asyncio.get_running_loop()
    owner = getattr(fn, "__self__", None)
    key = (id(loop), hash((id(owner), getattr(fn, "__func__", fn))))
    batcher = _loop_batchers.get(key)
    if batcher is None or batcher.loop is not loop or batcher.fn != fn:
        _forget_closed(_loop_batchers)
        batcher = _loop_batchers[key] = LoopBatcher(fn, **options)
        batcher.loop = loop
    result: LoopBatcher[I, R] = batcher
    return result


def for_loop(fn: BatchFn[I, R], **options: int) -> ThreadBatcher[I, R]:
    """``fn``'s batcher for the running event loop (one per server process)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), id(fn))
    batcher = _batchers.get(key)
    if batcher is None or batcher.loop is not loop:  # a new loop reusing a closed one's id
        _forget_closed(_batchers)
        batcher = _batchers[key] = ThreadBatcher(fn, **options)
        batcher.loop = loop
    result: ThreadBatcher[I, R] = batcher
    return result
