"""uvicorn's sans-I/O WebSocket protocol (``--ws websockets-sansio``), leaner per connection.

Most of what an idle socket costs is the ASGI server's, not the app's (``bench/idle.py
--tracemalloc``, docs/performance.md). uvicorn's legacy ``websockets`` implementation keeps three
tasks and their futures per connection; the sans-I/O one keeps none, and this subclass trims
what it still holds for the whole life of a connection, without changing what goes over the
wire:

- the handshake's ``Request`` and ``Response`` (their headers: the bearer token among them) are
  released as soon as the handshake is answered: uvicorn's references, and the one the
  ``websockets`` server protocol's parser keeps in its generator frame for the connection's life
  (``ServerProtocol.parse`` parses the request, then delegates to the frame parser without
  returning): the parser is swapped for a fresh frame parser in the same state (~2 KB, issue 26);
- the receive queue is a list and at most one future (``asyncio.Queue`` allocates three deques,
  ~2.3 KB, for a queue that holds one event at a time);
- ``receive`` returns that future instead of being a coroutine: an idle socket's app waits on a
  bare future, not on two suspended coroutine frames (uvicorn's ``receive`` and the queue's
  ``get``), ~0.5 KB less per socket (issue 26);
- the "writable" flag is an event without a deque of waiters until someone waits;
- per-message compression (uvicorn's ``permessage-deflate``, which every browser negotiates)
  keeps no compression context between messages: uvicorn's settings otherwise hold a zlib
  compressor and decompressor per connection for its whole life, ~30 KiB of an idle socket's
  RSS (``bench/idle.py --compression``); without context each frame is compressed on its own
  (~8 µs more per compressed frame, a little less compression), and one extension factory
  serves every connection (``DEFLATE_WITHOUT_CONTEXT``, issue 26);
- on a connection without per-message compression, a text message is framed by ``send``
  itself (``text_frame``: the bytes ``websockets`` would write), and a chunk of whole text
  frames from the client is parsed by ``data_received`` itself (``whole_text_frames``: the same
  texts, anything else goes to ``websockets``' parser), without ``Frame`` objects and the
  parser's generators (issue 26: server CPU per message, one frame in and two out);
- keepalive pings are due from one queue per event loop (``KeepaliveQueue``) instead of a loop
  timer per connection (~0.5 KB each with uvloop, issue 26): every connection has the same
  interval, so the queue is in due order and one timer, set for its head, serves them all. The
  pong deadline of a ping in flight stays uvicorn's own timer (it lives for a round trip).

Serve with ``uvicorn healthchat.asgi:application --ws core.ws_protocol:LeanWebSocketProtocol``
(the Dockerfile does). Written against uvicorn 0.54 (pinned in requirements.txt); the tests in
``core/tests/test_ws_protocol.py`` run the real server with it.
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from collections import deque
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import apply_mask
from websockets.protocol import Protocol, State
from websockets.streams import StreamReader


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


def release_handshake_request(conn: Protocol) -> bool:
    """Swap ``conn``'s parser (the server's handshake parser, whose frame still holds the
    request) for a new frame parser, when the old one waits for the first frame's first byte
    with nothing buffered (always, for a client that waits for the handshake's answer as RFC
    6455 says): the new one is in the same state. Anything else is left as it is."""
    old = conn.parser
    frames = getattr(old, "gi_yieldfrom", None)  # Protocol.parse, delegated to
    waiting = getattr(frames, "gi_yieldfrom", None)  # StreamReader.at_eof: between frames
    if getattr(getattr(waiting, "gi_code", None), "co_name", None) != "at_eof" or conn.reader.buffer:
        return False
    if getattr(getattr(frames, "gi_code", None), "co_name", None) != "parse":
        return False
    fresh = Protocol.parse(conn)
    next(fresh)  # up to the same wait for data
    conn.parser = fresh
    old.close()
    return True


class KeepaliveQueue:
    """When each connection of one event loop is next due a keepalive ping, in due order (the
    same interval for all: a connection due later is appended), behind one loop timer. An entry
    holds its connection weakly and counts only while the connection still wants that ping
    (``ping_due``): a closed or rescheduled connection's entry is skipped when reached."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.entries: deque[tuple[float, weakref.ref[LeanWebSocketProtocol]]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, protocol: LeanWebSocketProtocol, due: float) -> None:
        protocol.ping_due = due
        entries = self.entries
        if entries and entries[-1][0] > due:  # an earlier due than the last (a shorter round trip)
            entries.append((entries[-1][0], weakref.ref(protocol)))
            protocol.ping_due = entries[-1][0]  # a few ms later: keeps the queue in order
        else:
            entries.append((due, weakref.ref(protocol)))
        if self.timer is None:
            self.timer = self.loop.call_at(entries[0][0], self.run)

    def run(self) -> None:
        self.timer = None
        entries = self.entries
        now = self.loop.time()
        while entries and entries[0][0] <= now:
            due, ref = entries.popleft()
            protocol = ref()
            if protocol is not None and protocol.ping_due == due:
                protocol.ping_due = None
                protocol.send_keepalive_ping()
        if entries:
            self.timer = self.loop.call_at(entries[0][0], self.run)


_keepalive_queues: dict[asyncio.AbstractEventLoop, KeepaliveQueue] = {}


def keepalive_queue(loop: asyncio.AbstractEventLoop) -> KeepaliveQueue:
    queue = _keepalive_queues.get(loop)
    if queue is None:
        for old in [other for other in _keepalive_queues if other.is_closed()]:
            del _keepalive_queues[old]  # a test's ended loop
        queue = _keepalive_queues[loop] = KeepaliveQueue(loop)
    return queue


# The code of the frame parser's wait between frames (``StreamReader.at_eof``).
AT_EOF = StreamReader.at_eof.__code__


def text_frame(payload: bytes) -> bytes:
    """A server's final text frame of ``payload`` (RFC 6455 5.2: FIN, opcode 1, no mask)."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


# uvicorn's permessage-deflate settings (window bits 12, memLevel 5) without context takeover on
# either side: nothing kept between messages. Shared by every connection (read-only).
DEFLATE_WITHOUT_CONTEXT: list[ServerExtensionFactory] = [
    ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )
]


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    # uvicorn's per-connection attributes, in slots: past 30 attributes an instance's __dict__
    # stops sharing its keys with its class and becomes a table of its own (~1.6 KB per
    # connection, ``bench/idle.py --tracemalloc``). Any other attribute still goes to __dict__.
    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )
    ping_due: float | None = None  # loop time of the next keepalive ping (``KeepaliveQueue``)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:  # off with uvicorn --ws-per-message-deflate false
            self.conn.available_extensions = DEFLATE_WITHOUT_CONTEXT
        self.queue = LeanQueue()  # type: ignore[assignment]
        self.writable = LeanEvent()  # type: ignore[assignment]
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received``; a chunk that is whole final text frames from the client
        (masked, no compression, between frames, within the size limit, valid UTF-8: what a
        chat client sends) is parsed here: the same events as ``websockets``' parser and
        uvicorn's ``handle_text`` give, without the parser's generators and ``Frame`` objects
        (issue 26). Anything else (control frames, fragments, compressed frames, a frame split
        over chunks, bad data) goes to ``websockets`` untouched."""
        texts = self.whole_text_frames(data)
        if texts is None:
            super().data_received(data)
            return
        if self.close_sent:  # uvicorn discards messages once the app has closed
            return
        for text in texts:
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def whole_text_frames(self, data: bytes) -> list[str] | None:
        """The texts of ``data`` if it is nothing but whole, final, masked, uncompressed text
        frames and the connection's parser waits between frames; else ``None``."""
        conn = self.conn
        if (
            not self.handshake_complete
            or conn.state is not State.OPEN
            or conn.extensions
            or conn.current_size is not None
            or conn.reader.buffer
            or conn.parser_exc is not None
            or getattr(getattr(conn.parser, "gi_yieldfrom", None), "gi_code", None) is not AT_EOF
        ):
            return None
        limit = conn.max_message_size
        if conn.max_fragment_size is not None:
            limit = conn.max_fragment_size if limit is None else min(limit, conn.max_fragment_size)
        texts: list[str] = []
        end, at = len(data), 0
        while at < end:
            if end - at < 6 or data[at] != 0x81 or not data[at + 1] & 0x80:
                return None  # not a final text frame with a mask (or not whole)
            length = data[at + 1] & 0x7F
            at += 2
            if length == 126:
                if end - at < 2:
                    return None
                (length,) = struct.unpack_from("!H", data, at)
                at += 2
            elif length == 127:
                if end - at < 8:
                    return None
                (length,) = struct.unpack_from("!Q", data, at)
                at += 8
            if (limit is not None and length > limit) or end - at < 4 + length:
                return None
            payload = apply_mask(data[at + 4 : at + 4 + length], data[at : at + 4])
            at += 4 + length
            try:
                texts.append(payload.decode())
            except UnicodeDecodeError:
                return None
        return texts

    async def send(self, message: Any) -> None:
        """uvicorn's ``send``; a text message on an open connection without extensions (no
        per-message compression negotiated) and nothing else queued to write is framed here:
        the same bytes as ``websockets`` writes (an unmasked final text frame), without its
        ``Frame`` object, checks, extension loop and write list (issue 26: two frames per
        message at saturation). Anything else, a connection that is not writable (flow
        control: uvicorn waits), closing or gone, takes uvicorn's way."""
        if (
            message["type"] == "websocket.send"
            and self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.initial_response is None
            and self.writable.is_set()
        ):
            text = message.get("text")
            conn = self.conn
            if (
                text is not None
                and message.get("bytes") is None
                and not conn.extensions
                and not conn.writes
                and conn.state is State.OPEN
                and not conn.expect_continuation_frame
            ):
                self.transport.write(text_frame(text.encode()))
                return
        await super().send(message)

    def receive(self) -> asyncio.Future[Any]:  # type: ignore[override]
        """uvicorn's ``receive`` (awaited by the app the same way), without a coroutine: the
        next event's future. Reading resumes (flow control, as uvicorn does it) once the event
        is taken and nothing else is queued."""
        future = cast(LeanQueue, self.queue).get_future()
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
        release_handshake_request(self.conn)
        super().start_keepalive()

    def schedule_ping(self) -> None:
        """uvicorn's next ping (after the interval, less the last round trip), from the loop's
        ``KeepaliveQueue`` instead of a timer of this connection's own."""
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        keepalive_queue(self.loop).add(self, self.loop.time() + delay)

    def stop_keepalive(self) -> None:
        self.ping_due = None  # its queue entry, if any, is skipped
        super().stop_keepalive()
