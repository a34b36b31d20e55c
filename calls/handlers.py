"""Socket handlers for the ``call.*`` frames: one service call each (added to messaging's
dispatch table in ``CallsConfig.ready``), plus the hook that tells calls a socket closed."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from core.realtime import run_service
from messaging import presence

from . import services

if TYPE_CHECKING:
    from messaging.consumers import ChatConsumer
    from messaging.handlers import Handler

logger = logging.getLogger("healthchat.calls")

# The calls each open socket has been the call device of (per connection object, so it goes
# with the connection): when the socket closes, only those are looked at.
_calls_of: weakref.WeakKeyDictionary[ChatConsumer, set[int]] = weakref.WeakKeyDictionary()


def _track(conn: ChatConsumer, call_id: int) -> None:
    _calls_of.setdefault(conn, set()).add(call_id)


async def _offline(user_ids: list[int]) -> list[int]:
    """Users with no live socket on any server process (presence register)."""
    try:
        status = await presence.store().status(user_ids)
    except Exception:
        logger.warning("presence unavailable: ringing every callee by push", exc_info=True)
        return list(user_ids)
    return [uid for uid in user_ids if not status.get(uid, (False, None))[0]]


async def call_invite(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    data = frame.data
    result = await run_service(
        services.call_start,
        caller=conn.user,
        conversation_id=data.conversation_id,
        media=data.media,
        sdp=data.sdp,
        device_id=conn.device_id,
        channel_name=conn.channel_name,
    )
    if result.ringing:
        _track(conn, result.call.pk)
        offline = await _offline(result.callee_ids)
        if offline:
            await run_service(services.call_ring_offline, call_id=result.call.pk, user_ids=offline)
    return {"call": result.data}


async def call_ringing(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    await run_service(services.call_ringing, user=conn.user, call_id=frame.data.call_id)
    return {}


async def call_accept(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    loaded = await run_service(
        services.call_accept,
        user=conn.user,
        call_id=frame.data.call_id,
        sdp=frame.data.sdp,
        device_id=conn.device_id,
        channel_name=conn.channel_name,
    )
    _track(conn, loaded.call.pk)
    return {"call": loaded.data()}


async def call_reject(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    loaded = await run_service(
        services.call_reject, user=conn.user, call_id=frame.data.call_id, channel_name=conn.channel_name
    )
    return {"call": loaded.data()}


async def call_cancel(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    loaded = await run_service(
        services.call_cancel, user=conn.user, call_id=frame.data.call_id, channel_name=conn.channel_name
    )
    return {"call": loaded.data()}


async def call_hangup(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    loaded = await run_service(
        services.call_hangup,
        user=conn.user,
        call_id=frame.data.call_id,
        reason=frame.data.reason,
        channel_name=conn.channel_name,
    )
    return {"call": loaded.data()}


async def call_ice(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    await run_service(
        services.call_ice,
        user=conn.user,
        call_id=frame.data.call_id,
        candidate=dict(frame.data.candidate),
        channel_name=conn.channel_name,
    )
    return {}


async def call_update(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    await run_service(
        services.call_update,
        user=conn.user,
        call_id=frame.data.call_id,
        sdp=frame.data.sdp,
        channel_name=conn.channel_name,
    )
    return {}


async def call_resume(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    loaded = await run_service(
        services.call_resume,
        user=conn.user,
        call_id=frame.data.call_id,
        device_id=conn.device_id,
        channel_name=conn.channel_name,
    )
    _track(conn, loaded.call.pk)
    return {"call": loaded.data()}


async def socket_closed(conn: ChatConsumer) -> None:
    """Disconnect hook: the calls this socket was the call device of."""
    call_ids = _calls_of.pop(conn, None)
    if not call_ids or conn.user is None:
        return
    await run_service(
        services.call_socket_closed, user=conn.user, channel_name=conn.channel_name, call_ids=sorted(call_ids)
    )


HANDLERS: dict[str, Handler] = {
    "call.invite": call_invite,
    "call.ringing": call_ringing,
    "call.accept": call_accept,
    "call.reject": call_reject,
    "call.cancel": call_cancel,
    "call.hangup": call_hangup,
    "call.ice": call_ice,
    "call.update": call_update,
    "call.resume": call_resume,
}
