"""Appointments: a doctor's schedule (slots are computed from it, never stored) and booked
appointments. The database itself makes double booking impossible: an exclusion constraint
(``btree_gist``) refuses two held or confirmed appointments of one doctor whose
``tstzrange(starts_at, ends_at)`` overlap. Writes go through ``appointments.services``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.postgres.constraints import ExclusionConstraint
from django.contrib.postgres.fields import RangeOperators
from django.db import models
from django.db.models import Func, Q

from . import validators as v


class TsTzRange(Func):
    function = "TSTZRANGE"
    output_field = models.DateTimeField()  # only used inside the constraint's expression


class PostgresExclusionConstraint(ExclusionConstraint):
    """An exclusion constraint that exists only on PostgreSQL.

    The embedded SQLite of ``make run`` has no exclusion constraints: there the table is built
    without it, and the booking service's overlap check (under the SQLite database lock, which
    serialises writers) is the only guard. Production and every test database are PostgreSQL.
    """

    def _on_postgres(self, schema_editor: Any) -> bool:
        return bool(schema_editor.connection.vendor == "postgresql")

    def constraint_sql(self, model: Any, schema_editor: Any) -> Any:
        return super().constraint_sql(model, schema_editor) if self._on_postgres(schema_editor) else None

    def create_sql(self, model: Any, schema_editor: Any) -> Any:
        return super().create_sql(model, schema_editor) if self._on_postgres(schema_editor) else None

    def remove_sql(self, model: Any, schema_editor: Any) -> Any:
        return super().remove_sql(model, schema_editor) if self._on_postgres(schema_editor) else None

    def validate(self, model: Any, instance: Any, exclude: Any = None, using: str = "default") -> None:
        from django.db import connections

        if connections[using].vendor == "postgresql":
            super().validate(model, instance, exclude=exclude, using=using)


class Schedule(models.Model):
    """How a doctor can be booked: in their own IANA time zone, slot length and buffer,
    how far ahead (horizon) and how soon (minimum notice)."""

    doctor = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="schedule"
    )
    timezone = models.CharField(max_length=64, default="UTC")
    slot_minutes = models.PositiveSmallIntegerField(default=20)
    buffer_minutes = models.PositiveSmallIntegerField(default=5)
    horizon_days = models.PositiveSmallIntegerField(default=30)
    min_notice_minutes = models.PositiveIntegerField(default=120)
    bookable = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    slot_minutes__gte=v.SLOT_MINUTES_RANGE[0], slot_minutes__lte=v.SLOT_MINUTES_RANGE[1]
                ),
                name="schedule_slot_minutes_valid",
            ),
            models.CheckConstraint(
                condition=Q(buffer_minutes__lte=v.BUFFER_MINUTES_RANGE[1]), name="schedule_buffer_valid"
            ),
            models.CheckConstraint(
                condition=Q(horizon_days__gte=1, horizon_days__lte=v.HORIZON_DAYS_RANGE[1]),
                name="schedule_horizon_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"schedule of {self.doctor_id}"


class WeeklyWindow(models.Model):
    """A recurring weekly window (weekday 0 = Monday), wall-clock times in the schedule's zone."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="windows")
    weekday = models.PositiveSmallIntegerField()
    start = models.TimeField()
    end = models.TimeField()

    class Meta:
        ordering = ["weekday", "start"]
        constraints = [
            models.CheckConstraint(condition=Q(weekday__lte=6), name="weekly_window_weekday_valid"),
            models.CheckConstraint(condition=Q(start__lt=models.F("end")), name="weekly_window_ordered"),
        ]

    def __str__(self) -> str:
        return f"{self.weekday} {self.start}-{self.end}"


class ScheduleException(models.Model):
    """A day off (no times: the whole day; with times: that span) or extra hours on one date."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="exceptions")
    date = models.DateField()
    kind = models.CharField(max_length=8)
    start = models.TimeField(null=True, blank=True)
    end = models.TimeField(null=True, blank=True)

    class Meta:
        ordering = ["date", "start"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=v.EXCEPTION_KINDS), name="schedule_exception_kind"),
            models.CheckConstraint(
                condition=(Q(start__isnull=True) & Q(end__isnull=True) & Q(kind="off"))
                | Q(start__lt=models.F("end")),
                name="schedule_exception_times",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.date}"


class Appointment(models.Model):
    class State(models.TextChoices):
        HELD = v.HELD, "Held (awaiting payment authorisation)"
        CONFIRMED = v.CONFIRMED, "Confirmed"
        RELEASED = v.RELEASED, "Released (payment failed or hold timed out)"
        CANCELLED = v.CANCELLED, "Cancelled"
        NO_SHOW_DOCTOR = v.NO_SHOW_DOCTOR, "Doctor did not admit (refunded in full)"
        CHECKED_IN = v.CHECKED_IN, "Checked in (in the waiting room)"
        ADMITTED = v.ADMITTED, "Admitted (the consultation is open)"
        NO_SHOW_PATIENT = v.NO_SHOW_PATIENT, "Patient did not check in (the no-show fee kept)"

    doctor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="appointments_as_doctor"
    )
    patient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="appointments_as_patient"
    )
    consultation = models.OneToOneField(
        "payments.Consultation", on_delete=models.PROTECT, null=True, blank=True, related_name="appointment"
    )
    kind = models.CharField(max_length=8)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.HELD)
    hold_expires_at = models.DateTimeField(null=True, blank=True)
    checked_in_at = models.DateTimeField(null=True, blank=True)
    admitted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(state__in=v.STATES), name="appointment_state_valid"),
            models.CheckConstraint(
                condition=Q(starts_at__lt=models.F("ends_at")), name="appointment_ordered"
            ),
            models.CheckConstraint(
                condition=~Q(patient=models.F("doctor")), name="appointment_not_with_self"
            ),
            PostgresExclusionConstraint(
                name="appointment_no_overlap",
                expressions=[
                    (TsTzRange("starts_at", "ends_at"), RangeOperators.OVERLAPS),
                    ("doctor", RangeOperators.EQUAL),
                ],
                condition=Q(state__in=v.BLOCKING_STATES),
            ),
        ]
        permissions = [
            ("cancel_appointment", "Can cancel an appointment and refund it in full (staff)"),
            ("mark_no_show", "Can mark an appointment's doctor as a no-show (staff)"),
            ("release_hold", "Can release a stuck hold on a slot (staff)"),
        ]
        indexes = [
            models.Index(fields=["patient", "-starts_at"], name="appointment_patient_recent"),
            # The busy intervals of a doctor's slot listing.
            models.Index(
                fields=["doctor", "starts_at"],
                condition=Q(state__in=v.BLOCKING_STATES),
                name="appointment_doctor_busy",
            ),
            models.Index(fields=["state", "hold_expires_at"], name="appointment_state_hold"),
            # A doctor's waiting room.
            models.Index(
                fields=["doctor", "starts_at"],
                condition=Q(state=v.CHECKED_IN),
                name="appointment_waiting",
            ),
        ]

    def __str__(self) -> str:
        return f"appointment {self.pk} ({self.state})"


class AppointmentTransition(models.Model):
    """Who moved an appointment from one state to another, and when (append-only)."""

    appointment = models.ForeignKey(Appointment, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=16, blank=True, default="")
    to_state = models.CharField(max_length=16)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source = models.CharField(max_length=16)
    note = models.CharField(max_length=255, blank=True, default="")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.appointment_id}: {self.from_state or '-'} -> {self.to_state}"


class AppointmentReminder(models.Model):
    """The reminder outbox: one row per appointment and offset, armed when the appointment is
    confirmed, moved by a reschedule, deleted by a cancel. ``sent_at`` is set in the same
    transaction that writes the push outbox rows (``notifications``), so a reminder is queued
    exactly once whatever beat or a worker does."""

    appointment = models.ForeignKey(Appointment, on_delete=models.CASCADE, related_name="reminders")
    offset_minutes = models.PositiveIntegerField()
    due_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["appointment", "offset_minutes"], name="reminder_once_per_offset"
            ),
        ]
        indexes = [
            models.Index(fields=["due_at"], condition=Q(sent_at__isnull=True), name="reminder_due_unsent"),
        ]

    def __str__(self) -> str:
        return f"reminder {self.offset_minutes} min before {self.appointment_id}"


class CalendarFeed(models.Model):
    """A doctor's private calendar feed: only the SHA-256 of its token is stored; rotating or
    deleting the row revokes the old URL."""

    doctor = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="calendar_feed"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"calendar feed of {self.doctor_id}"


class OnDemandRequest(models.Model):
    """A patient asking for the first available doctor of a specialty (``appointments.on_demand``).

    Open until one doctor accepts it (a conditional UPDATE on ``state = 'open'``: exactly one
    acceptance wins), the patient cancels it, or it expires (``ON_DEMAND_REQUEST_TTL_MINUTES``).
    The winner's acceptance opens the consultation (price from the winner's profile, a
    PaymentIntent with manual capture) in the same transaction."""

    class State(models.TextChoices):
        OPEN = v.OD_OPEN, "Open (waiting for a doctor)"
        ACCEPTED = v.OD_ACCEPTED, "Accepted by a doctor (consultation opened)"
        CANCELLED = v.OD_CANCELLED, "Cancelled by the patient"
        EXPIRED = v.OD_EXPIRED, "Expired (no doctor accepted in time)"

    patient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="on_demand_requests"
    )
    specialty = models.ForeignKey("accounts.Specialty", on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=8)
    reason = models.TextField(blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    doctor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="on_demand_accepted",
    )
    consultation = models.OneToOneField(
        "payments.Consultation", on_delete=models.PROTECT, null=True, blank=True, related_name="on_demand"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(state__in=v.OD_STATES), name="on_demand_state_valid"),
            models.CheckConstraint(
                # The consultation is written later in the same transaction as the acceptance.
                condition=Q(state=v.OD_ACCEPTED, doctor__isnull=False) | ~Q(state=v.OD_ACCEPTED),
                name="on_demand_accepted_has_doctor",
            ),
            models.UniqueConstraint(
                fields=["patient"], condition=Q(state=v.OD_OPEN), name="on_demand_one_open_per_patient"
            ),
        ]
        indexes = [
            models.Index(
                fields=["specialty", "created_at"], condition=Q(state=v.OD_OPEN), name="on_demand_open"
            ),
            models.Index(fields=["expires_at"], condition=Q(state=v.OD_OPEN), name="on_demand_expiry"),
        ]

    def __str__(self) -> str:
        return f"on-demand request {self.pk} ({self.state})"
