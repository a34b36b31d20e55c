"""Load generator for ``/ws/v1/`` (and for ``bench/relay.py``): its own process, asyncio + websockets.

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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import sys
import time
import uuid
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ws/v1/")
    parser.add_argument("--pairs", required=True, help="JSON file with the socket pairs")
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

    if args.no_uvloop:
        asyncio.run(run())
        return
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(run())
    else:
        uvloop.run(run())


if __name__ == "__main__":
    main()
