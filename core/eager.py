"""Run a coroutine at once, in the caller's turn of the event loop, and make a task of it only
if it has to wait (what Python 3.12's eager tasks do, for 3.11).

A socket's live event nearly always goes out without waiting (the frame is written to the
transport's buffer), so a task per delivery, its scheduling and its turn of the loop (~3 µs of a
message's server CPU: issue 26) buys nothing. ``start(coroutine)`` steps it until its first
real wait: ``None`` if it finished (its exception, if any, raised to the caller), else a task
that carries on from that wait exactly as if it had run it from the start (the same futures
awaited, cancellation thrown in where it waits). The first step runs in the caller's context
(``contextvars``) and ``current_task()``; the task copies the caller's context, as
``create_task`` would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start(coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T] | None:
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return None
    except BaseException:
        coroutine.close()
        raise
    return asyncio.get_running_loop().create_task(_carry_on(coroutine, waiting))


async def _carry_on(coroutine: Coroutine[Any, Any, T], waiting: Any) -> T:
    result: T = await _Resumed(coroutine, waiting)
    return result


class _Resumed:
    """Awaitable: hands the task what ``coroutine`` yielded (the future it waits on, with its
    ``_asyncio_future_blocking`` flag as the coroutine's own ``await`` set it), then steps the
    coroutine on with whatever the task sends or throws."""

    __slots__ = ("coroutine", "waiting")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coroutine = coroutine
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, waiting = self.coroutine, self.waiting
        self.waiting = None
        while True:
            try:
                sent = yield waiting
            except BaseException as exc:  # the task's cancellation, thrown in where it waits
                try:
                    waiting = coroutine.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                waiting = coroutine.send(sent)
            except StopIteration as stop:
                return stop.value
