"""Socket frame handlers: the dispatch table from frame ``type`` to one service call.

A handler returns the ``ack`` data, or ``None`` when it answers with frames of its own.
Other apps (calls) register their handlers (``register``) and their frames
(``protocol.register_frames``) in their ``AppConfig.ready``: the consumer names no frame of theirs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from audit import actions as audited
from audit import client as audit_client
from audit import services as audit
from core import batcher, latency_probe, metrics
from core.errors import ApplicationError
from core.realtime import run_service
from core.registry import Registry

from . import batching, presence, selectors, send_limits, services

if TYPE_CHECKING:
    from .consumers import ChatConsumer

Handler = Callable[["ChatConsumer", Any], Awaitable[dict[str, Any] | None]]
# Awaited with the connection when an authenticated socket closes (calls: its peer is told).
DisconnectHook = Callable[["ChatConsumer"], Awaitable[None]]
DISCONNECT_HOOKS: Registry[DisconnectHook] = Registry("disconnect hook")
MAX_PRESENCE_WATCH = 500


async def ping(conn: ChatConsumer, frame: Any) -> None:
    await conn.send_frame({"type": "pong", "ref": frame.ref, "data": {}})


async def auth_refresh(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    return await conn.refresh(frame.data.token)


async def message_send(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    data = frame.data
    assert conn.user is not None  # frames other than auth come from an authenticated socket
    request = services.SendRequest(
        sender=conn.user,
        conversation_id=data.conversation_id,
        client_id=data.client_id,
        body=data.body,
        reply_to=data.reply_to,
        attachment_ids=data.attachment_ids,
        origin_channel=conn.channel_name,
        ciphertexts=data.ciphertexts,
        sender_device_id=conn.device_id,
        mentions=None if data.mentions is None else [m.model_dump() for m in data.mentions],
    )
    if request.ciphertexts is None:
        # Plaintext: group commit with the other sockets of this process.
        if latency_probe.enabled():  # benchmarks only
            latency_probe.submitted(request)
        result = await batching.batcher().submit(request)
    else:
        refused = await send_limits.refusals([request.sender.pk])
        if refused:
            raise refused[0]
        result = await run_service(services.send, request=request)
    return {"message": result.data, "duplicate": not result.created}


def _edited(*, user: Any, message_id: int, body: str) -> dict[str, Any]:
    return selectors.message_data(services.message_edit(user=user, message_id=message_id, body=body))


def _deleted(*, user: Any, message_id: int) -> dict[str, Any]:
    return selectors.message_data(services.message_delete(user=user, message_id=message_id))


async def message_edit(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    data = await run_service(_edited, user=conn.user, message_id=frame.data.message_id, body=frame.data.body)
    return {"message": data}


async def message_delete(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    return {"message": await run_service(_deleted, user=conn.user, message_id=frame.data.message_id)}


def _receipt(kind: str) -> Handler:
    async def handler(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
        return await run_service(
            services.receipt_mark,
            user=conn.user,
            conversation_id=frame.data.conversation_id,
            seq=frame.data.seq,
            kind=kind,
            origin_channel=conn.channel_name,
        )

    return handler


async def typing(conn: ChatConsumer, frame: Any) -> None:
    await run_service(
        services.typing_notify,
        user=conn.user,
        conversation_id=frame.data.conversation_id,
        active=frame.data.active,
        origin_channel=conn.channel_name,
    )


@dataclass(frozen=True)
class _Sync:
    request: selectors.SyncRequest
    client: audit_client.Client


def _sync_audited(items: list[_Sync]) -> list[selectors.SyncResult | Exception]:
    """A read of history, for every socket syncing now (``coalesce``: one thread hop): one
    audit entry per sync request (not per message), all in one INSERT. The entries cannot be
    written: no answer is served."""
    answers: list[Any] = list(selectors.sync_events_many([item.request for item in items]))
    served = [i for i, answer in enumerate(answers) if not isinstance(answer, Exception)]
    audit.record_many(
        [
            audit.entry(audited.HISTORY_SYNC, actor=items[i].request.user, client=items[i].client)
            for i in served
        ]
    )
    return answers


async def sync(conn: ChatConsumer, frame: Any) -> None:
    assert conn.user is not None
    request = selectors.SyncRequest(user=conn.user, cursor=frame.data.cursor, device_id=conn.device_id)
    frames, cursor, more = await batcher.for_loop(_sync_audited).submit(
        _Sync(request, audit_client.from_scope(conn.scope))
    )
    metrics.sync_answered(len(frames))
    for item in frames:
        await conn.send_frame(item)
    await conn.send_frame({"type": "sync.done", "ref": frame.ref, "data": {"cursor": cursor, "more": more}})


async def presence_subscribe(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    assert conn.user is not None
    requested = list(dict.fromkeys(frame.data.user_ids))
    if len(conn.presence_watch) + len(requested) > MAX_PRESENCE_WATCH:
        raise ApplicationError(
            "too_many_subscriptions", f"At most {MAX_PRESENCE_WATCH} users may be watched."
        )
    revocations = conn.presence_revocations
    allowed = await run_service(selectors.presence_contact_ids, user_id=conn.user.pk)
    granted = [uid for uid in requested if uid in allowed]
    await conn.watch_presence(granted)
    if conn.presence_revocations != revocations:
        # A relationship ended while this was checked: its revocation may have come before
        # the watch it should have ended. Check again against what is committed now.
        allowed = await run_service(selectors.presence_contact_ids, user_id=conn.user.pk)
        await conn.unwatch_presence([uid for uid in granted if uid not in allowed])
        granted = [uid for uid in granted if uid in allowed]
    for uid, (online, last_seen) in (await presence.store().status(granted)).items():
        await conn.send_frame(presence.presence_frame(uid, online, last_seen))
    return {"subscribed": granted, "refused": [uid for uid in requested if uid not in allowed]}


_handlers: dict[str, Handler] = {
    "ping": ping,
    "auth.refresh": auth_refresh,
    "message.send": message_send,
    "message.edit": message_edit,
    "message.delete": message_delete,
    "message.delivered": _receipt("delivered"),
    "message.read": _receipt("read"),
    "typing": typing,
    "sync": sync,
    "presence.subscribe": presence_subscribe,
}


# Frames that never write (every other one, an app's too, may): they do not stamp the caller
# for read your writes (core/replica.py).
READ_ONLY_FRAMES = frozenset({"ping", "typing", "sync", "presence.subscribe"})

# Every frame type's handler, read-only: apps add theirs with ``register``.
HANDLERS: Mapping[str, Handler] = MappingProxyType(_handlers)


def register(handlers: Mapping[str, Handler], *, on_disconnect: DisconnectHook | None = None) -> None:
    """Add an app's frame handlers (by frame type; its frames: ``protocol.register_frames``) and
    what it does when an authenticated socket closes. A type handled twice is a start-up error."""
    for frame_type, handler in handlers.items():
        if _handlers.get(frame_type, handler) is not handler:
            raise ImproperlyConfigured(f"two handlers for the frame {frame_type!r}")
        _handlers[frame_type] = handler
    if on_disconnect is not None:
        DISCONNECT_HOOKS.register(f"{on_disconnect.__module__}.{on_disconnect.__qualname__}", on_disconnect)
