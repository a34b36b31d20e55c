"""uvicorn's sans-I/O WebSocket protocol (``--ws websockets-sansio``), leaner per connection.

Most of what an idle socket costs is the ASGI server's, not the app's (``bench/idle.py
--tracemalloc``, docs/performance.md). uvicorn's legacy ``websockets`` implementation keeps three
tasks and their futures per connection; the sans-I/O one keeps none, and this subclass trims
what it still holds for the whole life of a connection, without changing what goes over the
wire:

- the handshake's ``Request`` and ``Response`` (their headers: the bearer token among them) are
  released as soon as the handshake is answered;
- the receive queue is a list and at most one future (``asyncio.Queue`` allocates three deques,
  ~2.3 KB, for a queue that holds one event at a time);
- ``receive`` returns that future instead of being a coroutine: an idle socket's app waits on a
  bare future, not on two suspended coroutine frames (uvicorn's ``receive`` and the queue's
  ``get``), ~0.5 KB less per socket (issue 26);
- the "writable" flag is an event without a deque of waiters until someone waits.

Serve with ``uvicorn healthchat.asgi:application --ws core.ws_protocol:LeanWebSocketProtocol``
(the Dockerfile does). Written against uvicorn 0.54 (pinned in requirements.txt); the tests in
``core/tests/test_ws_protocol.py`` run the real server with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class LeanQueue:
    """The receive queue: one consumer (the app's ``receive``), events in order. A reader
    waiting on an empty queue is handed the next event directly through its future
    (``get_future``): while a socket idles, nothing but that future is waiting."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[Any] | None = None

    def put_nowait(self, item: Any) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # a cancelled reader leaves the event queued
                waiter.set_result(item)
                return
        self._items.append(item)

    def get_future(self) -> asyncio.Future[Any]:
        """A future of the next event (already done when one is queued)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._items:
            future.set_result(self._items.pop(0))
        else:
            self._waiter = future
        return future

    async def get(self) -> Any:
        future = self.get_future()
        try:
            return await future
        finally:
            if self._waiter is future:
                self._waiter = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class LeanEvent:
    """``asyncio.Event`` for the transport's flow control, with no deque until a writer waits."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = LeanQueue()  # type: ignore[assignment]
        self.writable = LeanEvent()  # type: ignore[assignment]
        self.writable.set()

    def receive(self) -> asyncio.Future[Any]:  # type: ignore[override]
        """uvicorn's ``receive`` (awaited by the app the same way), without a coroutine: the
        next event's future. Reading resumes (flow control, as uvicorn does it) once the event
        is taken and nothing else is queued."""
        future = self.queue.get_future()
        if future.done():
            self.resume_if_drained()
        else:
            future.add_done_callback(self.event_taken)
        return future

    def event_taken(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            self.resume_if_drained()

    def resume_if_drained(self) -> None:
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self.transport.resume_reading()

    def start_keepalive(self) -> None:
        """Called once, right after the handshake's accept went out: the handshake's objects
        are not used again (a refused handshake ends the connection anyway)."""
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()
