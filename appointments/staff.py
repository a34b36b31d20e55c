"""Staff actions on appointments (the admin's actions call these; so may a command).

Each takes the acting ``actor`` (a staff ``User`` or an ``Operator``), checks its specific
permission first (``accounts.actors.require_permission``: ``403 permission_denied``), runs in one
transaction with the audit entry (``audit.record``: who, which appointment, never a reason):

- ``appointment_staff_cancel`` (``appointments.cancel_appointment``): a held or confirmed
  appointment is cancelled and the patient gets **all** their money back whatever the policy
  says: an authorisation still uncaptured is released (the consultation ``cancelled``), a
  captured one (the doctor had admitted) is refunded in full (``refunded``, the doctor's share
  and the fee reversed in the ledger). Also used by account erasure (``account_data``).
- ``appointment_staff_no_show`` (``appointments.mark_no_show``): a confirmed appointment whose
  start has passed and whose doctor never admitted ends ``no_show_doctor`` now, exactly as the
  sweep would after its grace time (``no_shows.doctor_no_show``: released, apology push).
- ``appointment_staff_release`` (``appointments.release_hold``): a hold stuck past or before its
  deadline is expired now (``services.hold_expire``: the provider asked once, then released).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from accounts.actors import Actor, acting_user, require_permission
from accounts.models import User
from audit import actions as audited
from audit import services as audit
from audit.client import Client
from core.errors import ApplicationError, NotFound
from payments import services as payment_services
from payments.gateway import GatewayError
from payments.models import Consultation

from . import no_shows, services
from . import validators as v
from .models import Appointment

logger = logging.getLogger("healthchat.appointments")
State = Appointment.State
UNCAPTURED = (Consultation.State.REQUESTED, Consultation.State.PAID)
CAPTURED = (Consultation.State.ACCEPTED, Consultation.State.IN_PROGRESS, Consultation.State.COMPLETED)


def _locked(appointment_id: int) -> Appointment:
    appointment = Appointment.objects.select_for_update().filter(pk=appointment_id).first()
    if appointment is None:
        raise NotFound("No such appointment.", code="appointment_not_found")
    return appointment


def _refuse(appointment: Appointment, what: str) -> ApplicationError:
    return ApplicationError(
        "invalid_transition", f"A {appointment.state} appointment cannot be {what}.", status=409
    )


def cancel_refunding_in_full(
    appointment: Appointment, *, actor: User | None, source: str, note: str
) -> Appointment:
    """Cancel the locked (held or confirmed) appointment and give the patient everything back
    (in the caller's transaction; a provider error rolls it back)."""
    services.move(appointment, State.CANCELLED, actor=actor, source=source, note=note)
    if appointment.consultation_id is None:
        return appointment
    consultation = payment_services.lock(appointment.consultation_id)
    if consultation.state in UNCAPTURED:
        payment_services.release(consultation, reason="requested_by_customer")
        payment_services.transition(consultation, "cancel", actor=actor, source=source, note=note)
    elif consultation.state in CAPTURED:
        payment_services.refund_amount(consultation, amount=None, actor=actor, source=source, note=note)
    return appointment


def appointment_staff_cancel(
    *, appointment_id: int, actor: Actor, client: Client | None = None, note: str = ""
) -> Appointment:
    require_permission(actor, "appointments.cancel_appointment")
    try:
        with transaction.atomic():
            appointment = _locked(appointment_id)
            if appointment.state == State.CANCELLED:
                return appointment
            if appointment.state not in v.BLOCKING_STATES:
                raise _refuse(appointment, "cancelled")
            cancel_refunding_in_full(
                appointment,
                actor=acting_user(actor),
                source="admin",
                note=(note or "cancelled by staff, refunded in full")[:255],
            )
            audit.record(
                audited.APPOINTMENT_STAFF_CANCEL,
                actor=actor,
                object_type="appointment",
                object_id=appointment.pk,
                client=client,
            )
            return appointment
    except GatewayError as exc:
        raise payment_services.provider_failed(exc) from exc


def appointment_staff_no_show(
    *, appointment_id: int, actor: Actor, client: Client | None = None
) -> Appointment:
    require_permission(actor, "appointments.mark_no_show")
    with transaction.atomic():
        appointment = _locked(appointment_id)
        if appointment.state == State.NO_SHOW_DOCTOR:
            return appointment
        if (
            appointment.state not in (State.CONFIRMED, State.CHECKED_IN)
            or appointment.starts_at > timezone.now()
        ):
            raise ApplicationError(
                "not_a_no_show",
                "Only a confirmed appointment whose start has passed can be marked a no-show.",
                status=409,
            )
        ended = no_shows.doctor_no_show(
            appointment_id=appointment.pk,
            grace_minutes=0,
            actor=acting_user(actor),
            source="admin",
            states=(State.CONFIRMED, State.CHECKED_IN),
        )
        if ended is None or ended.state != State.NO_SHOW_DOCTOR:
            raise ApplicationError(
                "not_a_no_show", "The doctor has admitted this appointment: not a no-show.", status=409
            )
        audit.record(
            audited.APPOINTMENT_STAFF_NO_SHOW,
            actor=actor,
            object_type="appointment",
            object_id=appointment.pk,
            client=client,
        )
        return ended


def appointment_staff_release(
    *, appointment_id: int, actor: Actor, client: Client | None = None
) -> Appointment:
    require_permission(actor, "appointments.release_hold")
    with transaction.atomic():
        appointment = _locked(appointment_id)
        if appointment.state == State.RELEASED:
            return appointment
        if appointment.state != State.HELD:
            raise _refuse(appointment, "released")
        deadline = appointment.hold_expires_at
        now = timezone.now()
        try:
            done = services.hold_expire(
                appointment_id=appointment.pk, now=max(now, deadline) if deadline else now
            )
            assert done is not None
            if done.state == State.HELD and done.consultation_id is not None:
                # Stuck: its consultation is past the point the sweep handles (authorised, the
                # confirmation lost). Release the authorisation; expiring the consultation
                # releases the slot (``services.on_consultation_transitioned``).
                consultation = payment_services.lock(done.consultation_id)
                if consultation.state not in UNCAPTURED:
                    raise _refuse(done, "released (its consultation was captured)")
                payment_services.release(consultation, reason="abandoned")
                payment_services.transition(
                    consultation,
                    "expire",
                    actor=acting_user(actor),
                    source="admin",
                    note="stuck hold released",
                )
                done.refresh_from_db()
        except GatewayError as exc:
            raise payment_services.provider_failed(exc) from exc
        audit.record(
            audited.APPOINTMENT_STAFF_RELEASE,
            actor=actor,
            object_type="appointment",
            object_id=appointment.pk,
            client=client,
        )
        logger.info("hold %s expired by staff: %s", appointment.pk, done.state)
        return done
