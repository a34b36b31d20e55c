"""The channel layer: channels-redis' pub/sub layer with local delivery and batched publishing.

channels-redis' ``RedisPubSubChannelLayer`` sends every event through Redis, even to a socket of
the same process, one PUBLISH (one round trip, one write) at a time behind a lock, and every
receiving socket deserializes its own copy. This layer keeps its wire format and subscriptions
but:

- delivers to the sockets of this process directly (the same event dict to each; consumers must
  not mutate events), skipping a group event's ``exclude_channel``;
- still publishes every event for the other processes, tagged with this layer's origin, and
  ignores its own publications when Redis echoes them back;
- publishes many events in one pipelined round trip (``group_send_many``), in order;
- deserializes an event from another process once, however many local sockets receive it;
- serializes an event published to many groups at once (a group message to each member's user
  group) once, and publishes it once: an event for at least ``FANOUT_MIN_GROUPS`` groups goes to
  the other processes as ONE publication on the layer's fan-out channel naming its groups
  (every process with groups subscribes to it and delivers to the groups it has), instead of one
  PUBLISH per group that Redis would also echo back to this process once per group;
- tells every local socket to ``sync`` (``sync.required``) once its subscriptions are made again
  after Redis was lost: live events published in between never reached it;
- lets a consumer take its events through an ``Inbox`` that wakes it (``new_inbox``) instead of
  a task per socket blocked in ``receive``: an idle socket costs no task.

Live events stay at-most-once (a hint); PostgreSQL and ``sync`` are the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import uuid
from collections.abc import Callable
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import create_pool
from redis import asyncio as aioredis
from redis.utils import safe_str, truncate_text

from core import batcher, logs, metrics

logger = logging.getLogger("core.realtime")

ORIGIN_BYTES = 8
PUBLISH_TIMEOUT = 5.0  # seconds for one pipelined batch of PUBLISH commands
# Publications waiting for their round trip, per shard: past this (Redis stalled or away), new
# ones are dropped (live events are at-most-once; ``sync`` repairs) instead of piling up.
OUTBOX_MAX = 50_000
# An event sent to at least this many groups in one ``group_send_many`` is published once, on the
# fan-out channel, for all of them (a 200-member group message: 1 publication instead of 200).
FANOUT_MIN_GROUPS = 8
# A batch of publications is ONE command per chunk of this many: PUBLISH of each (channel,
# payload) pair of ARGV, in order, inside Redis (the same PUBLISH commands, the same order, the
# same subscribers, one reply for the chunk).
PUBLISH_SCRIPT = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return #ARGV / 2"
PUBLISH_CHUNK = 1000
# Sent to every local socket when the live path was interrupted (docs/protocol.md).
SYNC_REQUIRED_FRAME: dict[str, Any] = {"type": "sync.required", "data": {"reason": "live_events_interrupted"}}


class _Shard(RedisSingleShardConnection):
    layer: LocalFirstLoopLayer

    def __init__(self, host: Any, channel_layer: LocalFirstLoopLayer) -> None:
        super().__init__(host, channel_layer)
        self.layer = channel_layer
        self._publisher: aioredis.Redis | None = None
        self._outbox: list[tuple[str, bytes]] = []
        self._outbox_task: asyncio.Task[None] | None = None
        self._dropped = 0

    def publish_soon(self, items: list[tuple[str, bytes]]) -> None:
        """Queue ``items`` for publication, in order, without waiting: one task drains the
        queue, publishing everything queued during a round trip in the next one (pipelined),
        so a caller (the batch writer) never waits for Redis, and batches that complete during
        a round trip share the next one."""
        if len(self._outbox) + len(items) > OUTBOX_MAX:
            self._dropped += len(items)
            if self._dropped == len(items) or self._dropped % 10_000 < len(items):
                logger.warning("publication queue full: %d live events dropped so far", self._dropped)
            return
        self._outbox += items
        if self._outbox_task is None:
            self._outbox_task = asyncio.get_running_loop().create_task(self._drain_outbox())

    async def _drain_outbox(self) -> None:
        try:
            while self._outbox:
                items, self._outbox = self._outbox, []
                try:
                    await self.publish_many(items)
                except Exception:  # the live event is a hint; sync repairs what is lost
                    with logs.hiding(self.quotable(items)):
                        logger.warning("could not publish %d events", len(items), exc_info=True)
        finally:
            self._outbox_task = None

    def quotable(self, items: list[tuple[str, bytes]]) -> list[str]:
        """What a failed publication's error may quote of ``items`` (a message's text): each
        event's strings, and each ``EVAL`` of ``PUBLISH_SCRIPT`` (and ``PUBLISH``) as redis-py quotes it in a pipeline's error
        (cut to 100 characters: a text's first words). The failure is logged, and so reported
        to Sentry, inside ``logs.hiding`` them, as a socket's failures are."""
        found: list[str] = []
        for start in range(0, len(items), PUBLISH_CHUNK):  # each chunk's EVAL, as publish_many sends it
            parts = [part for item in items[start : start + PUBLISH_CHUNK] for part in item]
            found.append(truncate_text(" ".join(map(safe_str, ("EVAL", PUBLISH_SCRIPT, 0, *parts)))))
        for channel, data in items:
            found.append(truncate_text(" ".join(map(safe_str, ("PUBLISH", channel, data)))))
            with contextlib.suppress(Exception):  # not an event this layer can read
                found.extend(logs.strings_in(self.layer.channel_layer.deserialize(data[ORIGIN_BYTES:])))
        return found

    async def published(self) -> None:
        """Wait until everything queued by ``publish_soon`` so far has had its round trip."""
        while self._outbox_task is not None:
            await asyncio.shield(self._outbox_task)

    async def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """PUBLISH every item, in order, in one pipelined round trip (one ``PUBLISH_SCRIPT``
        call per ``PUBLISH_CHUNK`` items), on the shard's own publishing connection (never the
        subscription's pool). After any failure the
        connection is dropped, so the next batch starts on a fresh one (a Redis restart)."""
        async with self._lock:
            if self._publisher is None:
                self._publisher = aioredis.Redis(connection_pool=create_pool(self.host))
            pipe = self._publisher.pipeline(transaction=False)
            for start in range(0, len(items), PUBLISH_CHUNK):
                # One command per chunk (PUBLISH_SCRIPT): redis-py's pipeline costs a command
                # object, its packing and a reply read (under a timer of its own) per PUBLISH,
                # and a 1:1 message is two of them.
                chunk = items[start : start + PUBLISH_CHUNK]
                pipe.eval(PUBLISH_SCRIPT, 0, *[part for item in chunk for part in item])
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT):
                    await pipe.execute()
            except BaseException:
                publisher, self._publisher = self._publisher, None
                with contextlib.suppress(Exception):
                    await publisher.aclose(close_connection_pool=True)
                raise

    async def subscribe(self, channel: str) -> None:
        """Subscriptions asked for together (sockets signing in at once) go out as one
        ``SUBSCRIBE`` with every channel, instead of one command (and one lock turn) each."""
        if channel not in self._subscribed_to:
            await batcher.loop_batcher(self._subscribe_many).submit(channel)

    async def _subscribe_many(self, channels: list[str]) -> list[None]:
        async with self._lock:
            # A channel closed (or a group emptied) while waiting for this batch is left out:
            # its unsubscribe has already run, finding nothing to undo.
            wanted = [
                c for c in dict.fromkeys(channels) if c not in self._subscribed_to and self.layer.wants(c)
            ]
            if wanted:
                self._ensure_redis()
                self._ensure_receiver()
                assert self._pubsub is not None
                await self._pubsub.subscribe(*wanted)
                self._subscribed_to.update(wanted)
        return [None] * len(channels)

    async def flush(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.published(), PUBLISH_TIMEOUT)
        await super().flush()
        async with self._lock:
            publisher, self._publisher = self._publisher, None
            if publisher is not None:
                await publisher.aclose(close_connection_pool=True)

    async def _do_receiving(self) -> None:
        """The base loop without its 0.1 s polling (a timeout armed and cancelled per message):
        block on the subscription connection; messages take the short path, subscription
        confirmations go through redis-py's bookkeeping."""
        while True:
            try:
                pubsub = self._pubsub
                if pubsub is not None and pubsub.subscribed:
                    conn = pubsub.connection
                    if conn is not None and conn.is_connected and not conn.health_check_interval:
                        # The connection's own read: redis-py's ``PubSub.parse_response`` wraps
                        # it, per message, in a health check, a retry with reconnection (a
                        # reconnection here would resubscribe without telling the sockets to
                        # ``sync``: a failure goes to ``_subscribe_again`` instead) and an
                        # operation-duration hook: ~4 coroutine layers per message, and every
                        # event this process publishes comes back here once per group.
                        response = await conn.read_response(
                            timeout=math.inf, disconnect_on_error=False, push_request=True
                        )
                    else:
                        response = await pubsub.parse_response(block=True)
                    if response and response[0] == b"message":
                        self._deliver(response[1], response[2])
                    elif response:
                        await pubsub.handle_message(response, ignore_subscribe_messages=True)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, TimeoutError, GeneratorExit):
                raise
            except BaseException:
                logger.warning("subscription connection lost; subscribing again", exc_info=True)
                await self._subscribe_again()

    async def _subscribe_again(self) -> None:
        """After the subscription connection failed (Redis restarted): a new connection with
        every channel this process listens to, retried until Redis answers. Events published
        in between are lost to the live path (``sync`` repairs: the sockets are told to); nothing
        stays unsubscribed. Tried every 0.1 to 0.25 s: the gap after Redis is back stays short."""
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            delay = min(0.25, delay * 2)
            try:
                async with self._lock:
                    self._ensure_redis()
                    assert self._redis is not None
                    old: Any = self.__dict__.get("_pubsub")
                    fresh = self._redis.pubsub()
                    self._pubsub = fresh
                    if self._subscribed_to:
                        await fresh.subscribe(*self._subscribed_to)
            except Exception:
                logger.warning("subscribing again failed; retrying", exc_info=True)
                continue
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()
            metrics.RESUBSCRIBES.inc()
            self.layer.live_path_restored()
            return

    def _deliver(self, name: bytes | str, data: bytes) -> None:
        if data[:ORIGIN_BYTES] == self.layer.origin:
            return  # published by this layer: already delivered locally
        if isinstance(name, bytes):
            name = name.decode()
        message = self.layer.channel_layer.deserialize(data[ORIGIN_BYTES:])
        if name == self.layer.fanout_channel:
            event = message["message"]
            for group in message["groups"]:
                self.layer.deliver_local(group, event)
            return
        self.layer.deliver_local(name, message)

    def _receive_message(self, message: dict[str, Any] | None) -> None:
        if message is not None:
            self._deliver(message["channel"], message["data"])


class Inbox:
    """A channel's queue that calls ``wake`` when it stops being empty (the consumer drains it
    with ``pop(0)`` until empty) instead of holding a task blocked in ``receive``. A list, not a
    deque: an empty deque allocates a 64-slot block, and an inbox is nearly always empty."""

    __slots__ = ("items", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.items: list[dict[str, Any]] = []
        self.wake = wake

    def put_nowait(self, message: dict[str, Any]) -> None:
        self.items.append(message)
        if len(self.items) == 1:
            self.wake()


class LocalFirstLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.origin = os.urandom(ORIGIN_BYTES)
        self.fanout_channel = f"{self.prefix}__fanout__"
        plain: list[RedisSingleShardConnection] = self.__dict__["_shards"]
        self._shards = [_Shard(shard.host, self) for shard in plain]

    def wants(self, name: str) -> bool:
        """Whether a subscription to ``name`` is still wanted: a channel of this process, a group
        with members here, or the fan-out channel."""
        return name in self.channels or name in self.groups or name == self.fanout_channel

    def live_path_restored(self) -> None:
        """After the subscriptions were lost and made again (Redis restarted): every socket of
        this process may have missed live events in between — it did not disconnect, so it has
        no reason to ``sync`` — and is told to (``sync.required``, one frame serialized once)."""
        event = {"type": "client.event", "frame": SYNC_REQUIRED_FRAME}
        for channel in list(self.channels):
            self.deliver_local(channel, event)
        metrics.SYNC_REQUIRED.inc(len(self.channels))
        logger.warning("live path restored: %d sockets told to sync", len(self.channels))

    def deliver_local(self, name: str, message: dict[str, Any]) -> None:
        """Queue ``message`` for this process's channel ``name`` or the members of group ``name``."""
        queue = self.channels.get(name)
        if queue is not None:
            queue.put_nowait(message)
            return
        members = self.groups.get(name)
        if not members:
            return
        skip = message.get("exclude_channel")
        for channel in members:
            if channel != skip:
                channel_queue = self.channels.get(channel)
                if channel_queue is not None:
                    channel_queue.put_nowait(message)

    def _wire(self, message: dict[str, Any]) -> bytes:
        return bytes(self.origin + self.channel_layer.serialize(message))

    async def new_inbox(
        self, wake: Callable[[], None], prefix: str = "specific.", *, listen: bool = True
    ) -> tuple[str, Inbox]:
        """A new channel of this process whose events go to an ``Inbox`` calling ``wake``;
        ``close_inbox`` when done (there is no ``receive`` to clean up after). With ``listen``
        false it takes local deliveries (groups of this process) at once but is subscribed in
        Redis, for direct sends from other processes, only by ``listen_inbox`` (a socket does
        that once authenticated: refused sockets cost Redis nothing)."""
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        inbox = Inbox(wake)
        self.channels[channel] = inbox
        if listen:
            await self.listen_inbox(channel)
        return channel, inbox

    async def listen_inbox(self, channel: str) -> None:
        await self._get_shard(channel).subscribe(channel)

    async def close_inbox(self, channel: str) -> None:
        if self.channels.pop(channel, None) is not None:
            shard = self._get_shard(channel)
            if channel in shard._subscribed_to:
                await shard.unsubscribe(channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        """The base class without its per-receive deserialization (queues hold dicts)."""
        if channel not in self.channels:
            await self._subscribe_to_channel(channel)
        queue = self.channels[channel]
        try:
            message: dict[str, Any] = await queue.get()
        except (TimeoutError, asyncio.CancelledError, GeneratorExit):
            if channel in self.channels:
                del self.channels[channel]
                try:
                    await self._get_shard(channel).unsubscribe(channel)
                except BaseException:
                    logger.exception("Unexpected exception while cleaning up channel")
            raise
        return message

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel in self.channels:
            self.channels[channel].put_nowait(message)
            return
        # Queued behind this process's earlier publications (kept in order with group sends).
        self._get_shard(channel).publish_soon([(channel, self._wire(message))])

    async def group_add(self, group: str, channel: str) -> None:
        await super().group_add(group, channel)
        shard = self._get_shard(self.fanout_channel)
        if self.fanout_channel not in shard._subscribed_to:  # once: this process has groups now
            await shard.subscribe(self.fanout_channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.group_send_many([(group, message)])

    async def group_send_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Send each ``(group, message)``: local sockets at once, other processes through a
        pipelined round trip per Redis shard, in the given order, queued (``publish_soon``):
        this returns without waiting for Redis (``published`` waits). A run of consecutive entries
        with the same message object (one event for many groups) is serialized once, and
        published once on the fan-out channel when it names ``FANOUT_MIN_GROUPS`` or more."""
        runs: list[tuple[dict[str, Any], list[str]]] = []
        for group, message in events:
            name = self._get_group_channel_name(group)
            if runs and runs[-1][0] is message:
                runs[-1][1].append(name)
            else:
                runs.append((message, [name]))
        # Serialized before any local delivery: a socket may take its event at once (a consumer
        # drains its inbox eagerly), and what it does to the shared dict (the delivery metric
        # takes ``published_at``, the frame's text is kept on it) is not for other processes.
        by_shard: dict[int, list[tuple[str, bytes]]] = {}
        for message, names in runs:
            if len(names) >= FANOUT_MIN_GROUPS:
                wire = self._wire({"groups": names, "message": message})
                shard = self._get_shard(self.fanout_channel)
                by_shard.setdefault(id(shard), []).append((self.fanout_channel, wire))
                continue
            wire = self._wire(message)
            for name in names:
                by_shard.setdefault(id(self._get_shard(name)), []).append((name, wire))
        for message, names in runs:
            for name in names:
                self.deliver_local(name, message)
        for shard in self._shards:
            items = by_shard.get(id(shard))
            if items:
                shard.publish_soon(items)

    async def published(self) -> None:
        """Wait until every event sent so far has been published to Redis (or given up)."""
        for shard in self._shards:
            await shard.published()


class LocalFirstChannelLayer(RedisPubSubChannelLayer):
    """Settings: ``"BACKEND": "core.channel_layer.LocalFirstChannelLayer"`` with the
    pub/sub layer's ``CONFIG`` (``hosts``, ``prefix``)."""

    def _get_layer(self) -> LocalFirstLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            from channels_redis.utils import _wrap_close

            layer = LocalFirstLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer
