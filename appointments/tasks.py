"""Celery tasks for appointments (scheduled by beat: see settings ``CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from core.errors import ApplicationError

from . import no_shows, on_demand, reminders, services
from .models import Appointment

logger = logging.getLogger("healthchat.appointments")


@shared_task(name="appointments.tasks.expire_holds")
def expire_holds() -> int:
    """Release (or confirm, if the provider authorised late) every hold past its time."""
    due = Appointment.objects.filter(state=Appointment.State.HELD, hold_expires_at__lte=timezone.now())
    done = 0
    for appointment_id in due.values_list("pk", flat=True)[:500]:
        try:
            services.hold_expire(appointment_id=appointment_id)
            done += 1
        except ApplicationError as exc:  # provider down: the next run retries
            logger.warning("hold %s not expired: %s", appointment_id, exc.code)
    return done


@shared_task(name="appointments.tasks.send_reminders")
def send_reminders() -> int:
    """Queue due reminders (exactly once each: see ``appointments.reminders``)."""
    total = 0
    while True:
        queued = reminders.send_due()
        total += queued
        if queued == 0:
            return total


@shared_task(name="appointments.tasks.sweep_no_shows")
def sweep_no_shows() -> int:
    """End the appointments nobody came to (``appointments.no_shows``): the patient never checked
    in (the no-show fee kept), or the doctor never admitted a checked-in patient (full release,
    apology push). Returns how many ended."""
    done = 0
    for due, end in (
        (no_shows.patient_no_shows_due, no_shows.patient_no_show),
        (no_shows.doctor_no_shows_due, no_shows.doctor_no_show),
    ):
        for appointment_id in due():
            try:
                done += end(appointment_id=appointment_id) is not None
            except ApplicationError as exc:  # provider down: the next run retries
                logger.warning("no-show %s not ended: %s", appointment_id, exc.code)
    return done


@shared_task(name="appointments.tasks.expire_on_demand")
def expire_on_demand() -> int:
    """Close on-demand requests nobody accepted in time (``ON_DEMAND_REQUEST_TTL_MINUTES``)."""
    total = 0
    while True:
        closed = on_demand.expire_due()
        total += closed
        if closed == 0:
            return total
