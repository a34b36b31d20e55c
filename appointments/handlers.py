"""Socket handlers for the waiting room's frames: one service call each (added to messaging's
dispatch table in ``AppointmentsConfig.ready``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from calls import handlers as call_handlers
from calls import protocol as call_protocol
from core.errors import ApplicationError
from core.realtime import run_service
from payments.services import consultation_data

from . import queue, services, waiting_room
from .models import Appointment

if TYPE_CHECKING:
    from messaging.consumers import ChatConsumer
    from messaging.handlers import Handler


def _checked_in(*, user: Any, appointment_id: int) -> dict[str, Any]:
    appointment = waiting_room.check_in(user=user, appointment_id=appointment_id, source="socket")
    return {
        "appointment": services.appointment_data(appointment),
        "position": queue.position_data(appointment=appointment),
    }


async def appointment_check_in(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    return await run_service(_checked_in, user=conn.user, appointment_id=frame.data.appointment_id)


def _admitted(*, user: Any, appointment_id: int) -> tuple[waiting_room.Admitted, dict[str, Any]]:
    admitted = waiting_room.admit(user=user, appointment_id=appointment_id, source="socket")
    appointment: Appointment = admitted.appointment
    return admitted, {
        "appointment": services.appointment_data(appointment),
        "consultation": consultation_data(admitted.consultation),
        "call": None,
        "call_error": None,
    }


async def waiting_room_admit(conn: ChatConsumer, frame: Any) -> dict[str, Any]:
    data = frame.data
    call = waiting_room.validate_call(data.start_call, data.sdp)  # refused before admitting
    admitted, ack = await run_service(_admitted, user=conn.user, appointment_id=data.appointment_id)
    if call is None or not admitted.newly:
        return ack
    media, sdp = call
    invite = call_protocol.CallInviteFrame(
        type="call.invite",
        data=call_protocol.CallInviteData.model_validate(
            {"conversation_id": admitted.consultation.conversation_id, "media": media, "sdp": sdp}
        ),
    )
    try:
        started = await call_handlers.call_invite(conn, invite)
    except ApplicationError as exc:  # the admission stands; the doctor may call again
        return {**ack, "call_error": {"code": exc.code, "message": exc.message}}
    return {**ack, "call": started["call"]}


HANDLERS: dict[str, Handler] = {
    "appointment.check_in": appointment_check_in,
    "waiting_room.admit": waiting_room_admit,
}
