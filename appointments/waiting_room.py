"""The waiting room: the patient checks in, the doctor admits (one function per action; the
views and socket handlers call these).

- **Check-in** (``check_in``): the patient of a ``confirmed`` appointment, from
  ``APPOINTMENT_CHECKIN_OPENS_MINUTES`` before the start until ``APPOINTMENT_PATIENT_GRACE_MINUTES``
  after it (then the appointment is a patient's no-show). Idempotent. The appointment becomes
  ``checked_in``; the doctor's queue and every waiting patient's position are published
  (``appointments.queue``).
- **Admission** (``admit``): the doctor admits a checked-in patient, in any order. The appointment
  becomes ``admitted`` and its consultation is accepted (the authorised amount captured,
  ``payments.services.consultation_accept``) and started (``in_progress``): the chat is open. With
  ``start_call`` (``audio`` or ``video``) and the doctor's SDP offer, a call then starts through the
  call signalling (``calls.services.call_start``: the patient's devices get ``call.invite``). The
  call is tried after the admission commits: a call that cannot start (the doctor is still in
  another call, ...) does not undo the admission; its error is returned as ``call_error``.
  Idempotent: admitting an admitted appointment returns it (and starts no call).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from calls import validators as call_validators
from core.errors import ApplicationError, NotFound, PermissionDenied
from payments import services as payment_services
from payments.models import Consultation

from . import queue
from . import validators as v
from .models import Appointment
from .services import move

State = Appointment.State


def _find(*, user: User, appointment_id: int) -> Appointment:
    appointment = (
        Appointment.objects.filter(Q(patient=user) | Q(doctor=user), pk=appointment_id)
        .only("pk", "patient_id", "doctor_id", "consultation_id")
        .first()
    )
    if appointment is None:
        raise NotFound("No such appointment.", code="appointment_not_found")
    return appointment


def _closed(appointment: Appointment) -> ApplicationError:
    return ApplicationError(
        "appointment_closed", f"This appointment is {appointment.state}: it is over.", status=409
    )


def check_in_window(appointment: Appointment) -> tuple[dt.datetime, dt.datetime]:
    """When the patient may check in: ``[opens, closes)``."""
    return (
        appointment.starts_at - dt.timedelta(minutes=settings.APPOINTMENT_CHECKIN_OPENS_MINUTES),
        appointment.starts_at + dt.timedelta(minutes=settings.APPOINTMENT_PATIENT_GRACE_MINUTES),
    )


def check_in(*, user: User, appointment_id: int, source: str = "api") -> Appointment:
    """The patient checks in to their confirmed appointment (idempotent)."""
    found = _find(user=user, appointment_id=appointment_id)
    if found.patient_id != user.pk:
        raise PermissionDenied("Only the patient checks in.", code="not_the_patient")
    with transaction.atomic():
        appointment = Appointment.objects.select_for_update().get(pk=found.pk)
        if appointment.state == State.CHECKED_IN:
            return appointment
        if appointment.state == State.ADMITTED:
            raise ApplicationError("already_admitted", "The doctor has admitted you already.", status=409)
        if appointment.state == State.HELD:
            raise ApplicationError(
                "appointment_not_confirmed",
                "The payment of this appointment is not authorised yet.",
                status=409,
            )
        if appointment.state != State.CONFIRMED:
            raise _closed(appointment)
        opens, closes = check_in_window(appointment)
        now = timezone.now()
        if now < opens:
            raise ApplicationError(
                "check_in_too_early",
                f"Check-in opens {settings.APPOINTMENT_CHECKIN_OPENS_MINUTES} minutes before the start.",
                status=409,
                extra={"opens_at": opens.isoformat()},
            )
        if now >= closes:
            raise ApplicationError(
                "check_in_closed", "It is too late to check in: the appointment was missed.", status=409
            )
        appointment.checked_in_at = now
        return move(appointment, State.CHECKED_IN, actor=user, source=source, note="checked in")


def position(*, user: User, appointment_id: int) -> dict[str, Any]:
    """The patient's place in the doctor's waiting room (``409 not_waiting`` when not in it)."""
    appointment = _find(user=user, appointment_id=appointment_id)
    if appointment.patient_id != user.pk:
        raise PermissionDenied("Only the patient has a place in the waiting room.", code="not_the_patient")
    data = queue.position_data(appointment=appointment)
    if data is None:
        raise ApplicationError("not_waiting", "This appointment is not in the waiting room.", status=409)
    return data


def doctor_queue(*, user: User) -> dict[str, Any]:
    """The signed-in doctor's waiting room."""
    if user.role != User.Role.DOCTOR:
        raise PermissionDenied("Only doctors have a waiting room.", code="doctors_only")
    return queue.queue_data(doctor_id=user.pk)


@dataclass(frozen=True)
class Admitted:
    appointment: Appointment
    consultation: Consultation
    newly: bool  # False: it was admitted already (an idempotent repeat)


def validate_call(start_call: str | None, sdp: str | None) -> tuple[str, str] | None:
    """``start_call`` (audio|video) and the doctor's SDP offer, both or neither."""
    if start_call is None:
        if sdp is not None:
            raise ApplicationError("invalid_media", "Give start_call (audio or video) with the sdp.")
        return None
    if start_call not in v.START_CALL_MEDIA:
        raise ApplicationError("invalid_media", "start_call is audio or video.")
    if sdp is None:
        raise ApplicationError("invalid_sdp", "Starting a call needs the doctor's SDP offer (sdp).")
    return start_call, call_validators.validate_sdp(sdp)


def admit(*, user: User, appointment_id: int, source: str = "api") -> Admitted:
    """The doctor admits a checked-in patient: the appointment is ``admitted``, its consultation
    accepted (captured) and started, in one transaction. Idempotent."""
    found = _find(user=user, appointment_id=appointment_id)
    if found.doctor_id != user.pk:
        raise PermissionDenied("Only the doctor admits.", code="not_the_doctor")
    if found.consultation_id is None:
        raise ApplicationError(
            "patient_not_waiting", "This appointment is not in the waiting room.", status=409
        )
    with transaction.atomic():
        consultation = payment_services.lock(found.consultation_id)
        appointment = Appointment.objects.select_for_update().get(pk=found.pk)
        if appointment.state == State.ADMITTED:
            return Admitted(appointment, consultation, newly=False)
        if appointment.state in v.ENDED_STATES:
            raise _closed(appointment)
        if appointment.state != State.CHECKED_IN:
            raise ApplicationError("patient_not_waiting", "The patient has not checked in.", status=409)
        appointment.admitted_at = timezone.now()
        move(appointment, State.ADMITTED, actor=user, source=source, note="admitted")
        payment_services.consultation_accept(user=user, consultation_id=consultation.pk)
        consultation = payment_services.consultation_start(user=user, consultation_id=consultation.pk)
        return Admitted(appointment, consultation, newly=True)
