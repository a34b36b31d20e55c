"""The register of connected users: presence in Redis, shared by every server process.

Each connection is a member of ``<prefix>:presence:<user_id>`` (a sorted set) scored by its
expiry time; heartbeats push the expiry forward, so a process that dies leaves no user
"online" for longer than ``PRESENCE_TTL``. Without Redis (embedded mode: one process) the
same register lives in memory.

Heartbeats are per process, not per socket: ``Heartbeats`` (one per event loop) refreshes every
local connection every ``PRESENCE_HEARTBEAT`` seconds in chunks, one script call (one command,
one round trip) per chunk, instead of one sleeping task and one round trip per socket (10,000
idle sockets: 100 round trips per interval instead of 10,000, and no task per socket). A chunk
is small enough that neither the event loop nor Redis is held up by it: the 1,000 connections of
a benchmark as one pipeline of 2,000 commands held the event loop for ~18 ms every 25 s (every
message in flight then waited), as 100-connection script calls ~0.15 ms at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import redis.asyncio as aioredis
from channels.layers import get_channel_layer
from django.conf import settings

from core import batcher, metrics, redis_roles
from core.realtime import presence_group

logger = logging.getLogger("healthchat.presence")

# Connections refreshed per script call (one round trip; the loop serves sockets in between).
HEARTBEAT_CHUNK = 100

# KEYS: each connection's user key; ARGV: expiry score, key lifetime (s), then the connection
# ids in KEYS' order. One command per chunk: redis-py packs and parses one command, not two per
# connection. The keys of one call share a hash slot (``slot_tag``): Redis Cluster runs it.
_HEARTBEAT_SCRIPT = """
local expiry, keep = ARGV[1], ARGV[2]
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[i + 2])
  redis.call('EXPIRE', key, keep)
end
return #KEYS
"""
# KEYS: each connection's user key; ARGV: now, expiry score, key lifetime (s), then the
# connection ids in KEYS' order. Each user's check-and-add is atomic (the script is); a user
# twice in one call comes online once. Returns 1 per connection whose user just came online.
_CONNECT_SCRIPT = """
local now, expiry, keep = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  out[i] = redis.call('ZCARD', key) == 0 and 1 or 0
  redis.call('ZADD', key, expiry, ARGV[i + 3])
  redis.call('EXPIRE', key, keep)
end
return out
"""
# KEYS[1]: the user's key; ARGV: now, the connection id. Returns the live connections left.
_DISCONNECT_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


def key_slots() -> int:
    """How many hash slots the presence and send-limit keys are spread over
    (``HEALTHCHAT_PRESENCE_KEY_SLOTS``): every multi-key call stays within one of them."""
    return max(1, int(settings.HEALTHCHAT_PRESENCE_KEY_SLOTS))


def slot_tag(user_id: int) -> str:
    """The hash tag of ``user_id``'s presence and send-limit keys: Redis (Cluster) hashes only
    what is between the braces, so the keys of users with the same tag share a slot."""
    return f"{{u{user_id % key_slots()}}}"


def by_slot(entries: list[tuple[int, Any]]) -> list[list[tuple[int, Any]]]:
    """``(user_id, ...)`` entries grouped by hash tag, in their order within each group."""
    groups: dict[str, list[tuple[int, Any]]] = {}
    for entry in entries:
        groups.setdefault(slot_tag(entry[0]), []).append(entry)
    return list(groups.values())


def ttl() -> float:
    """Seconds a connection counts as live without a heartbeat."""
    return float(settings.HEALTHCHAT_PRESENCE_TTL)


def heartbeat_interval() -> float:
    return float(settings.HEALTHCHAT_PRESENCE_HEARTBEAT)


class PresenceStore(Protocol):
    async def connect(self, user_id: int, conn_id: str) -> bool: ...
    async def heartbeat(self, user_id: int, conn_id: str) -> None: ...
    async def heartbeat_many(self, entries: list[tuple[int, str]]) -> None: ...
    async def disconnect(self, user_id: int, conn_id: str) -> bool: ...
    async def status(self, user_ids: list[int]) -> dict[int, tuple[bool, float | None]]: ...


class RedisPresence:
    def __init__(self, prefix: str, role: str = "presence") -> None:
        self.role = role
        self.prefix = prefix
        self._clients: dict[int, aioredis.Redis] = {}
        self._scripts: dict[tuple[int, str], Any] = {}

    def _client(self) -> aioredis.Redis:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            # A blocking pool: a burst (a reconnect storm) waits for a connection instead of
            # failing once redis-py's default cap is reached. Behind Sentinel each new
            # connection asks for the master (after a failover: the promoted replica).
            client = redis_roles.async_client(self.role, max_connections=200, timeout=5, socket_timeout=5)
            self._clients[loop_id] = client
        return client

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}:presence:{slot_tag(user_id)}:{user_id}"

    def _seen(self, user_id: int) -> str:
        # Not tagged: written with no other key in one call, and kept across versions (it has
        # no expiry; renaming it would forget every offline user's last seen time).
        return f"{self.prefix}:lastseen:{user_id}"

    def _script(self, source: str) -> Any:
        """``source`` registered on this loop's client (run by its SHA, loaded once)."""
        client = self._client()
        key = (id(client), source)
        script = self._scripts.get(key)
        if script is None:
            script = self._scripts[key] = client.register_script(source)
        return script

    async def connect(self, user_id: int, conn_id: str) -> bool:
        """Register a connection; True when the user just came online. Connections registering
        together (a reconnect storm) share one round trip (``connect_many``)."""
        return await batcher.loop_batcher(self.connect_many).submit((user_id, conn_id))

    async def connect_many(self, entries: list[tuple[int, str]]) -> list[bool]:
        """Register every ``(user_id, conn_id)``: one script call per hash slot, pipelined in one
        round trip (each user's check-and-add stays atomic; a user twice in the batch comes
        online once); each: came online?"""
        now = time.time()
        groups = by_slot([(uid, (position, conn)) for position, (uid, conn) in enumerate(entries)])
        # EVAL (Redis caches the compiled script by its hash): a pipelined EVALSHA would cost
        # redis-py a SCRIPT EXISTS round trip first.
        pipe = self._client().pipeline(transaction=False)
        for group in groups:
            keys = [self._key(uid) for uid, _ in group]
            pipe.eval(
                _CONNECT_SCRIPT,
                len(keys),
                *keys,
                now,
                now + ttl(),
                int(ttl()) + 5,
                *(conn for _, (_, conn) in group),
            )
        replies = await pipe.execute()
        out = [False] * len(entries)
        for group, reply in zip(groups, replies, strict=True):
            for (_, (position, _)), online in zip(group, reply, strict=True):
                out[position] = bool(int(online))
        return out

    async def heartbeat(self, user_id: int, conn_id: str) -> None:
        await self.heartbeat_many([(user_id, conn_id)])

    async def heartbeat_many(self, entries: list[tuple[int, str]]) -> None:
        """Push the expiry of every ``(user_id, conn_id)`` forward: one script call per
        ``HEARTBEAT_CHUNK`` connections of one hash slot, one after the other."""
        script = self._script(_HEARTBEAT_SCRIPT)
        for group in by_slot(entries):
            for start in range(0, len(group), HEARTBEAT_CHUNK):
                chunk = group[start : start + HEARTBEAT_CHUNK]
                expiry, keep = time.time() + ttl(), int(ttl()) + 5
                await script(
                    keys=[self._key(user_id) for user_id, _ in chunk],
                    args=[expiry, keep, *(conn_id for _, conn_id in chunk)],
                )

    async def disconnect(self, user_id: int, conn_id: str) -> bool:
        """Remove a connection; True when the user has no live connection left."""
        now = time.time()
        pipe = self._client().pipeline(transaction=False)
        pipe.eval(_DISCONNECT_SCRIPT, 1, self._key(user_id), now, conn_id)
        pipe.set(self._seen(user_id), str(now))
        remaining, _ = await pipe.execute()
        return int(remaining) == 0

    async def status(self, user_ids: list[int]) -> dict[int, tuple[bool, float | None]]:
        now = time.time()
        pipe = self._client().pipeline(transaction=False)  # single-key reads: any slots
        for uid in user_ids:
            pipe.zcount(self._key(uid), now, "+inf")
            pipe.get(self._seen(uid))
        results = await pipe.execute()
        out: dict[int, tuple[bool, float | None]] = {}
        for i, uid in enumerate(user_ids):
            live, seen = results[2 * i], results[2 * i + 1]
            out[uid] = (int(live) > 0, float(seen) if seen else None)
        return out


class MemoryPresence:
    """Embedded mode only (a single process, no Redis)."""

    def __init__(self) -> None:
        self.connections: dict[int, dict[str, float]] = {}
        self.last_seen: dict[int, float] = {}

    def _live(self, user_id: int) -> dict[str, float]:
        now = time.time()
        conns = {c: exp for c, exp in self.connections.get(user_id, {}).items() if exp > now}
        self.connections[user_id] = conns
        return conns

    async def connect(self, user_id: int, conn_id: str) -> bool:
        conns = self._live(user_id)
        was_offline = not conns
        conns[conn_id] = time.time() + ttl()
        return was_offline

    async def heartbeat(self, user_id: int, conn_id: str) -> None:
        self._live(user_id)[conn_id] = time.time() + ttl()

    async def heartbeat_many(self, entries: list[tuple[int, str]]) -> None:
        for user_id, conn_id in entries:
            self._live(user_id)[conn_id] = time.time() + ttl()

    async def disconnect(self, user_id: int, conn_id: str) -> bool:
        conns = self._live(user_id)
        conns.pop(conn_id, None)
        self.last_seen[user_id] = time.time()
        return not conns

    async def status(self, user_ids: list[int]) -> dict[int, tuple[bool, float | None]]:
        return {uid: (bool(self._live(uid)), self.last_seen.get(uid)) for uid in user_ids}


_store: Any = None


def store() -> PresenceStore:
    global _store
    if _store is None:
        if settings.REDIS_TARGETS.get("presence") is not None:
            _store = RedisPresence(
                settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "healthchat")
            )
        else:
            _store = MemoryPresence()
    return _store


class Heartbeats:
    """The live connections of this process (event loop) and the one task that refreshes them
    all every ``heartbeat_interval()`` seconds. The task starts with the first connection and
    ends with the last."""

    def __init__(self) -> None:
        self.connections: dict[str, int] = {}  # conn_id -> user_id
        self._task: asyncio.Task[None] | None = None

    def add(self, user_id: int, conn_id: str) -> None:
        self.connections[conn_id] = user_id
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, conn_id: str) -> None:
        self.connections.pop(conn_id, None)

    async def _run(self) -> None:
        while self.connections:
            await asyncio.sleep(heartbeat_interval())
            await self.beat()
        self._task = None

    async def beat(self) -> None:
        """Refresh every live connection now (one pipelined round trip per chunk)."""
        entries = [(user_id, conn_id) for conn_id, user_id in self.connections.items()]
        if not entries:
            return
        started = time.perf_counter()
        try:
            await store().heartbeat_many(entries)
        except Exception:  # presence is best-effort; the next beat retries every connection
            logger.warning("presence heartbeat of %d connections failed", len(entries), exc_info=True)
        metrics.heartbeat_done(started)


_heartbeats: dict[int, Heartbeats] = {}


def heartbeats() -> Heartbeats:
    """This event loop's (this server process's) heartbeat register."""
    loop_id = id(asyncio.get_running_loop())
    registry = _heartbeats.get(loop_id)
    if registry is None:
        registry = _heartbeats[loop_id] = Heartbeats()
    return registry


async def announce(user_id: int, online: bool, last_seen: float | None) -> None:
    """Tell the sockets watching ``user_id`` (its presence group, every process). Announcements
    made together (a reconnect storm) go out in one pipelined publication round trip."""
    await batcher.loop_batcher(_announce_many).submit((user_id, presence_frame(user_id, online, last_seen)))


async def _announce_many(items: list[tuple[int, dict[str, Any]]]) -> list[None]:
    layer = get_channel_layer()
    if layer is None:
        return [None] * len(items)
    events = [(presence_group(uid), {"type": "client.event", "frame": frame}) for uid, frame in items]
    send_many = getattr(layer, "group_send_many", None)
    if send_many is not None:
        await send_many(events)
    else:  # another layer (embedded mode: in-memory)
        for group, event in events:
            await layer.group_send(group, event)
    return [None] * len(items)


def presence_frame(user_id: int, online: bool, last_seen: float | None) -> dict[str, Any]:
    return {
        "type": "presence",
        "data": {
            "user_id": user_id,
            "online": online,
            "last_seen": None
            if last_seen is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last_seen)),
        },
    }
