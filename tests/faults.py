"""Clients for fault tests: they ride out faults the way the app must, and the exactly-once check.

A ``Peer`` is one user's socket. It reconnects (to any of the servers it was given, in turn),
runs ``sync`` from its last cursor after every (re)connect, and sends one message at a time; a
message answered by an ``error`` frame, or left unanswered when the socket dropped, is sent again
with the SAME ``client_id`` until it is acked (what the protocol asks of clients).

The ``Ledger`` records what every client saw: each ack, each ``message.new`` (live or replayed
by ``sync``) and each error code. ``check_exactly_once`` then holds the clients' views and the
``messaging_message`` rows against each other: every acked message stored once, under the seq
and id its ack named; seq 1..n without a gap; no ``client_id`` twice; and every member's view
of a conversation (deduplicated by message id, as the app does) equal to the rows, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, WebSocketException

from tests.wsclient import WsClient


class Dropped(ConnectionError):
    """The socket closed before the reply came."""


@dataclass
class Outgoing:
    """One message a client wants delivered; ``ack`` is the stored message its ack named."""

    conversation_id: int
    body: str
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ack: dict[str, Any] | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class Ledger:
    """What the clients saw, for ``check_exactly_once``."""

    def __init__(self) -> None:
        self.outgoing: dict[str, Outgoing] = {}
        self.errors: Counter[str] = Counter()
        # user id -> message id -> the message as last shown (live or through sync)
        self.seen: defaultdict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.frames: Counter[str] = Counter()  # message.new frames: "live" / "sync"
        self.first_shown: dict[tuple[int, int], str] = {}  # (user id, message id) -> live / sync
        self.problems: list[str] = []
        self.reconnects = 0
        self._changed: asyncio.Event | None = None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def until(
        self, predicate: Callable[[], bool], timeout: float, *, stop: asyncio.Future[Any] | None = None
    ) -> bool:
        """Wait until ``predicate()`` holds (checked on every ack and shown message), or
        ``timeout``, or ``stop`` is done; returns ``predicate()``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._changed = self._changed or asyncio.Event()
        while not predicate() and not (stop is not None and stop.done()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))
        return predicate()

    def plan(self, conversation_id: int, body: str) -> Outgoing:
        item = Outgoing(conversation_id, body)
        self.outgoing[item.client_id] = item
        return item

    def acked(self) -> list[Outgoing]:
        return [o for o in self.outgoing.values() if o.ack is not None]

    def record_ack(self, item: Outgoing, message: dict[str, Any]) -> None:
        if message["client_id"] != item.client_id:
            self.problems.append(f"ack for {item.client_id} names client_id {message['client_id']}")
        if item.ack is not None and item.ack["id"] != message["id"]:
            self.problems.append(f"{item.client_id} acked as two messages: {item.ack['id']}, {message['id']}")
        item.ack = message
        self._notify()

    def record_shown(self, user_id: int, message: dict[str, Any], how: str) -> None:
        self.frames[how] += 1
        self.first_shown.setdefault((user_id, message["id"]), how)
        before = self.seen[user_id].get(message["id"])
        if before is not None and (before["seq"], before["client_id"]) != (
            message["seq"],
            message["client_id"],
        ):
            self.problems.append(f"message {message['id']} shown as {before} and as {message}")
        self.seen[user_id][message["id"]] = message
        self._notify()


class Peer:
    """One user's socket that survives faults (see the module docstring)."""

    def __init__(
        self, user_id: int, token: str, urls: list[str], ledger: Ledger, *, follow_hint: bool = False
    ) -> None:
        self.user_id = user_id
        # follow_hint: after the server closed the socket (1012: restarting or draining), wait
        # what the ``ready`` frame's reconnect hint says (uniformly drawn), as apps must.
        self.follow_hint = follow_hint
        self.hint: dict[str, int] | None = None
        self.close_codes: list[int | None] = []
        self.hinted_waits: list[float] = []
        self.token = token
        self.urls = urls
        self.url_index = 0
        self.ledger = ledger
        self.client: WsClient | None = None
        self.cursor: str | None = None
        self.reader: asyncio.Task[None] | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.syncing = False
        self.sync_required = 0  # sync.required frames received (the server lost its live path)
        self.reconnects = 0
        self._refs = 0

    @property
    def connected(self) -> bool:
        return self.client is not None

    # --- connection ---------------------------------------------------------------------------
    async def connect(self, timeout: float = 20.0) -> None:
        """Connect (trying each server in turn until ``timeout``), then sync to the end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            url = self.urls[self.url_index % len(self.urls)]
            try:
                client = await WsClient.connect(url, self.token, open_timeout=5, ping_interval=None)
                break
            except (OSError, WebSocketException, TimeoutError) as exc:
                if loop.time() >= deadline:
                    raise TimeoutError(f"user {self.user_id} could not reconnect: {exc!r}") from exc
                self.url_index += 1
                await asyncio.sleep(0.1)
        self.client = client
        if client.ready is not None:
            self.hint = client.ready["data"].get("reconnect")
        self.reader = asyncio.create_task(self._read(client))
        for frame in client.inbox:  # anything that came with ``ready``
            self._dispatch(frame)
        client.inbox.clear()
        await self.sync()

    async def reconnect(self, timeout: float = 20.0) -> None:
        await self.drop()
        if self.follow_hint and self.hint and self.close_codes and self.close_codes[-1] == 1012:
            wait = random.uniform(self.hint["min_ms"], self.hint["max_ms"]) / 1000
            self.hinted_waits.append(wait)
            await asyncio.sleep(wait)
        self.ledger.reconnects += 1
        self.reconnects += 1
        await self.connect(timeout)

    async def drop(self) -> None:
        client, self.client = self.client, None
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
            self.reader = None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2)
        self._fail_waiting()

    async def close(self) -> None:
        await self.drop()

    def _fail_waiting(self) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(Dropped(f"socket of user {self.user_id} closed"))
        self.waiting.clear()

    async def _read(self, client: WsClient) -> None:
        try:
            async for raw in client.ws:
                self._dispatch(json.loads(raw))
        except (ConnectionClosed, OSError):
            pass
        finally:
            self.close_codes.append(client.close_code)
            if self.client is client:
                self.client = None
            self._fail_waiting()

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message.new":
            self.ledger.record_shown(
                self.user_id, frame["data"]["message"], "sync" if self.syncing else "live"
            )
        elif kind == "sync.required":  # the app then syncs from its cursor (the test does)
            self.sync_required += 1
        elif kind in ("ack", "error", "sync.done"):
            if kind == "error":
                self.ledger.errors[frame["error"]["code"]] += 1
            future = self.waiting.pop(str(frame.get("ref")), None)
            if future is not None and not future.done():
                future.set_result(frame)

    # --- requests -------------------------------------------------------------------------------
    async def request(self, type_: str, data: dict[str, Any] | None, timeout: float = 10.0) -> dict[str, Any]:
        client = self.client
        if client is None:
            raise Dropped(f"user {self.user_id} is not connected")
        self._refs += 1
        ref = f"u{self.user_id}-{self._refs}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[ref] = future
        try:
            await client.send(type_, data, ref=ref)
        except (ConnectionClosed, OSError) as exc:
            self.waiting.pop(ref, None)
            raise Dropped(str(exc)) from exc
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiting.pop(ref, None)

    async def sync(self) -> None:
        """``sync`` from the stored cursor until ``more`` is false (replayed frames are recorded)."""
        more = True
        while more:
            self.syncing = True
            try:
                done = await self.request("sync", {"cursor": self.cursor} if self.cursor else {}, timeout=20)
            finally:
                self.syncing = False
            if done["type"] != "sync.done":
                raise AssertionError(f"sync answered {done}")
            self.cursor, more = done["data"]["cursor"], done["data"]["more"]

    async def send_once(self, item: Outgoing, timeout: float = 10.0) -> bool:
        """One attempt; True when acked. Drops and timeouts leave the message unacked."""
        item.attempts += 1
        data = {"conversation_id": item.conversation_id, "client_id": item.client_id, "body": item.body}
        reply = await self.request("message.send", data, timeout)
        if reply["type"] == "ack":
            self.ledger.record_ack(item, reply["data"]["message"])
            return True
        item.errors.append(reply["error"]["code"])
        return False

    async def deliver(
        self, items: Iterable[Outgoing], *, deadline: float, pause: float = 0.0, retry_pause: float = 0.1
    ) -> None:
        """Send each item until acked (same ``client_id``), reconnecting when the socket drops."""
        loop = asyncio.get_running_loop()
        for item in items:
            while item.ack is None:
                if loop.time() > deadline:
                    raise TimeoutError(f"user {self.user_id}: {item.client_id} never acked ({item.errors})")
                try:
                    if not self.connected:
                        await self.reconnect(timeout=max(1.0, deadline - loop.time()))
                    if await self.send_once(item):
                        break
                    await asyncio.sleep(retry_pause)  # an error frame: try again
                except (Dropped, TimeoutError):
                    await self.drop()
            if pause:
                await asyncio.sleep(pause)


# --- the check ---------------------------------------------------------------------------------
def stored_messages(conversation_ids: list[int]) -> dict[int, list[tuple[int, int, str]]]:
    """conversation id -> [(seq, message id, client_id)] from PostgreSQL, in seq order."""
    from messaging.models import Message

    rows: dict[int, list[tuple[int, int, str]]] = {c: [] for c in conversation_ids}
    for conversation_id, seq, pk, client_id in (
        Message.objects.filter(conversation_id__in=conversation_ids)
        .order_by("conversation_id", "seq")
        .values_list("conversation_id", "seq", "pk", "client_id")
    ):
        rows[conversation_id].append((seq, pk, str(client_id)))
    return rows


def check_exactly_once(
    ledger: Ledger,
    members: dict[int, list[int]],
    *,
    all_acked: bool = True,
    db_reader: Callable[[list[int]], dict[int, list[tuple[int, int, str]]]] = stored_messages,
) -> dict[str, int]:
    """Assert exactly-once, in order, for ``members`` (conversation id -> member user ids).

    Only the fault test's own traffic may be in those conversations. Returns a few counts.
    """
    assert not ledger.problems, ledger.problems[:10]
    stored = db_reader(list(members))
    acked = ledger.acked()
    if all_acked:
        unacked = [o for o in ledger.outgoing.values() if o.ack is None]
        assert not unacked, f"{len(unacked)} messages never acked, e.g. {unacked[:3]}"
    by_client_id: dict[str, tuple[int, int, int]] = {}
    for conversation_id, rows in stored.items():
        seqs = [seq for seq, _, _ in rows]
        assert seqs == list(range(1, len(rows) + 1)), f"conversation {conversation_id}: seq gaps {seqs[:20]}"
        client_ids = [cid for _, _, cid in rows]
        assert len(set(client_ids)) == len(client_ids), f"conversation {conversation_id}: a client_id twice"
        for seq, pk, cid in rows:
            by_client_id[cid] = (conversation_id, seq, pk)
    for item in acked:
        assert item.ack is not None
        found = by_client_id.get(item.client_id)
        assert found is not None, f"acked but not stored: {item.client_id} ({item.ack})"
        assert found == (item.conversation_id, item.ack["seq"], item.ack["id"]), (found, item.ack)
    planned = set(ledger.outgoing)
    strangers = [cid for cid in by_client_id if cid not in planned]
    assert not strangers, f"rows nobody sent: {strangers[:5]}"
    # Every member's view of every conversation: its own acks plus what it was shown.
    for conversation_id, user_ids in members.items():
        rows = stored[conversation_id]
        for user_id in user_ids:
            own = {
                o.ack["id"]: o.ack
                for o in acked
                if o.ack is not None
                and o.conversation_id == conversation_id
                and o.ack["sender_id"] == user_id
            }
            shown = {
                pk: m for pk, m in ledger.seen[user_id].items() if m["conversation_id"] == conversation_id
            }
            view = sorted({**shown, **own}.values(), key=lambda m: m["seq"])
            assert [(m["seq"], m["id"], m["client_id"]) for m in view] == rows, (
                f"user {user_id} in conversation {conversation_id}: view of {len(view)} messages "
                f"differs from the {len(rows)} stored"
            )
    return {
        "stored": sum(len(r) for r in stored.values()),
        "acked": len(acked),
        "resent": sum(1 for o in ledger.outgoing.values() if o.attempts > 1),
        "errors": sum(ledger.errors.values()),
        "live_frames": ledger.frames["live"],
        "sync_frames": ledger.frames["sync"],
        "reconnects": ledger.reconnects,
    }
