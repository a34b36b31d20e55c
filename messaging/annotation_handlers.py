"""Socket handlers of reactions and pins: one service call each (registered in messaging's
dispatch table by ``MessagingConfig.ready``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.realtime import run_service

from . import services

if TYPE_CHECKING:
    from .consumers import ChatConsumer
    from .handlers import Handler


def _reaction(add: bool) -> Handler:
    service = services.reaction_add if add else services.reaction_remove

    async def handler(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
        change = await run_service(
            service,
            user=conn.user,
            message_id=frame.data.message_id,
            emoji=frame.data.emoji,
            origin_channel=conn.channel_name,
        )
        return change.data()

    return handler


def _pin(pin: bool) -> Handler:
    service = services.message_pin if pin else services.message_unpin

    async def handler(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
        change = await run_service(
            service, user=conn.user, message_id=frame.data.message_id, origin_channel=conn.channel_name
        )
        return change.data()

    return handler


HANDLERS: dict[str, Handler] = {
    "reaction.add": _reaction(True),
    "reaction.remove": _reaction(False),
    "message.pin": _pin(True),
    "message.unpin": _pin(False),
}
