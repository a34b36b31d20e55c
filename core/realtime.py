"""Channel-layer group names and event publishing, built in one place.

Only services publish events, and only after commit (``publish_on_commit``): nothing is
announced that was rolled back. The channel layer is at-most-once; PostgreSQL stays the truth.

When a service runs on behalf of a socket (``run_service``), its events are collected and sent
from the event loop once the service returns, instead of hopping back to the loop from the
worker thread once per event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.db import DatabaseSyncToAsync
from channels.layers import get_channel_layer
from django.db import transaction

from core import metrics

logger = logging.getLogger("core.realtime")

T = TypeVar("T")
Pending = list[tuple[str, dict[str, Any]]]
_deferred: ContextVar[Pending | None] = ContextVar("healthchat_deferred_events", default=None)


def user_group(user_id: int) -> str:
    """Every socket of a user joins this group, on every server process."""
    return f"user.{user_id}"


def presence_group(user_id: int) -> str:
    """Sockets watching ``user_id``'s presence join this group."""
    return f"presence.{user_id}"


def publish(group: str, event: dict[str, Any]) -> None:
    pending = _deferred.get()
    if pending is not None:
        pending.append((group, event))
        return
    layer = get_channel_layer()
    if layer is None:
        return
    metrics.published([event])
    try:
        send_from_sync(layer, "group_send", group, event)
    except Exception:  # the live event is a hint; sync repairs what is lost
        metrics.publish_failed(1)
        logger.warning("could not publish %s to %s", event.get("type"), group, exc_info=True)


def send_from_sync(layer: Any, method: str, *args: Any) -> None:
    """``layer.<method>(*args)`` from synchronous code (a Celery task, a command, a service
    outside a socket), waiting until the layer has published it: the project's layer queues
    publications on the event loop (``published``), and the loop ``async_to_sync`` makes
    for a sync caller ends, cancelling what is still queued, as soon as the call returns."""

    async def send_and_wait() -> None:
        await getattr(layer, method)(*args)
        published = getattr(layer, "published", None)
        if published is not None:
            await published()

    async_to_sync(send_and_wait)()


def publish_on_commit(group: str, event: dict[str, Any]) -> None:
    transaction.on_commit(lambda: publish(group, event))


async def flush(pending: Pending) -> None:
    """Send collected events in order: in one pipelined batch when the layer can
    (``core.channel_layer``), else one ``group_send`` at a time, groups concurrently."""
    layer = get_channel_layer()
    if layer is None or not pending:
        return
    metrics.published([event for _, event in pending])
    send_many = getattr(layer, "group_send_many", None)
    if send_many is not None:
        try:
            await send_many(pending)
        except Exception:  # the live event is a hint; sync repairs what is lost
            metrics.publish_failed(len(pending))
            logger.warning("could not publish %d events", len(pending), exc_info=True)
        return
    by_group: dict[str, list[dict[str, Any]]] = {}
    for group, event in pending:
        by_group.setdefault(group, []).append(event)

    async def send_all(group: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            try:
                await layer.group_send(group, event)
            except Exception:
                metrics.publish_failed(1)
                logger.warning("could not publish %s to %s", event.get("type"), group, exc_info=True)

    await asyncio.gather(*(send_all(g, evs) for g, evs in by_group.items()))


@contextmanager
def collecting() -> Iterator[Pending]:
    """Within the block (and the worker threads it starts, which copy the context), events
    published are collected in the list it yields instead of sent: ``await flush(pending)``
    sends them from the event loop afterwards, in one pipelined batch."""
    pending: Pending = []
    token = _deferred.set(pending)
    try:
        yield pending
    finally:
        _deferred.reset(token)


async def run_service(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run a sync service from async code: in a worker thread with its own DB connection
    (stale connections closed before and after), then publish the events it committed."""
    with collecting() as pending:
        result: T = await DatabaseSyncToAsync(fn, thread_sensitive=False)(**kwargs)
    await flush(pending)
    return result
