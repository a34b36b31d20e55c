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
    """The receive queue: one consumer (the app's ``receive``), events in order."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

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

    def start_keepalive(self) -> None:
        """Called once, right after the handshake's accept went out: the handshake's objects
        are not used again (a refused handshake ends the connection anyway)."""
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()
