"""The presence register on real Redis: process-wide heartbeats instead of a task per socket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from messaging import presence

USER_BASE = 9_000_000_000  # ids no factory hands out: keys of their own


@pytest.fixture
def redis_store(settings: Any) -> Any:
    store = presence.store()
    assert isinstance(store, presence.RedisPresence), "tests run against real Redis"
    return store


async def _scores(store: presence.RedisPresence, entries: list[tuple[int, str]]) -> list[float | None]:
    client = store._client()
    pipe = client.pipeline(transaction=False)
    for uid, conn in entries:
        pipe.zscore(store._key(uid), conn)
    return list(await pipe.execute())


async def _forget(store: presence.RedisPresence, entries: list[tuple[int, str]]) -> None:
    client = store._client()
    await client.delete(*{store._key(uid) for uid, _ in entries}, *{store._seen(uid) for uid, _ in entries})


async def test_one_beat_refreshes_every_connection_in_chunked_round_trips(redis_store, settings, monkeypatch):
    settings.HEALTHCHAT_PRESENCE_TTL = 60
    entries = [(USER_BASE + i // 2, f"conn-{i}") for i in range(2 * presence.HEARTBEAT_CHUNK + 10)]
    try:
        for uid, conn in entries:
            await redis_store.connect(uid, conn)
        before = await _scores(redis_store, entries)
        await asyncio.sleep(0.05)
        calls: list[int] = []
        client = redis_store._client()
        real_evalsha = client.evalsha

        async def counting_evalsha(*args: Any, **kwargs: Any) -> Any:
            calls.append(int(args[1]))  # the number of keys: connections in this round trip
            return await real_evalsha(*args, **kwargs)

        monkeypatch.setattr(client, "evalsha", counting_evalsha)
        beats = presence.Heartbeats()
        for uid, conn in entries:
            beats.connections[conn] = uid
        await beats.beat()
        monkeypatch.undo()
        after = await _scores(redis_store, entries)
        # two chunks and ten: one script call per chunk, each connection once
        assert calls == [presence.HEARTBEAT_CHUNK, presence.HEARTBEAT_CHUNK, 10]
        ttls = await client.ttl(redis_store._key(entries[0][0]))
        assert 60 <= ttls <= 65  # the key outlives its connections' expiry
        assert all(b is not None and a is not None and a > b for a, b in zip(after, before, strict=True))
        assert all(a is not None and a > time.time() + 55 for a in after)
    finally:
        await _forget(redis_store, entries)


async def test_the_loop_beats_every_interval_and_stops_with_the_last_connection(redis_store, settings):
    settings.HEALTHCHAT_PRESENCE_TTL = 2
    settings.HEALTHCHAT_PRESENCE_HEARTBEAT = 0.2
    entries = [(USER_BASE + 100 + i, f"loop-{i}") for i in range(5)]
    beats = presence.Heartbeats()
    try:
        for uid, conn in entries:
            await redis_store.connect(uid, conn)
            beats.add(uid, conn)
        task = beats._task
        assert task is not None
        beats.add(*entries[0])  # a second add starts no second loop
        assert beats._task is task
        # Well past the TTL: only heartbeats keep the connections registered.
        await asyncio.sleep(3)
        status = await redis_store.status([uid for uid, _ in entries])
        assert all(online for online, _ in status.values())
        # A connection that left is no longer refreshed and expires.
        beats.discard(entries[0][1])
        await asyncio.sleep(2.5)
        status = await redis_store.status([uid for uid, _ in entries])
        assert status[entries[0][0]][0] is False
        assert all(status[uid][0] for uid, _ in entries[1:])
        for _, conn in entries[1:]:
            beats.discard(conn)
        await asyncio.wait_for(task, 1)  # no connection left: the loop ends
        assert beats._task is None
    finally:
        for _, conn in entries:
            beats.discard(conn)
        await _forget(redis_store, entries)


async def test_a_failed_beat_is_logged_and_the_next_one_retries(redis_store, settings, monkeypatch, caplog):
    settings.HEALTHCHAT_PRESENCE_HEARTBEAT = 0.1
    calls: list[int] = []

    async def flaky(entries: list[tuple[int, str]]) -> None:
        calls.append(len(entries))
        if len(calls) == 1:
            raise ConnectionError("redis away")

    monkeypatch.setattr(redis_store, "heartbeat_many", flaky)
    beats = presence.Heartbeats()
    beats.add(USER_BASE + 200, "flaky")
    await asyncio.sleep(0.35)
    beats.discard("flaky")
    assert calls[:2] == [1, 1]
    assert "presence heartbeat of 1 connections failed" in caplog.text


async def test_memory_register_heartbeat_many(settings):
    settings.HEALTHCHAT_PRESENCE_TTL = 60
    store = presence.MemoryPresence()
    assert await store.connect(1, "a") is True
    assert await store.connect(1, "b") is False
    before = dict(store.connections[1])
    await asyncio.sleep(0.01)
    await store.heartbeat_many([(1, "a"), (1, "b")])
    assert all(store.connections[1][c] > before[c] for c in ("a", "b"))
    assert await store.disconnect(1, "a") is False
    assert await store.disconnect(1, "b") is True
