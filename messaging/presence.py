"""The register of connected users: presence in Redis, shared by every server process.

Each connection is a member of ``<prefix>:presence:<user_id>`` (a sorted set) scored by its
expiry time; heartbeats push the expiry forward, so a process that dies leaves no user
"online" for longer than ``PRESENCE_TTL``. Without Redis (embedded mode: one process) the
same register lives in memory.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import redis.asyncio as aioredis
from django.conf import settings


def ttl() -> float:
    """Seconds a connection counts as live without a heartbeat."""
    return float(settings.HEALTHCHAT_PRESENCE_TTL)


def heartbeat_interval() -> float:
    return float(settings.HEALTHCHAT_PRESENCE_HEARTBEAT)


class PresenceStore(Protocol):
    async def connect(self, user_id: int, conn_id: str) -> bool: ...
    async def heartbeat(self, user_id: int, conn_id: str) -> None: ...
    async def disconnect(self, user_id: int, conn_id: str) -> bool: ...
    async def status(self, user_ids: list[int]) -> dict[int, tuple[bool, float | None]]: ...


class RedisPresence:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._clients: dict[int, aioredis.Redis] = {}

    def _client(self) -> aioredis.Redis:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            # A blocking pool: a burst (a reconnect storm) waits for a connection instead of
            # failing once redis-py's default cap is reached.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=200, timeout=5, socket_connect_timeout=2, socket_timeout=5
            )
            client = aioredis.Redis(connection_pool=pool)
            self._clients[loop_id] = client
        return client

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}:presence:{user_id}"

    def _seen(self, user_id: int) -> str:
        return f"{self.prefix}:lastseen:{user_id}"

    async def connect(self, user_id: int, conn_id: str) -> bool:
        """Register a connection; True when the user just came online."""
        now = time.time()
        pipe = self._client().pipeline()
        pipe.zremrangebyscore(self._key(user_id), "-inf", now)
        pipe.zcard(self._key(user_id))
        pipe.zadd(self._key(user_id), {conn_id: now + ttl()})
        pipe.expire(self._key(user_id), int(ttl()) + 5)
        _, before, _, _ = await pipe.execute()
        return int(before) == 0

    async def heartbeat(self, user_id: int, conn_id: str) -> None:
        pipe = self._client().pipeline()
        pipe.zadd(self._key(user_id), {conn_id: time.time() + ttl()})
        pipe.expire(self._key(user_id), int(ttl()) + 5)
        await pipe.execute()

    async def disconnect(self, user_id: int, conn_id: str) -> bool:
        """Remove a connection; True when the user has no live connection left."""
        now = time.time()
        pipe = self._client().pipeline()
        pipe.zrem(self._key(user_id), conn_id)
        pipe.zremrangebyscore(self._key(user_id), "-inf", now)
        pipe.zcard(self._key(user_id))
        pipe.set(self._seen(user_id), str(now))
        _, _, remaining, _ = await pipe.execute()
        return int(remaining) == 0

    async def status(self, user_ids: list[int]) -> dict[int, tuple[bool, float | None]]:
        now = time.time()
        pipe = self._client().pipeline()
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
        if settings.REDIS_URL:
            _store = RedisPresence(
                settings.REDIS_URL,
                settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "healthchat"),
            )
        else:
            _store = MemoryPresence()
    return _store


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
