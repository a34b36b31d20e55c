"""The lean uvicorn WebSocket protocol: its small queue and event, and the real server with it."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import subprocess
import sys
import weakref

import pytest
import websockets
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Protocol, Side
from websockets.server import ServerProtocol

from accounts.tests.factories import PatientFactory
from core.ws_protocol import (
    KeepaliveQueue,
    LeanEvent,
    LeanQueue,
    LeanWebSocketProtocol,
    release_handshake_request,
    text_frame,
)
from messaging.tests.factories import pair
from tests.wsclient import WsClient


async def test_queue_keeps_order_and_wakes_its_reader():
    queue = LeanQueue()
    assert queue.empty()
    queue.put_nowait(1)
    queue.put_nowait(2)
    assert queue.qsize() == 2
    assert await queue.get() == 1
    assert await queue.get() == 2
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put_nowait(3)
    queue.put_nowait(4)
    assert await asyncio.wait_for(reader, 1) == 3
    assert await queue.get() == 4
    assert queue.empty()


async def test_queue_reader_cancelled_while_waiting_leaves_no_waiter():
    queue = LeanQueue()
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    queue.put_nowait("x")  # no stale future to trip over
    assert await queue.get() == "x"


async def test_queue_hands_the_next_event_to_a_waiting_future() -> None:
    queue = LeanQueue()
    queue.put_nowait("a")
    ready = queue.get_future()
    assert ready.done()
    assert ready.result() == "a"
    waiting = queue.get_future()
    assert not waiting.done()
    queue.put_nowait("b")
    queue.put_nowait("c")
    assert waiting.result() == "b"  # handed over, not queued
    assert queue.qsize() == 1
    assert await queue.get_future() == "c"
    cancelled = queue.get_future()
    cancelled.cancel()
    queue.put_nowait("d")  # a cancelled reader's event stays queued
    assert await queue.get() == "d"


class FakeTransport:
    def __init__(self) -> None:
        self.resumed = 0

    def resume_reading(self) -> None:
        self.resumed += 1


async def test_receive_is_a_future_and_resumes_reading_once_drained() -> None:
    """``receive`` without a coroutine frame: the app awaits the queue's future; reading paused
    by uvicorn after an event resumes once the event is taken and nothing else is queued."""
    protocol = LeanWebSocketProtocol.__new__(LeanWebSocketProtocol)  # the queue and flow control only
    protocol.queue = LeanQueue()  # type: ignore[assignment]
    transport = protocol.transport = FakeTransport()  # type: ignore[assignment]
    protocol.read_paused = False
    waiting = protocol.receive()
    assert isinstance(waiting, asyncio.Future)
    assert not waiting.done()
    protocol.queue.put_nowait({"type": "websocket.receive", "text": "1"})
    protocol.read_paused = True  # what uvicorn does right after queueing a frame
    assert await waiting == {"type": "websocket.receive", "text": "1"}
    await asyncio.sleep(0)
    assert (protocol.read_paused, transport.resumed) == (False, 1)
    protocol.queue.put_nowait({"type": "websocket.receive", "text": "2"})
    protocol.queue.put_nowait({"type": "websocket.receive", "text": "3"})
    protocol.read_paused = True
    assert (await protocol.receive())["text"] == "2"
    assert protocol.read_paused  # one still queued: stays paused
    assert (await protocol.receive())["text"] == "3"
    assert (protocol.read_paused, transport.resumed) == (False, 2)


class Pinged:
    """Stands for a connection in the keepalive queue: notes when it was pinged."""

    def __init__(self, name: str, log: list[tuple[str, float]], loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.log, self.loop = name, log, loop
        self.ping_due: float | None = None

    def send_keepalive_ping(self) -> None:
        self.log.append((self.name, self.loop.time()))


async def test_keepalive_queue_pings_each_connection_when_due_behind_one_timer() -> None:
    loop = asyncio.get_running_loop()
    log: list[tuple[str, float]] = []
    queue = KeepaliveQueue(loop)
    a, b, c, d = (Pinged(n, log, loop) for n in "abcd")
    now = loop.time()
    queue.add(a, now + 0.05)  # type: ignore[arg-type]
    queue.add(b, now + 0.10)  # type: ignore[arg-type]
    queue.add(c, now + 0.08)  # type: ignore[arg-type]  # earlier than the last: moved to b's due
    queue.add(d, now + 0.12)  # type: ignore[arg-type]
    assert c.ping_due == b.ping_due
    d.ping_due = None  # stopped (closed) before its ping: skipped
    await asyncio.sleep(0.03)
    assert log == []
    await asyncio.sleep(0.2)
    assert [name for name, _ in log] == ["a", "b", "c"]
    assert all(at >= due for (_, at), due in zip(log, (now + 0.05, now + 0.10, now + 0.10), strict=True))
    assert a.ping_due is None
    assert not queue.entries
    assert queue.timer is None  # nothing due: no timer
    queue.add(a, loop.time() + 0.01)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert [name for name, _ in log] == ["a", "b", "c", "a"]


HANDSHAKE = (
    b"GET /ws/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Authorization: Bearer secret-token\r\n\r\n"
)


def accepted() -> tuple[ServerProtocol, weakref.ref[object]]:
    conn = ServerProtocol(max_size=2**20, logger=logging.getLogger("test"))
    conn.receive_data(HANDSHAKE)
    (request,) = conn.events_received()
    conn.send_response(conn.accept(request))  # type: ignore[arg-type]
    conn.data_to_send()
    return conn, weakref.ref(request)


def client_frames(*texts: bytes) -> bytes:
    client = Protocol(Side.CLIENT)
    client.state = OPEN
    for text in texts:
        client.send_text(text)
    return b"".join(client.data_to_send())


def test_the_handshake_request_is_released_and_frames_still_parse() -> None:
    conn, request = accepted()
    gc.collect()
    assert request() is not None  # held by the server protocol's parser frame
    assert release_handshake_request(conn)
    gc.collect()
    assert request() is None  # the headers (the bearer token among them) are gone
    data = client_frames(b"one", b"two")
    for i in range(len(data)):  # byte by byte: the new parser keeps its state across reads
        conn.receive_data(data[i : i + 1])
    assert [bytes(e.data) for e in conn.events_received()] == [b"one", b"two"]  # type: ignore[union-attr]


def test_a_parser_in_the_middle_of_a_frame_is_left_alone() -> None:
    conn, _request = accepted()
    data = client_frames(b"early")
    conn.receive_data(data[:3])  # a client that did not wait for the answer: a frame begun
    assert not release_handshake_request(conn)
    conn.receive_data(data[3:])
    assert [bytes(e.data) for e in conn.events_received()] == [b"early"]  # type: ignore[union-attr]


def lean_protocol_on(conn: ServerProtocol) -> LeanWebSocketProtocol:
    """The receiving half of a lean protocol around ``conn`` (no server, no app)."""
    protocol = LeanWebSocketProtocol.__new__(LeanWebSocketProtocol)
    protocol.conn = conn
    protocol.queue = LeanQueue()  # type: ignore[assignment]
    protocol.transport = PausingTransport()  # type: ignore[assignment]
    protocol.read_paused = protocol.close_sent = False
    protocol.handshake_complete = True
    return protocol


class PausingTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paused = 0

    def pause_reading(self) -> None:
        self.paused += 1


def test_whole_text_frames_are_parsed_as_websockets_parses_them() -> None:
    conn, _request = accepted()
    assert release_handshake_request(conn)
    protocol = lean_protocol_on(conn)
    texts = [b"", b"hi", "é".encode() * 100, b"x" * 70_000]  # 1-, 2- and 8-byte lengths
    data = client_frames(*texts)
    assert protocol.whole_text_frames(data) == [t.decode() for t in texts]
    # Not whole, or not only text frames: left to websockets (its parser untouched).
    assert protocol.whole_text_frames(data[:-1]) is None
    client = Protocol(Side.CLIENT)
    client.state = OPEN
    client.send_ping(b"p")
    assert protocol.whole_text_frames(b"".join(client.data_to_send()) + data) is None
    assert protocol.whole_text_frames(client_frames(b"\xff")) is None  # not UTF-8: uvicorn closes 1007


async def test_a_split_frame_and_a_frame_after_it_reach_the_app_in_order() -> None:
    conn, _request = accepted()
    assert release_handshake_request(conn)
    protocol = lean_protocol_on(conn)
    first, second = client_frames(b"one"), client_frames(b"two")
    protocol.data_received(first[:4])  # the parser is now in the middle of a frame
    assert protocol.whole_text_frames(first[4:] + second) is None
    protocol.data_received(first[4:])  # websockets finishes it...
    protocol.data_received(second)  # ...and the next whole frame takes the short way
    assert protocol.whole_text_frames(client_frames(b"three")) == ["three"]
    queued = [(await protocol.queue.get())["text"] for _ in range(2)]  # type: ignore[typeddict-item]
    assert queued == ["one", "two"]
    assert protocol.read_paused


def test_a_frame_over_the_size_limit_is_left_to_websockets() -> None:
    conn, _request = accepted()  # max_size 2**20
    assert release_handshake_request(conn)
    protocol = lean_protocol_on(conn)
    assert protocol.whole_text_frames(client_frames(b"x" * (2**20 + 1))) is None


async def test_event_wait_set_clear():
    event = LeanEvent()
    assert not event.is_set()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    event.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert await event.wait() is True  # set: returns at once
    event.clear()
    late = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert event._waiters == []
    event.set()
    assert event._waiters is None


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_a_text_frame_is_the_frame_websockets_would_write(length: int) -> None:
    payload = ("é" * length).encode()[:length]
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def test_the_protocol_is_importable_by_uvicorn_by_path():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from uvicorn.config import Config; c = Config('healthchat.asgi:application', "
            "ws='core.ws_protocol:LeanWebSocketProtocol'); c.load(); print(c.ws_protocol_class.__name__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "healthchat.settings.test"},
    )
    assert out.stdout.strip().endswith(LeanWebSocketProtocol.__name__)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_live_server_with_the_lean_protocol(live_server_factory, make_token):
    """Handshake, frames both ways, a burst to a socket that is not reading, server pings,
    a refused handshake (bad Origin) and close codes, all through LeanWebSocketProtocol."""
    from tests.live import uvicorn_args

    assert "core.ws_protocol:LeanWebSocketProtocol" in uvicorn_args(0)  # as the Dockerfile
    server = live_server_factory({"UVICORN_WS_PING_INTERVAL": "0.5"})
    patient, doctor, conversation = pair()
    stranger = PatientFactory()

    def token(user):
        return make_token(uid=user.firebase_uid, phone_number=user.phone_number)

    async def scenario():
        a = await WsClient.connect(server.ws_url, token(patient))
        # Without compression the server frames text itself (``LeanWebSocketProtocol.send``):
        # the doctor's 80 messages of 8 kB (a 2-byte length) and the pong (a 1-byte one).
        b = await WsClient.connect(server.ws_url, token(doctor), compression=None)
        assert b.ws.protocol.extensions == []
        # Compression is negotiated (the client offers it, as browsers do) without context
        # takeover on either side: the server keeps no zlib state between messages (issue 26).
        (deflate,) = a.ws.protocol.extensions
        assert isinstance(deflate, PerMessageDeflate)
        assert (deflate.remote_no_context_takeover, deflate.local_no_context_takeover) == (True, True)
        # A burst (under the frame rate burst) while the doctor is not reading.
        for i in range(80):
            await a.send(
                "message.send",
                {"conversation_id": conversation.pk, "client_id": _uuid(i), "body": "x" * 8000},
            )
        acks = [await a.expect("ack", timeout=30) for _ in range(80)]
        assert sorted(f["data"]["message"]["seq"] for f in acks) == list(range(1, 81))
        got = [await b.expect("message.new", timeout=30) for _ in range(80)]
        assert [f["data"]["message"]["seq"] for f in got] == list(range(1, 81))
        # Server keepalive pings (0.5 s) are answered by the client; the socket stays up.
        await asyncio.sleep(1.5)
        assert (await b.request("ping"))["type"] == "pong"
        # A refused handshake still gets its HTTP answer.
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await websockets.connect(server.ws_url, additional_headers={"Origin": "https://evil.example"})
        assert refused.value.response.status_code == 403
        # Close codes pass through.
        c = await WsClient.connect(server.ws_url, wait_ready=False)
        await c.send_raw(json.dumps({"type": "auth", "data": {"token": "nope"}}))
        assert (await c.expect("error"))["error"]["code"] == "invalid_token"
        await c.ws.wait_closed()
        assert c.close_code == 4401
        s = await WsClient.connect(server.ws_url, token(stranger))
        await s.close()
        for client in (a, b):
            await client.close()

    asyncio.run(scenario())


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"
