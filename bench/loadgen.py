"""The socket client of every benchmark, for ``/ws/v1/`` (and for ``bench/relay.py``): its own process,
asyncio + websockets. Two clients share the measuring helpers (``cpu_seconds``, ``percentile``, ``ms``):

**Pairs** (``bench/messaging.py --loadgen python``, ``bench/soak.py``, through
``harness.LoadGenProcess``). ``bench/socketio/loadgen.mjs`` is its Node counterpart (the same
commands and answers, cheaper per message, socket.io too): ``bench/messaging.py``'s default.

Sockets come in pairs (one conversation each): the sender sends ``message.send``, the receiver
must get ``message.new``. Two modes:

* ``saturation``: every sender keeps up to ``window`` messages in flight (a slot frees when the
  message is acked AND received by the peer, or after ``--msg-timeout``) for ``seconds``;
* ``offered``: every sender sends ``rate`` messages per second (open loop, phases spread evenly).

A long phase can report as it goes (``progress_every``, control mode): a ``{"event": "progress"}``
line every so many seconds before its final answer (``bench/soak.py`` uses it).

Measured per phase: messages/s delivered end to end (acked and received; counted when both
happened inside the sending window), send→receive and send→ack latency percentiles, lost (acked,
never received within the grace period), duplicated (received more than once), unacked, error
frames by code, and the load generator's own CPU.

Standalone: ``python bench/loadgen.py --url ws://127.0.0.1:8000/ws/v1/ --pairs pairs.json
--mode both`` prints one JSON object. With ``--control`` it reads one JSON command per line on
stdin (``warmup``, ``connect``, ``saturate``, ``offered``, ``close``, ``quit``) and answers each with
one JSON line on stdout: ``bench/messaging.py`` drives it that way to sample the server between
phases. ``pairs.json``: ``{"pairs": [{"conversation_id": 1, "sender_token": "..." | null,
"receiver_token": "..." | null}, ...]}``.

**Swarm** (``bench/idle.py``, ``bench/fanout.py``, ``bench/storm.py``, through ``harness.Swarm``).
``--swarm --control``: many sockets in one process, the client of the idle, fan-out and storm
benchmarks, driven by ``bench/harness.py``'s ``Swarm``: one JSON command per line on stdin, one
JSON answer per line on stdout.

Commands (``cmd``):

* ``open`` ``{url, sockets_file, concurrency, sync}``: open every socket of ``sockets_file``
  (``{"sockets": [{"token": "..." | null, "room": 42}, ...]}``; ``room`` becomes ``?c=`` for the
  relay), wait for each ``ready``, optionally ``sync`` to the end (keeping the cursor);
* ``status``: sockets open, closes by code, frames received by type;
* ``fanout`` ``{senders, room, seconds, window, count}``: members ``senders`` send
  ``message.send`` to the group ``room``: ``count`` messages one after another (latency of a lone
  message) or, with ``seconds``, each sender keeps ``window`` messages in flight; a message is
  done when every other socket got its ``message.new``. Deliveries/s, send→last-member latency,
  lost (acked, some member never got it), duplicated;
* ``send_each`` ``{senders, room_of, count}``: each listed socket sends ``count`` messages to
  its own ``room`` and waits for the acks (to give ``sync`` something to replay);
* ``storm`` ``{policy, give_up_s, sync}``: arm every socket to reconnect when its connection drops, then
  ``sync`` from its cursor until ``more`` is false. ``policy``: ``hint`` (jittered delay from
  the ``ready`` frame's ``reconnect`` hint, ``retry_after_ms`` of a 1013 refusal, exponential
  backoff with jitter on failures) or ``naive`` (at once, then every 100 ms). The answer comes
  when every socket has synced again (or at the timeout): time to all synced, percentiles,
  attempts, refusals;
* ``close``, ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import resource
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CONNECT_CONCURRENCY = 32
# Like the app (docs/protocol.md "Idle sockets"): a socket with nothing else to send sends
# ``ping`` well within HEALTHCHAT_WS_IDLE_TIMEOUT / 2 (default 300 s), else the server closes
# it with 4408 and a long soak would lose its receivers' live path after five minutes.
KEEPALIVE_SECONDS = 60.0


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


class Msg:
    __slots__ = (
        "acked",
        "client_id",
        "done",
        "error",
        "pair",
        "received",
        "settled",
        "t_ack",
        "t_recv",
        "t_send",
    )

    def __init__(self, pair: Pair, client_id: str, t_send: float) -> None:
        self.pair = pair
        self.client_id = client_id
        self.t_send = t_send
        self.t_ack = 0.0
        self.t_recv = 0.0
        self.acked = False
        self.received = 0
        self.error: str | None = None
        self.settled = False  # acked and received, or refused with an error
        self.done = False  # its in-flight slot was released


class Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: dict[str, Msg] = {}
        self.errors: dict[str, int] = {}
        self.foreign = 0  # message.new for a client_id of no running phase (a late straggler)
        self.pending = 0
        self.expired = 0
        self.t_start = 0.0
        self.t_end = 0.0
        self.lead_in = 0.0
        self.senders: list[Pair] = []
        self.settled_all = asyncio.Event()

    def add(self, msg: Msg) -> None:
        self.messages[msg.client_id] = msg
        msg.pair.inflight[msg.client_id] = msg
        self.pending += 1
        self.settled_all.clear()

    def settle(self, msg: Msg) -> None:
        if not msg.settled:
            msg.settled = True
            self.pending -= 1
            self.release(msg)
            if self.pending == 0:
                self.settled_all.set()

    def release(self, msg: Msg) -> None:
        if not msg.done:
            msg.done = True
            msg.pair.inflight.pop(msg.client_id, None)
            msg.pair.slots.release()


class Pair:
    def __init__(self, index: int, spec: dict[str, Any]) -> None:
        self.index = index
        self.conversation_id = int(spec["conversation_id"])
        self.sender_token: str | None = spec.get("sender_token")
        self.receiver_token: str | None = spec.get("receiver_token")
        self.sender: ClientConnection | None = None
        self.receiver: ClientConnection | None = None
        self.inflight: dict[str, Msg] = {}
        self.slots = asyncio.Semaphore(1)


class LoadGen:
    def __init__(self, url: str, pairs: list[dict[str, Any]], body_bytes: int) -> None:
        self.url = url
        self.pairs = [Pair(i, spec) for i, spec in enumerate(pairs)]
        self.phase: Phase | None = None
        self.readers: list[asyncio.Task[None]] = []
        self.keepalive: asyncio.Task[None] | None = None
        self.closed: dict[str, int] = {}
        self.body_pad = "x" * max(0, body_bytes - 12)

    # --- sockets ------------------------------------------------------------------------------
    async def _open(self, token: str | None, conversation_id: int) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws = await connect(
            f"{self.url}?c={conversation_id}",
            additional_headers=headers,
            compression=None,
            proxy=None,
            ping_interval=None,
            open_timeout=60,
            close_timeout=5,
            max_size=2**20,
        )
        first = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if first.get("type") != "ready":
            await ws.close()
            raise RuntimeError(f"expected ready, got {first}")
        return ws

    async def _open_pair(self, pair: Pair, gate: asyncio.Semaphore) -> bool:
        async with gate:
            try:
                pair.receiver = await self._open(pair.receiver_token, pair.conversation_id)
                pair.sender = await self._open(pair.sender_token, pair.conversation_id)
            except Exception as exc:
                log(f"pair {pair.index}: connect failed: {exc!r}")
                return False
        self.readers.append(asyncio.create_task(self._read_sender(pair)))
        self.readers.append(asyncio.create_task(self._read_receiver(pair)))
        if self.keepalive is None:
            self.keepalive = asyncio.create_task(self._keepalive())
        return True

    async def _keepalive(self) -> None:
        """Every socket sends ``ping`` once per ``KEEPALIVE_SECONDS``, spread over the interval."""
        while True:
            sockets = [ws for p in self.pairs for ws in (p.sender, p.receiver) if ws is not None]
            pause = KEEPALIVE_SECONDS / max(1, len(sockets))
            for ws in sockets:
                await asyncio.sleep(pause)
                with contextlib.suppress(ConnectionClosed, OSError):
                    await ws.send('{"type":"ping"}')

    async def connect(self, count: int | None = None) -> dict[str, Any]:
        pairs = self.pairs if count is None else self.pairs[:count]
        started = time.perf_counter()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        results = await asyncio.gather(*(self._open_pair(p, gate) for p in pairs if p.sender is None))
        return {
            "event": "connected",
            "sockets": 2 * sum(1 for p in self.pairs if p.sender is not None),
            "failed_pairs": results.count(False),
            "seconds": round(time.perf_counter() - started, 2),
        }

    async def close(self) -> dict[str, Any]:
        async def shut(ws: ClientConnection | None) -> None:
            if ws is not None:
                with contextlib.suppress(TimeoutError, ConnectionClosed, OSError):
                    await asyncio.wait_for(ws.close(), 10)

        await asyncio.gather(*(shut(ws) for p in self.pairs for ws in (p.sender, p.receiver)))
        for pair in self.pairs:
            pair.sender = pair.receiver = None
        if self.keepalive is not None:
            self.keepalive.cancel()
            self.keepalive = None
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.readers.clear()
        return {"event": "closed", "unexpected_closes": dict(self.closed)}

    # --- frames in ----------------------------------------------------------------------------
    def _note_close(self, exc: ConnectionClosed) -> None:
        code = str(exc.rcvd.code) if exc.rcvd else "none"
        self.closed[code] = self.closed.get(code, 0) + 1

    async def _read_sender(self, pair: Pair) -> None:
        ws = pair.sender
        assert ws is not None
        try:
            async for text in ws:
                now = time.perf_counter()
                frame = json.loads(text)
                kind = frame.get("type")
                phase = self.phase
                if phase is None:
                    continue
                if kind == "ack":
                    msg = phase.messages.get(frame.get("ref"))
                    if msg is not None and not msg.acked:
                        msg.acked, msg.t_ack = True, now
                        if msg.received:
                            phase.settle(msg)
                elif kind == "error":
                    code = frame.get("error", {}).get("code", "?")
                    phase.errors[code] = phase.errors.get(code, 0) + 1
                    msg = phase.messages.get(frame.get("ref"))
                    if msg is not None:
                        msg.error = code
                        phase.settle(msg)
        except ConnectionClosed as exc:
            if pair.sender is not None:
                self._note_close(exc)

    async def _read_receiver(self, pair: Pair) -> None:
        ws = pair.receiver
        assert ws is not None
        try:
            async for text in ws:
                now = time.perf_counter()
                frame = json.loads(text)
                if frame.get("type") != "message.new":
                    continue
                phase = self.phase
                if phase is None:
                    continue
                msg = phase.messages.get(frame["data"]["message"]["client_id"])
                if msg is None:
                    phase.foreign += 1
                    continue
                msg.received += 1
                if msg.received == 1:
                    msg.t_recv = now
                    if msg.acked:
                        phase.settle(msg)
        except ConnectionClosed as exc:
            if pair.receiver is not None:
                self._note_close(exc)

    # --- frames out ---------------------------------------------------------------------------
    async def _send(self, phase: Phase, pair: Pair, k: int) -> None:
        client_id = str(uuid.uuid4())
        # what json.dumps would write for {"type", "ref", "data": {conversation_id, client_id, body}}
        text = (
            f'{{"type":"message.send","ref":"{client_id}","data":{{"conversation_id":{pair.conversation_id},'
            f'"client_id":"{client_id}","body":"m{k:010d} {self.body_pad}"}}}}'
        )
        phase.add(Msg(pair, client_id, time.perf_counter()))
        assert pair.sender is not None
        await pair.sender.send(text)

    async def _saturate_sender(self, phase: Phase, pair: Pair, end: float) -> None:
        k = 0
        try:
            while True:
                await pair.slots.acquire()
                if time.perf_counter() >= end:
                    return
                await self._send(phase, pair, k)
                k += 1
        except ConnectionClosed:
            return

    async def _offered_sender(self, phase: Phase, pair: Pair, start: float, rate: float, end: float) -> None:
        interval = 1.0 / rate
        k = 0
        try:
            while True:
                due = start + k * interval
                if due >= end:
                    return
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._send(phase, pair, k)
                k += 1
        except ConnectionClosed:
            return

    async def _expire(self, phase: Phase, max_age: float) -> None:
        """Free the slots of messages stuck longer than ``max_age`` (counted, never hidden)."""
        while True:
            await asyncio.sleep(0.5)
            limit = time.perf_counter() - max_age
            for pair in self.pairs:
                for msg in [m for m in pair.inflight.values() if m.t_send < limit]:
                    phase.expired += 1
                    phase.release(msg)

    # --- phases -------------------------------------------------------------------------------
    async def run_phase(
        self,
        mode: str,
        seconds: float,
        window: int = 4,
        rate: float = 1.0,
        grace: float = 10.0,
        msg_timeout: float = 30.0,
        dump: str | None = None,
        progress_every: float | None = None,
        lead_in: float = 0.0,
    ) -> dict[str, Any]:
        """``lead_in`` (offered only): the senders start this many seconds before the measured
        window, at the same rate and without a pause between the two, so the window measures
        the sustained load and not a machine waking from idle (seen: after even 0.2 s idle, the
        first ~80 ms of batches took 2-3 times as long). Those messages are checked like the
        others (lost, duplicated, stored) and reported apart (``lead_in``), not in the window's
        latency."""
        pairs = [p for p in self.pairs if p.sender is not None]
        lead_in = lead_in if mode == "offered" else 0.0
        phase = Phase(mode)
        phase.senders = pairs
        for pair in pairs:
            pair.inflight = {}
            pair.slots = asyncio.Semaphore(window if mode == "saturation" else 10**9)
        self.phase = phase
        self.closed = {}
        # The load generator's own collector pauses would be measured as the server's latency
        # (seen: 4-11 ms young-generation passes every ~1.4 s at 500 msgs/s, every target
        # alike): everything alive now is frozen out of its reach and automatic collection is
        # off while the phase runs (the generator makes no cyclic garbage while sending).
        gc.collect()
        gc.freeze()
        gc.disable()
        cpu0 = cpu_seconds()
        begin = time.perf_counter()
        phase.t_start = start = begin + lead_in
        phase.lead_in = lead_in
        end = start + seconds
        if mode == "saturation":
            expirer = asyncio.create_task(self._expire(phase, msg_timeout))
            senders = [self._saturate_sender(phase, p, end) for p in pairs]
        else:
            expirer = asyncio.create_task(asyncio.sleep(0))
            senders = [
                self._offered_sender(phase, p, begin + (i / len(pairs)) / rate, rate, end)
                for i, p in enumerate(pairs)
            ]
        sending = asyncio.gather(*senders)
        progress = (
            asyncio.create_task(self._progress(phase, progress_every, grace))
            if progress_every
            else asyncio.create_task(asyncio.sleep(0))
        )
        # the sending window closes at ``end`` whatever the senders are doing
        await asyncio.wait([sending], timeout=lead_in + seconds + 1)
        phase.t_end = time.perf_counter()
        progress.cancel()
        cpu_send = cpu_seconds() - cpu0
        for pair in pairs:  # wake senders waiting for a slot so they see the window closed
            pair.slots.release()
        await asyncio.wait([sending], timeout=5)
        sending.cancel()
        if phase.pending > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(phase.settled_all.wait(), grace)
        expirer.cancel()
        await asyncio.sleep(0.2)  # let duplicates, if any, arrive
        self.phase = None
        gc.enable()
        gc.unfreeze()
        return self._report(phase, mode, seconds, window, rate, cpu_send, dump)

    async def _progress(self, phase: Phase, every: float, grace: float) -> None:
        """While a long phase runs: one ``{"event": "progress"}`` line on stdout every ``every`` s
        (delivered/s and latency over the last interval; lost, duplicated and overdue so far)."""
        previous = phase.t_start
        while True:
            await asyncio.sleep(every)
            now = time.perf_counter()
            delivered = received = lost = duplicated = overdue = 0
            latency: list[float] = []
            for m in list(phase.messages.values()):
                if m.acked and m.received:
                    delivered += 1
                    if previous < max(m.t_ack, m.t_recv) <= now:
                        received += 1
                if m.received and previous < m.t_recv <= now:
                    latency.append(m.t_recv - m.t_send)
                if m.received > 1:
                    duplicated += m.received - 1
                if m.acked and not m.received and m.t_ack < now - grace:
                    lost += 1  # so far: acked longer ago than the grace period, never received
                if not m.acked and not m.error and m.t_send < now - grace:
                    overdue += 1
            latency.sort()
            line = {
                "event": "progress",
                "t": round(now - phase.t_start, 1),
                "delivered_per_s": round(received / (now - previous), 1),
                "latency_ms": {"p50": ms(percentile(latency, 50)), "p99": ms(percentile(latency, 99))},
                "sent": len(phase.messages),
                "delivered": delivered,
                "lost_so_far": lost,
                "duplicated_so_far": duplicated,
                "unacked_overdue": overdue,
                "errors": dict(phase.errors),
                "unexpected_closes": dict(self.closed),
            }
            print(json.dumps(line), flush=True)
            previous = now

    def _report(
        self,
        phase: Phase,
        mode: str,
        seconds: float,
        window: int,
        rate: float,
        cpu_send: float,
        dump: str | None,
    ) -> dict[str, Any]:
        everything = phase.messages.values()
        messages = [m for m in everything if m.t_send >= phase.t_start]  # the measured window
        early = [m for m in everything if m.t_send < phase.t_start]  # the lead-in
        window_end = phase.t_start + seconds
        delivered = [m for m in messages if m.acked and m.received]
        in_window = sum(1 for m in delivered if max(m.t_ack, m.t_recv) <= window_end)
        latency = sorted(m.t_recv - m.t_send for m in messages if m.received)
        ack_latency = sorted(m.t_ack - m.t_send for m in messages if m.acked)
        last_done = max((max(m.t_ack, m.t_recv) for m in delivered), default=phase.t_start)
        report: dict[str, Any] = {
            "mode": mode,
            "pairs": len(phase.senders),
            "seconds": seconds,
            "window": window if mode == "saturation" else None,
            "offered_per_s": round(rate * len(phase.senders), 1) if mode == "offered" else None,
            "sent": len(messages),
            "acked": sum(1 for m in messages if m.acked),
            "received": sum(1 for m in messages if m.received),
            "delivered": len(delivered),
            "delivered_in_window": in_window,
            "msgs_per_s": round(in_window / seconds, 1),
            "msgs_per_s_overall": round(len(delivered) / max(1e-9, last_done - phase.t_start), 1),
            "latency_ms": {
                "p50": ms(percentile(latency, 50)),
                "p90": ms(percentile(latency, 90)),
                "p99": ms(percentile(latency, 99)),
                "max": ms(latency[-1] if latency else None),
            },
            "ack_latency_ms": {
                "p50": ms(percentile(ack_latency, 50)),
                "p99": ms(percentile(ack_latency, 99)),
            },
            # every message of the phase, the lead-in's too: none may be lost or duplicated
            "lost": sum(1 for m in everything if m.acked and not m.received),
            "duplicated": sum(m.received - 1 for m in everything if m.received > 1),
            "unacked": sum(1 for m in everything if not m.acked and not m.error),
            "received_unacked": sum(1 for m in everything if m.received and not m.acked),
            "errors": phase.errors,
            "expired_slots": phase.expired,
            "foreign_received": phase.foreign,
            "unexpected_closes": dict(self.closed),
            "loadgen_cpu_s": round(cpu_send, 2),
            "loadgen_cpu_util": round(cpu_send / max(1e-9, phase.t_end - phase.t_start + phase.lead_in), 2),
        }
        if phase.lead_in:
            early_latency = sorted(m.t_recv - m.t_send for m in early if m.received)
            report["lead_in"] = {
                "seconds": phase.lead_in,
                "sent": len(early),
                "delivered": sum(1 for m in early if m.acked and m.received),
                "latency_ms": {
                    "p50": ms(percentile(early_latency, 50)),
                    "p99": ms(percentile(early_latency, 99)),
                    "max": ms(early_latency[-1] if early_latency else None),
                },
            }
        if dump:
            with open(dump, "w") as fh:
                json.dump(
                    {
                        "sent": list(phase.messages),
                        "acked": [cid for cid, m in phase.messages.items() if m.acked],
                        "received": [cid for cid, m in phase.messages.items() if m.received],
                        "t_start": phase.t_start,  # time.perf_counter(): one clock machine-wide
                        "t_start_wall": time.time() - (time.perf_counter() - phase.t_start),
                        # [seconds into the phase at the send, send -> receive seconds]: where in
                        # the run the slow deliveries were
                        "latency": [
                            [round(m.t_send - phase.t_start, 4), round(m.t_recv - m.t_send, 6)]
                            for m in messages
                            if m.received
                        ],
                    },
                    fh,
                )
        return report

    async def warmup(self, seconds: float) -> dict[str, Any]:
        """Open the first pair, send 20 messages/s for ``seconds`` (under any rate limit), close it."""
        saved = self.pairs
        self.pairs = saved[:1]
        try:
            await self.connect()
            result = await self.run_phase("offered", seconds=seconds, rate=20.0, grace=10)
            await self.close()
        finally:
            self.pairs = saved
            self.closed = {}
        return {"event": "warm", "delivered": result["delivered"], "lost": result["lost"]}


async def control_loop(gen: LoadGen) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "quit":
            break
        if name == "connect":
            reply = await gen.connect()
        elif name == "warmup":
            reply = await gen.warmup(float(command.get("seconds", 2.0)))
        elif name == "close":
            reply = await gen.close()
        elif name in ("saturation", "offered"):
            reply = await gen.run_phase(name, **command)
        else:
            reply = {"event": "error", "message": f"unknown command {name}"}
        print(json.dumps(reply), flush=True)
    await gen.close()


async def standalone(gen: LoadGen, args: argparse.Namespace) -> None:
    out: dict[str, Any] = {"connect": await gen.connect()}
    modes = ["saturation", "offered"] if args.mode == "both" else [args.mode]
    for mode in modes:
        out[mode] = await gen.run_phase(
            mode,
            args.seconds,
            window=args.window,
            rate=args.rate,
            grace=args.grace,
            msg_timeout=args.msg_timeout,
            lead_in=args.lead_in,
        )
    out["close"] = await gen.close()
    print(json.dumps(out, indent=2))


# --- the swarm: many sockets, rooms, fan-out and reconnect storms ---------------------------------

CLIENT_ID_KEY = '"client_id":"'


class FanMsg:
    __slots__ = ("acked", "done", "first", "last", "received", "t_ack", "t_send")

    def __init__(self, t_send: float) -> None:
        self.t_send = t_send
        self.t_ack = 0.0
        self.acked = False
        self.received = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()


class FanPhase:
    def __init__(self, expected: int) -> None:
        self.expected = expected  # deliveries per message (members other than the sender)
        self.messages: dict[str, FanMsg] = {}
        self.duplicates = 0
        self.errors: Counter[str] = Counter()
        self.seen: set[tuple[int, str]] = set()


class Sock:
    __slots__ = (
        "acks",
        "attempts",
        "cursor",
        "hint",
        "index",
        "reader",
        "ready",
        "refusals",
        "room",
        "synced",
        "synced_at",
        "token",
        "ws",
    )

    def __init__(self, index: int, token: str | None, room: int) -> None:
        self.index = index
        self.token = token
        self.room = room
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.cursor: str | None = None
        self.hint: dict[str, Any] | None = None
        self.ready = asyncio.Event()
        self.synced = asyncio.Event()
        self.synced_at = 0.0
        self.attempts = 0
        self.refusals = 0
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}


class Refused(Exception):
    def __init__(self, code: int | None, retry_after_ms: int | None) -> None:
        super().__init__(code)
        self.code = code
        self.retry_after_ms = retry_after_ms


class Swarm:
    def __init__(self) -> None:
        self.url = ""
        self.socks: list[Sock] = []
        self.frames: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.fan: FanPhase | None = None
        self.storm_on = False
        self.policy = "hint"
        self.storm_tasks: list[asyncio.Task[None]] = []
        self.storm_start = 0.0
        self.storm_sync = True
        self.storm_stats: Counter[str] = Counter()
        self.compression = False  # offer permessage-deflate, as browsers do (bench/idle.py --compression)

    # --- sockets --------------------------------------------------------------------------------
    async def _connect(self, sock: Sock) -> None:
        """One connection attempt up to ``ready`` (raises ``Refused`` on an error frame/close)."""
        sock.attempts += 1
        headers = {"Authorization": f"Bearer {sock.token}"} if sock.token else None
        ws = await connect(
            f"{self.url}?c={sock.room}",
            additional_headers=headers,
            compression="deflate" if self.compression else None,
            proxy=None,
            ping_interval=None,
            open_timeout=30,
            close_timeout=5,
            max_size=2**22,
        )
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            raise Refused(code, None) from exc
        if first.get("type") != "ready":
            retry = (first.get("error") or {}).get("retry_after_ms")
            code = None
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), 5)
                code = ws.close_code
            raise Refused(code, retry)
        sock.hint = (first.get("data") or {}).get("reconnect") or sock.hint
        sock.ws = ws
        sock.ready.set()
        sock.reader = asyncio.create_task(self._read(sock, ws))

    async def _open_one(self, sock: Sock, gate: asyncio.Semaphore, sync: bool) -> bool:
        async with gate:
            try:
                await self._connect(sock)
                if sync:
                    await self._sync(sock)
            except Exception as exc:
                log(f"socket {sock.index}: open failed: {exc!r}")
                return False
        return True

    async def open(
        self,
        url: str,
        sockets_file: str,
        concurrency: int = 64,
        sync: bool = False,
        compression: bool = False,
    ) -> dict[str, Any]:
        self.url = url
        self.compression = compression
        text = await asyncio.to_thread(Path(sockets_file).read_text)
        specs = json.loads(text)["sockets"]
        self.socks = [Sock(i, s.get("token"), int(s.get("room", 0))) for i, s in enumerate(specs)]
        gate = asyncio.Semaphore(concurrency)
        cpu0, started = cpu_seconds(), time.perf_counter()
        results = await asyncio.gather(*(self._open_one(s, gate, sync) for s in self.socks))
        return {
            "event": "opened",
            "open": self.open_count(),
            "failed": results.count(False),
            "seconds": round(time.perf_counter() - started, 2),
            "client_cpu_s": round(cpu_seconds() - cpu0, 2),
        }

    def open_count(self) -> int:
        return sum(1 for s in self.socks if s.ws is not None)

    async def close(self) -> dict[str, Any]:
        self.storm_on = False
        for task in self.storm_tasks:
            task.cancel()
        socks = [s for s in self.socks if s.ws is not None]

        async def shut(sock: Sock) -> None:
            ws, sock.ws = sock.ws, None
            if ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 10)

        await asyncio.gather(*(shut(s) for s in socks))
        for s in self.socks:
            if s.reader is not None:
                s.reader.cancel()
        return {"event": "closed", "closed": len(socks)}

    # --- frames in ----------------------------------------------------------------------------------
    async def _read(self, sock: Sock, ws: ClientConnection) -> None:
        frames = self.frames
        try:
            async for text in ws:
                now = time.perf_counter()
                assert isinstance(text, str)
                if text.startswith('{"type":"message.new"'):
                    frames["message.new"] += 1
                    fan = self.fan
                    if fan is not None:
                        at = text.find(CLIENT_ID_KEY)
                        if at >= 0:
                            cid = text[at + len(CLIENT_ID_KEY) : at + len(CLIENT_ID_KEY) + 36]
                            msg = fan.messages.get(cid)
                            if msg is not None:
                                if (sock.index, cid) in fan.seen:
                                    fan.duplicates += 1
                                    continue
                                fan.seen.add((sock.index, cid))
                                msg.received += 1
                                if msg.received == 1:
                                    msg.first = now
                                if msg.received >= fan.expected:
                                    msg.last = now
                                    if msg.acked:
                                        msg.done.set()
                    continue
                frame = json.loads(text)
                kind = frame.get("type", "?")
                frames[kind] += 1
                ref = frame.get("ref")
                if ref is not None:
                    waiter = sock.acks.pop(ref, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
        except ConnectionClosed as exc:
            code = str(exc.rcvd.code) if exc.rcvd else "none"
            self.closes[code] += 1
        finally:
            if sock.ws is ws:
                sock.ws = None
                sock.ready.clear()
                for waiter in sock.acks.values():
                    if not waiter.done():
                        waiter.set_exception(ConnectionError("closed"))
                sock.acks.clear()
                if self.storm_on:
                    sock.synced.clear()
                    self.storm_tasks.append(asyncio.create_task(self._recover(sock)))

    async def _request(
        self, sock: Sock, kind: str, data: dict[str, Any] | None, wait_s: float = 60
    ) -> dict[str, Any]:
        ref = uuid.uuid4().hex[:16]
        frame: dict[str, Any] = {"type": kind, "ref": ref}
        if data is not None:
            frame["data"] = data
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        sock.acks[ref] = waiter
        assert sock.ws is not None
        await sock.ws.send(json.dumps(frame))
        return await asyncio.wait_for(waiter, wait_s)

    async def _sync(self, sock: Sock) -> int:
        """``sync`` from the socket's cursor until ``more`` is false; the number of batches."""
        batches = 0
        while True:
            reply = await self._request(sock, "sync", {"cursor": sock.cursor} if sock.cursor else None)
            batches += 1
            if reply.get("type") != "sync.done":
                raise RuntimeError(f"sync answered {reply}")
            sock.cursor = reply["data"]["cursor"]
            if not reply["data"].get("more"):
                return batches

    # --- fan-out --------------------------------------------------------------------------------------
    async def fanout(
        self,
        senders: list[int],
        room: int,
        seconds: float | None = None,
        window: int = 4,
        count: int = 0,
        wait_s: float = 30.0,
    ) -> dict[str, Any]:
        members = self.open_count()
        fan = FanPhase(expected=members - 1)
        self.fan = fan
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        end = start + (seconds or 0)

        async def one(sock: Sock) -> None:
            cid = str(uuid.uuid4())
            msg = fan.messages[cid] = FanMsg(time.perf_counter())
            text = (
                f'{{"type":"message.send","ref":"{cid}","data":{{"conversation_id":{room},'
                f'"client_id":"{cid}","body":"fan-out {len(fan.messages)}"}}}}'
            )
            waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            sock.acks[cid] = waiter
            assert sock.ws is not None
            await sock.ws.send(text)
            try:
                reply = await asyncio.wait_for(waiter, wait_s)
            except (TimeoutError, ConnectionError):
                fan.errors["no_ack"] += 1
                return
            if reply.get("type") != "ack":
                fan.errors[(reply.get("error") or {}).get("code", "?")] += 1
                return
            msg.acked, msg.t_ack = True, time.perf_counter()
            if msg.received >= fan.expected:
                msg.done.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(msg.done.wait(), wait_s)

        async def sender(sock: Sock) -> None:
            if seconds:
                inflight: set[asyncio.Task[None]] = set()
                while time.perf_counter() < end:
                    while len(inflight) >= window:
                        _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    inflight.add(asyncio.create_task(one(sock)))
                if inflight:
                    await asyncio.wait(inflight)
            else:
                for _ in range(count):
                    await one(sock)

        await asyncio.gather(*(sender(self.socks[i]) for i in senders))
        finished = time.perf_counter()
        await asyncio.sleep(0.5)  # duplicates, if any
        self.fan = None
        msgs = list(fan.messages.values())
        delivered = sum(m.received for m in msgs)
        complete = [m for m in msgs if m.received >= fan.expected]
        last_member = sorted(m.last - m.t_send for m in complete)
        first_member = sorted(m.first - m.t_send for m in msgs if m.received)
        busy = max((m.last for m in complete), default=finished) - start
        window_s = seconds if seconds else busy
        in_window = delivered if not seconds else sum(m.received for m in msgs if m.last and m.last <= end)
        return {
            "event": "fanout",
            "members": members,
            "senders": len(senders),
            "messages": len(msgs),
            "acked": sum(1 for m in msgs if m.acked),
            "deliveries": delivered,
            "expected_deliveries": len(msgs) * fan.expected,
            "deliveries_per_s": round((in_window if seconds else delivered) / max(1e-9, window_s), 1),
            "messages_per_s": round(len(complete) / max(1e-9, window_s), 1),
            "last_member_ms": {
                "p50": ms(percentile(last_member, 50)),
                "p90": ms(percentile(last_member, 90)),
                "p99": ms(percentile(last_member, 99)),
                "max": ms(last_member[-1] if last_member else None),
            },
            "first_member_ms_p50": ms(percentile(first_member, 50)),
            "lost": sum(fan.expected - m.received for m in msgs if m.acked and m.received < fan.expected),
            "duplicated": fan.duplicates,
            "errors": dict(fan.errors),
            "client_cpu_s": round(cpu_seconds() - cpu0, 2),
            "client_cores": round((cpu_seconds() - cpu0) / max(1e-9, finished - start), 2),
            "seconds": round(finished - start, 2),
        }

    async def send_each(self, senders: list[int], count: int) -> dict[str, Any]:
        async def run(sock: Sock) -> int:
            ok = 0
            for _ in range(count):
                cid = str(uuid.uuid4())
                reply = await self._request(
                    sock, "message.send", {"conversation_id": sock.room, "client_id": cid, "body": "before"}
                )
                ok += reply.get("type") == "ack"
            return ok

        acked = await asyncio.gather(*(run(self.socks[i]) for i in senders))
        return {"event": "sent", "acked": sum(acked), "expected": count * len(senders)}

    # --- storm --------------------------------------------------------------------------------------
    def _delay(self, sock: Sock, failures: int, retry_after_ms: int | None) -> float:
        """docs/protocol.md#reconnecting: the hint's range first, ``retry_after_ms`` when refused,
        exponential backoff with full jitter (base ``min_ms``, cap ``max_ms``) after failures."""
        if self.policy == "naive":
            return 0.0 if failures == 0 else 0.1
        hint = sock.hint or {}
        low, high = float(hint.get("min_ms", 250)) / 1000, float(hint.get("max_ms", 4000)) / 1000
        if retry_after_ms is not None:  # the server said when: honour it, plus a little jitter
            return retry_after_ms / 1000 + random.uniform(0, low)
        if failures == 0:
            return random.uniform(low, high)
        return random.uniform(0, min(high, max(low, 0.05) * 2**failures))

    async def _recover(self, sock: Sock) -> None:
        failures = 0
        retry_after: int | None = None
        while self.storm_on:
            await asyncio.sleep(self._delay(sock, failures, retry_after))
            retry_after = None
            try:
                await self._connect(sock)
            except Refused as exc:
                sock.refusals += 1
                self.storm_stats[f"refused_{exc.code}"] += 1
                retry_after = exc.retry_after_ms
                failures += 1
                continue
            except Exception as exc:  # refused, reset, timed out, no valid HTTP answer...
                self.storm_stats[f"connect_failed_{type(exc).__name__}"] += 1
                failures += 1
                continue
            if self.storm_sync:
                try:
                    batches = await self._sync(sock)
                except Exception as exc:  # the socket closed again: its reader schedules a retry
                    self.storm_stats[f"sync_failed_{type(exc).__name__}"] += 1
                    return
                self.storm_stats["sync_batches"] += batches
            sock.synced_at = time.perf_counter()
            sock.synced.set()
            return

    async def storm(self, policy: str = "hint", give_up_s: float = 60.0, sync: bool = True) -> dict[str, Any]:
        """Armed now; the server restart is the caller's business. Answers when all synced again
        (or, with ``sync`` false, when all are connected again)."""
        self.policy = policy
        self.storm_sync = sync
        frames0 = self.frames["message.new"]
        self.storm_stats = Counter()
        for s in self.socks:
            s.attempts = 0
            s.refusals = 0
            s.synced_at = 0.0
        self.storm_start = time.perf_counter()
        self.storm_on = True
        print(json.dumps({"event": "armed"}), flush=True)
        deadline = self.storm_start + give_up_s
        # every socket must first drop, then sync again
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            if all(s.synced_at > 0 for s in self.socks):
                break
        self.storm_on = False
        stuck = [s for s in self.socks if s.synced_at == 0]
        if stuck:  # what the sockets that never synced were doing (diagnostics)
            waiting: Counter[str] = Counter()
            for task in self.storm_tasks:
                if not task.done():
                    frames = task.get_stack(limit=8)
                    waiting[" < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames[-3:])] += 1
            log(
                f"storm: {len(stuck)} never synced; open {sum(1 for s in stuck if s.ws)}; waiting in {dict(waiting)}"
            )
        done = sorted(s.synced_at - self.storm_start for s in self.socks if s.synced_at > 0)
        attempts = Counter(min(s.attempts, 10) for s in self.socks)
        return {
            "event": "storm",
            "policy": policy,
            "sockets": len(self.socks),
            "synced": len(done),
            "all_synced_s": round(done[-1], 3) if len(done) == len(self.socks) and done else None,
            "synced_s": {
                "p50": round(percentile(done, 50) or 0, 3),
                "p90": round(percentile(done, 90) or 0, 3),
                "p99": round(percentile(done, 99) or 0, 3),
            },
            "attempts_histogram": {str(k): v for k, v in sorted(attempts.items())},
            "connect_attempts": sum(s.attempts for s in self.socks),
            "stats": dict(self.storm_stats),
            "closes": dict(self.closes),
            "message_new_received": self.frames["message.new"] - frames0,
        }


async def swarm_control_loop(swarm: Swarm) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        name = command.pop("cmd")
        try:
            if name == "quit":
                break
            if name == "open":
                reply = await swarm.open(**command)
            elif name == "status":
                reply = {
                    "event": "status",
                    "open": swarm.open_count(),
                    "closes": dict(swarm.closes),
                    "frames": dict(swarm.frames),
                    "client_cpu_s": round(cpu_seconds(), 2),
                }
            elif name == "fanout":
                reply = await swarm.fanout(**command)
            elif name == "send_each":
                reply = await swarm.send_each(**command)
            elif name == "storm":
                reply = await swarm.storm(**command)
            elif name == "close":
                reply = await swarm.close()
            else:
                reply = {"event": "error", "message": f"unknown command {name}"}
        except Exception as exc:
            log(f"command {name} failed: {exc!r}")
            reply = {"event": "error", "message": repr(exc)}
        print(json.dumps(reply), flush=True)
    await swarm.close()


def run_loop(main_coro: Any, *, no_uvloop: bool = False) -> None:
    if no_uvloop:
        asyncio.run(main_coro)
        return
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--swarm", action="store_true", help="the swarm client (needs --control)")
    parser.add_argument("--url", help="pairs: ws://127.0.0.1:PORT/ws/v1/")
    parser.add_argument("--pairs", help="pairs: JSON file with the socket pairs")
    parser.add_argument("--control", action="store_true", help="read commands on stdin")
    parser.add_argument("--mode", choices=["saturation", "offered", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--window", type=int, default=4, help="messages in flight per sender")
    parser.add_argument("--rate", type=float, default=1.0, help="messages/s per sender (offered)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to wait for stragglers")
    parser.add_argument("--msg-timeout", type=float, default=30.0)
    parser.add_argument(
        "--lead-in", type=float, default=0.0, help="offered: seconds of the same load before the window"
    )
    parser.add_argument("--body-bytes", type=int, default=64)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    if args.swarm:
        if not args.control:
            parser.error("--swarm reads its commands on stdin: add --control")
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        run_loop(swarm_control_loop(Swarm()), no_uvloop=args.no_uvloop)
        return
    if not args.url or not args.pairs:
        parser.error("the pairs client needs --url and --pairs")
    with open(args.pairs) as fh:
        pairs = json.load(fh)["pairs"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * len(pairs) + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    async def run() -> None:
        gen = LoadGen(args.url, pairs, args.body_bytes)
        if args.control:
            await control_loop(gen)
        else:
            await standalone(gen, args)

    run_loop(run(), no_uvloop=args.no_uvloop)


if __name__ == "__main__":
    main()
