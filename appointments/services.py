"""Appointment actions: one function per action, keyword-only, each in one transaction.

Booking is two steps so that the database decides the winner before any money is asked
for: (1) the slot is **held** (an ``Appointment`` row; the exclusion constraint refuses an
overlapping held or confirmed one: ``409 slot_taken``) and committed; (2) the consultation
and its PaymentIntent (manual capture) are created (``payments.booking.consultation_open``).
A loser never reaches step 2, so no money is authorised for it. The hold becomes
``confirmed`` when the consultation becomes ``paid`` (webhook, reconciliation, the
development provider at once: ``on_consultation_transitioned``) and ``released`` when the
provider fails, the consultation ends unpaid, or the hold times out (``hold_expire``).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import DoctorProfile, User
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging.services import check_not_blocked, fan_out_on_commit
from payments import booking as payment_booking
from payments import services as payment_services
from payments import validators as payment_validators
from payments.gateway import GatewayError, get_gateway
from payments.models import Consultation

from . import queue, reminders, selectors, slots
from . import validators as v
from .models import Appointment, AppointmentTransition, Schedule, ScheduleException, WeeklyWindow

logger = logging.getLogger("healthchat.appointments")
State = Appointment.State


# --- Schedule -------------------------------------------------------------------------------


def ensure_free(doctor_id: int, start: dt.datetime, end: dt.datetime, exclude: int | None = None) -> None:
    """Refuse a time that overlaps one of the doctor's held or confirmed appointments.

    On PostgreSQL the exclusion constraint decides races; this check gives the same
    ``slot_taken`` on the embedded SQLite of ``make run``, which has no such constraint
    (SQLite serialises writers, so the check inside the write transaction is enough there).
    """
    clash = Appointment.objects.filter(
        doctor_id=doctor_id,
        state__in=v.BLOCKING_STATES,
        starts_at__lt=end,
        ends_at__gt=start,
    )
    if exclude is not None:
        clash = clash.exclude(pk=exclude)
    if clash.exists():
        raise ApplicationError("slot_taken", "Someone else has just booked this slot.", status=409)


def schedule_ensure(*, doctor: User) -> Schedule:
    """The doctor's schedule, created with the defaults (no hours yet) the first time."""
    if doctor.role != User.Role.DOCTOR:
        raise PermissionDenied("Only doctors have a schedule.", code="doctors_only")
    Schedule.objects.get_or_create(doctor=doctor)
    fresh = selectors.schedule_get(doctor_id=doctor.pk)
    assert fresh is not None
    return fresh


def schedule_set(
    *,
    doctor: User,
    timezone_name: str | None = None,
    slot_minutes: int | None = None,
    buffer_minutes: int | None = None,
    horizon_days: int | None = None,
    min_notice_minutes: int | None = None,
    bookable: bool | None = None,
    weekly_hours: object = None,
    exceptions: object = None,
) -> Schedule:
    """Create or update the doctor's schedule; ``weekly_hours`` (``[{weekday, start, end}]``)
    and ``exceptions`` (``[{date, kind, start?, end?}]``) replace the stored lists."""
    if doctor.role != User.Role.DOCTOR:
        raise PermissionDenied("Only doctors have a schedule.", code="doctors_only")
    weekly = None if weekly_hours is None else payment_validators.validate_weekly_hours(weekly_hours)
    days = None if exceptions is None else v.validate_exceptions(exceptions)
    with transaction.atomic():
        schedule, _ = Schedule.objects.select_for_update().get_or_create(doctor=doctor)
        if timezone_name is not None:
            schedule.timezone = v.validate_time_zone(timezone_name)
        for name, value in (
            ("slot_minutes", slot_minutes),
            ("buffer_minutes", buffer_minutes),
            ("horizon_days", horizon_days),
            ("min_notice_minutes", min_notice_minutes),
            ("bookable", bookable),
        ):
            if value is not None:
                setattr(schedule, name, value)
        schedule.save()
        if weekly is not None:
            schedule.windows.all().delete()
            WeeklyWindow.objects.bulk_create(
                WeeklyWindow(schedule=schedule, weekday=d, start=s, end=e) for d, s, e in weekly
            )
        if days is not None:
            schedule.exceptions.all().delete()
            ScheduleException.objects.bulk_create(
                ScheduleException(schedule=schedule, date=day, kind=kind, start=s, end=e)
                for day, kind, s, e in days
            )
    fresh = selectors.schedule_get(doctor_id=doctor.pk)
    assert fresh is not None
    return fresh


# --- Helpers --------------------------------------------------------------------------------
def appointment_data(appointment: Appointment) -> dict[str, object]:
    return {
        "id": appointment.pk,
        "patient_id": appointment.patient_id,
        "doctor_id": appointment.doctor_id,
        "state": appointment.state,
        "starts_at": appointment.starts_at.isoformat(),
        "ends_at": appointment.ends_at.isoformat(),
        "consultation_id": appointment.consultation_id,
        "checked_in_at": appointment.checked_in_at.isoformat() if appointment.checked_in_at else None,
        "admitted_at": appointment.admitted_at.isoformat() if appointment.admitted_at else None,
    }


def move(
    appointment: Appointment, to: str, *, actor: User | None, source: str, note: str = ""
) -> Appointment:
    """Move the (locked) appointment, log the transition, tell both sides after commit (and the
    doctor's waiting room when it changes: ``appointments.queue``)."""
    previous = appointment.state
    appointment.state = to
    if to != State.HELD:
        appointment.hold_expires_at = None
    appointment.save(update_fields=["state", "hold_expires_at", "checked_in_at", "admitted_at", "updated_at"])
    AppointmentTransition.objects.create(
        appointment=appointment, from_state=previous, to_state=to, actor=actor, source=source, note=note[:255]
    )
    if to == State.CONFIRMED and previous == State.HELD:
        reminders.arm(appointment)
    elif to != State.CONFIRMED:
        reminders.disarm(appointment)
    logger.info("appointment %s %s -> %s (%s)", appointment.pk, previous, to, source)
    fan_out_on_commit(
        user_ids=[appointment.patient_id, appointment.doctor_id],
        frame={"type": "appointment.updated", "data": {"appointment": appointment_data(appointment)}},
    )
    if State.CHECKED_IN in (previous, to) or to == State.ADMITTED:
        queue.publish_on_commit(doctor_id=appointment.doctor_id)
    return appointment


def _doctor_profile(*, patient: User, doctor_id: int) -> DoctorProfile:
    if patient.role != User.Role.PATIENT:
        raise PermissionDenied("Only patients can book appointments.", code="patients_only")
    profile = DoctorProfile.objects.select_related("user").filter(user_id=doctor_id).first()
    if profile is None:
        raise NotFound("No such doctor.", code="doctor_not_found")
    check_not_blocked(user_id=patient.pk, peer_id=doctor_id)
    if profile.consultation_fee <= 0:
        raise ApplicationError(
            "doctor_has_no_fee", "This doctor has not set a consultation fee yet.", status=409
        )
    return profile


# --- Booking --------------------------------------------------------------------------------
def appointment_book(
    *, patient: User, doctor_id: int, starts_at: dt.datetime, kind: str, reason: str | None = None
) -> Appointment:
    """Hold the slot (the database refuses a taken one), then authorise the payment."""
    kind = payment_validators.validate_kind(kind)
    text = payment_validators.validate_reason(reason)
    schedule = selectors.bookable_schedule(doctor_id=doctor_id)
    profile = _doctor_profile(patient=patient, doctor_id=doctor_id)
    if starts_at.tzinfo is None:
        raise ApplicationError(
            "invalid_time_zone", "starts_at needs a UTC offset.", fields={"starts_at": ["invalid"]}
        )
    rules = selectors.rules_for(schedule)
    matching = [
        s
        for s in slots.compute(
            rules, start=starts_at, end=starts_at + dt.timedelta(seconds=1), now=timezone.now()
        )
        if s[0] == starts_at
    ]
    if not matching:
        raise ApplicationError(
            "outside_availability",
            "That time is not one of the doctor's slots (hours, notice and horizon).",
            status=409,
        )
    start, end = matching[0]
    hold_until = timezone.now() + dt.timedelta(seconds=settings.APPOINTMENT_HOLD_SECONDS)
    try:
        with transaction.atomic():
            ensure_free(doctor_id, start, end)
            appointment = Appointment.objects.create(
                doctor_id=doctor_id,
                patient=patient,
                kind=kind,
                starts_at=start,
                ends_at=end,
                state=State.HELD,
                hold_expires_at=hold_until,
            )
            AppointmentTransition.objects.create(
                appointment=appointment, to_state=State.HELD, actor=patient, source="api"
            )
    except IntegrityError as exc:
        if "appointment_no_overlap" in str(exc):
            raise ApplicationError(
                "slot_taken", "Someone else has just booked this slot.", status=409
            ) from exc
        raise
    try:
        with transaction.atomic():
            locked = Appointment.objects.select_for_update().get(pk=appointment.pk)
            consultation = payment_booking.consultation_open(
                patient=patient,
                profile=profile,
                kind=kind,
                reason=text,
                expires_at=end + dt.timedelta(minutes=settings.APPOINTMENT_DOCTOR_GRACE_MINUTES),
            )
            locked.consultation = consultation
            locked.save(update_fields=["consultation", "updated_at"])
            if consultation.state == Consultation.State.PAID and locked.state == State.HELD:
                move(locked, State.CONFIRMED, actor=None, source="system", note="authorised")
            elif locked.state == State.HELD:
                fan_out_on_commit(
                    user_ids=[locked.patient_id],
                    frame={"type": "appointment.updated", "data": {"appointment": appointment_data(locked)}},
                )
            return locked
    except ApplicationError:
        _release(appointment_id=appointment.pk, note="payment could not start")
        raise


def _release(*, appointment_id: int, note: str) -> None:
    with transaction.atomic():
        appointment = Appointment.objects.select_for_update().get(pk=appointment_id)
        if appointment.state == State.HELD:
            move(appointment, State.RELEASED, actor=None, source="system", note=note)


def on_consultation_transitioned(
    sender: object, *, consultation: Consultation, from_state: str, to_state: str, source: str, **_: object
) -> None:
    """Inside the consultation's transaction: ``paid`` confirms a held appointment; a
    consultation that ends before being paid or accepted releases a held appointment and cancels
    a confirmed or checked-in one; the doctor accepting the
    consultation of a confirmed or checked-in appointment admits it (the way before the waiting
    room, still valid: ``appointments.waiting_room.admit`` is the other)."""
    appointment = Appointment.objects.select_for_update().filter(consultation_id=consultation.pk).first()
    if (
        appointment is not None
        and to_state == Consultation.State.ACCEPTED
        and appointment.state in (State.CONFIRMED, State.CHECKED_IN)
    ):
        appointment.admitted_at = timezone.now()
        move(appointment, State.ADMITTED, actor=None, source=source, note="consultation accepted")
        return
    ended = (Consultation.State.CANCELLED, Consultation.State.EXPIRED, Consultation.State.DECLINED)
    if (
        appointment is not None
        and to_state in ended
        and appointment.state in (State.CONFIRMED, State.CHECKED_IN)
    ):
        # Ended on the consultation's side (the doctor declined or cancelled it, or it expired):
        # the appointment cannot take place; a waiting patient leaves the queue.
        move(appointment, State.CANCELLED, actor=None, source=source, note=f"consultation {to_state}")
        return
    if appointment is None or appointment.state != State.HELD:
        return
    if to_state == Consultation.State.PAID:
        move(
            appointment,
            State.CONFIRMED,
            actor=None,
            source=source if source != "api" else "system",
            note="authorised",
        )
    elif to_state in (Consultation.State.CANCELLED, Consultation.State.EXPIRED, Consultation.State.DECLINED):
        move(appointment, State.RELEASED, actor=None, source="system", note=f"consultation {to_state}")


def hold_expire(*, appointment_id: int, now: dt.datetime | None = None) -> Appointment | None:
    """A hold past its time (at ``now``; staff releasing a stuck hold pass its deadline): ask the
    provider once (a late webhook) and confirm, or cancel the PaymentIntent and release the slot.
    Idempotent."""
    with transaction.atomic():
        appointment = Appointment.objects.select_for_update().filter(pk=appointment_id).first()
        if (
            appointment is None
            or appointment.state != State.HELD
            or (appointment.hold_expires_at and appointment.hold_expires_at > (now or timezone.now()))
        ):
            return appointment
        if appointment.consultation_id is None:
            return move(appointment, State.RELEASED, actor=None, source="task", note="hold timed out")
    try:
        with transaction.atomic():
            consultation = payment_services.lock(appointment.consultation_id)
            if consultation.state == Consultation.State.REQUESTED and consultation.payment_intent_id:
                intent = get_gateway(consultation.provider).retrieve_payment_intent(
                    consultation.payment_intent_id
                )
                payment_services.sync_payment_intent(consultation, intent, source="task")
            if consultation.state == Consultation.State.REQUESTED:
                payment_services.release(consultation, reason="abandoned")
                payment_services.transition(
                    consultation, "expire", actor=None, source="task", note="hold timed out"
                )
    except GatewayError as exc:
        raise payment_services.provider_failed(exc) from exc
    appointment.refresh_from_db()
    return appointment


# --- Cancel and reschedule (the policy: settings APPOINTMENT_FREE_CANCEL_HOURS, ...) --------------
def _lock_for(user: User, appointment_id: int) -> Appointment:
    """Lock an appointment of ``user`` (anyone else: 404), its consultation first: every writer
    locks in that order (the consultation's accept, admission, the no-show sweep), so two of
    them never wait on each other."""
    mine = Q(patient=user) | Q(doctor=user)
    consultation_id = (
        Appointment.objects.filter(mine, pk=appointment_id).values_list("consultation_id", flat=True).first()
    )
    if consultation_id is not None:
        payment_services.lock(consultation_id)
    appointment = Appointment.objects.select_for_update().filter(mine, pk=appointment_id).first()
    if appointment is None:
        raise NotFound("No such appointment.", code="appointment_not_found")
    return appointment


def late_fee(*, price: int, starts_at: dt.datetime, now: dt.datetime) -> int:
    """What a patient's cancellation at ``now`` costs (0 when early enough)."""
    if starts_at - now >= dt.timedelta(hours=settings.APPOINTMENT_FREE_CANCEL_HOURS):
        return 0
    return payment_validators.proportional(price, settings.APPOINTMENT_LATE_CANCEL_FEE_PERCENT, 100)


def appointment_cancel(*, user: User, appointment_id: int) -> Appointment:
    """The patient or the doctor cancels. The doctor: the authorisation is released in full,
    always. The patient: in full when early, the late fee kept when late, refused after the
    start (``too_late_to_cancel``). Idempotent."""
    try:
        with transaction.atomic():
            appointment = _lock_for(user, appointment_id)
            if appointment.state == State.CANCELLED:
                return appointment
            if appointment.state not in v.CANCELLABLE_STATES:
                raise ApplicationError(
                    "invalid_transition",
                    f"A {appointment.state} appointment cannot be cancelled.",
                    status=409,
                )
            now = timezone.now()
            by_patient = user.pk == appointment.patient_id
            if by_patient and now >= appointment.starts_at:
                raise ApplicationError(
                    "too_late_to_cancel",
                    "The appointment has started; it can no longer be cancelled.",
                    status=409,
                )
            consultation = appointment.consultation
            fee = 0
            if by_patient and consultation is not None and consultation.state == Consultation.State.PAID:
                fee = late_fee(price=consultation.price, starts_at=appointment.starts_at, now=now)
            note = (
                f"late cancellation, fee {fee}"
                if fee
                else "cancelled by the " + ("patient" if by_patient else "doctor")
            )
            move(appointment, State.CANCELLED, actor=user, source="api", note=note)
            if consultation is not None and consultation.state in (
                Consultation.State.REQUESTED,
                Consultation.State.PAID,
            ):
                if fee:
                    payment_services.consultation_keep_fee(
                        consultation_id=consultation.pk, amount=fee, source="api", note=note
                    )
                else:
                    payment_services.consultation_cancel(user=user, consultation_id=consultation.pk)
            return appointment
    except GatewayError as exc:
        raise payment_services.provider_failed(exc) from exc


def appointment_reschedule(*, user: User, appointment_id: int, starts_at: dt.datetime) -> Appointment:
    """Move a held or confirmed appointment to another free slot of the same doctor. The
    patient may only do so while cancelling would be free (``too_late_to_reschedule``)."""
    with transaction.atomic():
        appointment = _lock_for(user, appointment_id)
        if appointment.state not in v.RESCHEDULABLE_STATES:
            raise ApplicationError(
                "invalid_transition", f"A {appointment.state} appointment cannot be rescheduled.", status=409
            )
        now = timezone.now()
        if user.pk == appointment.patient_id and appointment.starts_at - now < dt.timedelta(
            hours=settings.APPOINTMENT_FREE_CANCEL_HOURS
        ):
            raise ApplicationError(
                "too_late_to_reschedule",
                "It is too close to the appointment to move it; cancel it instead.",
                status=409,
            )
        schedule = selectors.bookable_schedule(doctor_id=appointment.doctor_id)
        busy = [
            b
            for b in selectors.busy(
                doctor_id=appointment.doctor_id,
                start=starts_at - dt.timedelta(days=1),
                end=starts_at + dt.timedelta(days=1),
            )
            if b != (appointment.starts_at, appointment.ends_at)
        ]
        matching = [
            s
            for s in slots.compute(
                selectors.rules_for(schedule),
                start=starts_at,
                end=starts_at + dt.timedelta(seconds=1),
                now=now,
                busy=busy,
            )
            if s[0] == starts_at
        ]
        if not matching:
            raise ApplicationError(
                "outside_availability", "That time is not one of the doctor's free slots.", status=409
            )
        previous = appointment.starts_at
        appointment.starts_at, appointment.ends_at = matching[0]
        try:
            with transaction.atomic():
                ensure_free(
                    appointment.doctor_id,
                    appointment.starts_at,
                    appointment.ends_at,
                    exclude=appointment.pk,
                )
                appointment.save(update_fields=["starts_at", "ends_at", "updated_at"])
        except IntegrityError as exc:
            if "appointment_no_overlap" in str(exc):
                raise ApplicationError(
                    "slot_taken", "Someone else has just booked this slot.", status=409
                ) from exc
            raise
        move(
            appointment,
            appointment.state,
            actor=user,
            source="api",
            note=f"rescheduled from {previous.isoformat()}",
        )
        if appointment.state == State.CONFIRMED:
            reminders.rearm(appointment)
        if appointment.consultation_id is not None:
            payment_services.consultation_set_expiry(
                consultation_id=appointment.consultation_id,
                expires_at=appointment.ends_at
                + dt.timedelta(minutes=settings.APPOINTMENT_DOCTOR_GRACE_MINUTES),
            )
        return appointment
