"""No-shows, swept by beat (``appointments.tasks.sweep_no_shows``, every minute).

- **Patient** (``no_show_patient``): a ``confirmed`` appointment whose patient has not checked in
  ``APPOINTMENT_PATIENT_GRACE_MINUTES`` after the start. The policy
  (``APPOINTMENT_NO_SHOW_FEE_PERCENT`` of the price) decides what is captured: that part is
  captured and settled like a late-cancel fee (charge, platform fee and the doctor's transfer in
  the ledger); 0 % releases the authorisation in full. The patient gets a push without medical
  content.
- **Doctor** (``no_show_doctor``): a ``checked_in`` appointment (the patient is in the waiting
  room) the doctor has not admitted ``APPOINTMENT_DOCTOR_NO_SHOW_MINUTES`` after the start. A
  consultation accepted the old way (``POST consultations/{id}/accept``) admits it too. The
  authorisation is released in full (nothing was captured) and the patient gets an apology push.

Each is one transaction and idempotent. Locks are taken consultation first, then appointment,
the order the doctor's admission (``waiting_room.admit``) and the consultation's accept use.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from notifications.services import appointment_push_ref, push_appointment
from payments import services as payment_services
from payments import validators as payment_validators
from payments.gateway import GatewayError
from payments.models import Consultation

from .models import Appointment
from .services import move

logger = logging.getLogger("healthchat.appointments")
State = Appointment.State
BATCH = 500


def no_show_fee(*, price: int) -> int:
    """What a patient's no-show costs (the policy: a percentage of the price)."""
    return payment_validators.proportional(price, settings.APPOINTMENT_NO_SHOW_FEE_PERCENT, 100)


def _locked(
    appointment_id: int, states: tuple[str, ...], minutes: int
) -> tuple[Appointment, Consultation] | None:
    """The appointment and its paid consultation, locked (consultation first), when the
    appointment is still in one of ``states`` and ``minutes`` past its start; else None."""
    consultation_id = (
        Appointment.objects.filter(pk=appointment_id, state__in=states)
        .values_list("consultation_id", flat=True)
        .first()
    )
    if consultation_id is None:
        return None
    consultation = payment_services.lock(consultation_id)
    appointment = Appointment.objects.select_for_update().filter(pk=appointment_id).first()
    if (
        appointment is None
        or appointment.state not in states
        or appointment.consultation_id != consultation.pk
        or timezone.now() < appointment.starts_at + dt.timedelta(minutes=minutes)
        or consultation.state != Consultation.State.PAID
    ):
        return None
    return appointment, consultation


def _push(appointment: Appointment, kind: str, slot: str) -> None:
    push_appointment(
        ref=appointment_push_ref(
            kind=kind, appointment_id=appointment.pk, starts_at=appointment.starts_at, slot=slot
        ),
        user_id=appointment.patient_id,
    )


def patient_no_show(*, appointment_id: int) -> Appointment | None:
    """End a confirmed appointment the patient never checked in to: keep the no-show fee (or
    release everything at 0 %), push the patient. Returns the appointment when it ended now."""
    try:
        with transaction.atomic():
            found = _locked(appointment_id, (State.CONFIRMED,), settings.APPOINTMENT_PATIENT_GRACE_MINUTES)
            if found is None:
                return None
            appointment, consultation = found
            fee = no_show_fee(price=consultation.price)
            note = f"patient did not check in, fee {fee}"
            move(appointment, State.NO_SHOW_PATIENT, actor=None, source="task", note=note)
            if fee:
                payment_services.consultation_keep_fee(
                    consultation_id=consultation.pk, amount=fee, source="task", note=note
                )
            else:
                payment_services.release(consultation, reason="abandoned")
                payment_services.transition(consultation, "expire", actor=None, source="task", note=note)
            _push(appointment, "appointment.missed", "missed")
            return appointment
    except GatewayError as exc:
        raise payment_services.provider_failed(exc) from exc


def doctor_no_show(
    *,
    appointment_id: int,
    grace_minutes: int | None = None,
    actor: User | None = None,
    source: str = "task",
    states: tuple[str, ...] = (State.CHECKED_IN,),
) -> Appointment | None:
    """End a checked-in appointment the doctor never admitted: release the authorisation in
    full, apologise by push. Returns the appointment when it ended now. Staff marking one
    (``appointments.staff``) pass ``grace_minutes=0``, themselves as ``actor`` and also
    ``confirmed`` among the ``states``."""
    grace = settings.APPOINTMENT_DOCTOR_NO_SHOW_MINUTES if grace_minutes is None else grace_minutes
    try:
        with transaction.atomic():
            found = _locked(appointment_id, states, grace)
            if found is None:
                return None
            appointment, consultation = found
            move(appointment, State.NO_SHOW_DOCTOR, actor=actor, source=source, note="doctor did not admit")
            payment_services.release(consultation, reason="abandoned")
            payment_services.transition(
                consultation,
                "expire",
                actor=actor,
                source=source,
                note="doctor did not admit the appointment",
            )
            _push(appointment, "appointment.apology", "noshow")
            return appointment
    except GatewayError as exc:
        raise payment_services.provider_failed(exc) from exc


def _due(state: str, minutes: int) -> list[int]:
    cutoff = timezone.now() - dt.timedelta(minutes=minutes)
    return list(
        Appointment.objects.filter(
            state=state, starts_at__lte=cutoff, consultation__state=Consultation.State.PAID
        )
        .order_by("starts_at")
        .values_list("pk", flat=True)[:BATCH]
    )


def patient_no_shows_due() -> list[int]:
    return _due(State.CONFIRMED, settings.APPOINTMENT_PATIENT_GRACE_MINUTES)


def doctor_no_shows_due() -> list[int]:
    return _due(State.CHECKED_IN, settings.APPOINTMENT_DOCTOR_NO_SHOW_MINUTES)
