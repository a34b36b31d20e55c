"""Many sockets in one process (asyncio + websockets): the client of the idle, fan-out and storm
benchmarks. It runs in its own process, driven by ``bench/perfkit.py``'s ``Swarm``: one JSON
command per line on stdin, one JSON answer per line on stdout.

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
import json
import random
import resource
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

# The measuring helpers every load generator shares: defined once, in loadgen.py (this script
# runs from bench/, beside it).
from loadgen import cpu_seconds, log, ms, percentile
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

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

    # --- sockets --------------------------------------------------------------------------------
    async def _connect(self, sock: Sock) -> None:
        """One connection attempt up to ``ready`` (raises ``Refused`` on an error frame/close)."""
        sock.attempts += 1
        headers = {"Authorization": f"Bearer {sock.token}"} if sock.token else None
        ws = await connect(
            f"{self.url}?c={sock.room}",
            additional_headers=headers,
            compression=None,
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
        self, url: str, sockets_file: str, concurrency: int = 64, sync: bool = False
    ) -> dict[str, Any]:
        self.url = url
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


async def control_loop(swarm: Swarm) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--control", action="store_true", required=True, help="read commands on stdin")
    parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(control_loop(Swarm()))
    else:
        uvloop.run(control_loop(Swarm()))


if __name__ == "__main__":
    main()
