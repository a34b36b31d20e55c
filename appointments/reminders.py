"""Appointment reminders by push, through an outbox (``AppointmentReminder``).

Armed when an appointment is confirmed (one row per offset in
``APPOINTMENT_REMINDER_OFFSETS_MINUTES``, default 24 h and 15 min before, only those still in
the future), moved by a reschedule, deleted by a cancel. Beat's ``send_reminders`` claims due
rows with ``FOR UPDATE SKIP LOCKED`` and, in one transaction per batch, writes the push outbox
rows (``notifications.services.push_appointment``, unique per reminder and device) and marks the
reminder sent: the two commit together or not at all, so a beat restart, a duplicated task or a
worker killed mid-batch never queues a reminder twice, and a rolled-back batch is retried by the
next run. The push itself is sent once by the push pipeline's claim (docs/push.md).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from notifications.services import appointment_push_ref, push_appointment

from . import validators as v
from .models import Appointment, AppointmentReminder


def arm(appointment: Appointment) -> int:
    """(Re)create the unsent reminders of a confirmed appointment for its current time."""
    AppointmentReminder.objects.filter(appointment=appointment, sent_at__isnull=True).delete()
    now = timezone.now()
    sent = set(
        AppointmentReminder.objects.filter(appointment=appointment).values_list("offset_minutes", flat=True)
    )
    rows = [
        AppointmentReminder(
            appointment=appointment,
            offset_minutes=offset,
            due_at=appointment.starts_at - dt.timedelta(minutes=offset),
        )
        for offset in settings.APPOINTMENT_REMINDER_OFFSETS_MINUTES
        if offset not in sent and appointment.starts_at - dt.timedelta(minutes=offset) > now
    ]
    AppointmentReminder.objects.bulk_create(rows)
    return len(rows)


def rearm(appointment: Appointment) -> int:
    """After a reschedule: the reminders start again for the new time (sent ones included)."""
    AppointmentReminder.objects.filter(appointment=appointment).delete()
    return arm(appointment)


def disarm(appointment: Appointment) -> None:
    AppointmentReminder.objects.filter(appointment=appointment, sent_at__isnull=True).delete()


def send_due(*, limit: int = 200) -> int:
    """Queue the due reminders of confirmed appointments (one transaction); the number queued."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            AppointmentReminder.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("appointment")
            .filter(sent_at__isnull=True, due_at__lte=now)
            .order_by("due_at")[:limit]
        )
        queued = 0
        for reminder in due:
            appointment = reminder.appointment
            reminder.sent_at = now
            reminder.save(update_fields=["sent_at"])
            if appointment.state != v.CONFIRMED or appointment.starts_at <= now:
                continue  # too late or not on any more: marked, never sent
            ref = appointment_push_ref(
                kind="appointment.reminder",
                appointment_id=appointment.pk,
                starts_at=appointment.starts_at,
                slot=str(reminder.offset_minutes),
            )
            for user_id in (appointment.patient_id, appointment.doctor_id):
                push_appointment(ref=ref, user_id=user_id)
            queued += 1
        return queued
