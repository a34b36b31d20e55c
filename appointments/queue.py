"""The waiting room as people see it: a doctor's queue of checked-in patients, each patient's
position and estimated wait, and the live frames that carry them.

Order: by the appointment's start, then by check-in time (the doctor may admit in any order;
this is only the order they are shown in). The **estimated wait** of the patient at position
``p`` (1-based) is, in whole seconds::

    max(seconds until their appointment starts,
        time left of the doctor's current consultation + (p - 1) * consult length)

where the *consult length* is the average duration (accepted → completed) of the doctor's last
``CONSULT_SAMPLE`` completed consultations when there are at least ``CONSULT_MIN_SAMPLES`` of
them, else the slot length of their schedule; *time left of the current consultation* is the
consult length minus the time since the doctor last admitted someone whose consultation is still
open (0 when none, never below 0). It is an estimate, not a promise: the doctor admits in any order.

Frames (after commit, to every device on every process): ``waiting_room.updated`` to the doctor
(the whole queue) and ``waiting_room.position`` to each waiting patient (their own place only).
Both carry ``as_of``: a client keeps the frame with the newest ``as_of`` (two changes committed
at once may publish out of order); ``GET /api/v1/waiting-room`` and
``GET /api/v1/appointments/{id}/position`` are the truth.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F
from django.utils import timezone

from messaging.services import fan_out
from payments.models import Consultation

from . import validators as v
from .models import Appointment, Schedule

logger = logging.getLogger("healthchat.appointments")

CONSULT_SAMPLE = 20
CONSULT_MIN_SAMPLES = 3
DEFAULT_CONSULT_SECONDS = 20 * 60


@dataclass(frozen=True)
class Waiting:
    appointment_id: int
    patient_id: int
    display_name: str
    checked_in_at: dt.datetime
    starts_at: dt.datetime
    position: int
    estimated_wait_seconds: int

    def doctor_view(self) -> dict[str, Any]:
        return {
            "appointment_id": self.appointment_id,
            "patient_id": self.patient_id,
            "display_name": self.display_name,
            "checked_in_at": self.checked_in_at.isoformat(),
            "starts_at": self.starts_at.isoformat(),
            "position": self.position,
            "estimated_wait_seconds": self.estimated_wait_seconds,
        }

    def patient_view(self, *, doctor_id: int, as_of: dt.datetime) -> dict[str, Any]:
        return {
            "appointment_id": self.appointment_id,
            "doctor_id": doctor_id,
            "position": self.position,
            "ahead": self.position - 1,
            "estimated_wait_seconds": self.estimated_wait_seconds,
            "as_of": as_of.isoformat(),
        }


def consult_seconds(*, doctor_id: int) -> int:
    """The doctor's consult length: recent average, or the schedule's slot length."""
    durations = list(
        Consultation.objects.filter(
            doctor_id=doctor_id,
            state=Consultation.State.COMPLETED,
            accepted_at__isnull=False,
            completed_at__isnull=False,
        )
        .order_by("-completed_at")
        .annotate(took=ExpressionWrapper(F("completed_at") - F("accepted_at"), output_field=DurationField()))
        .values_list("took", flat=True)[:CONSULT_SAMPLE]
    )
    if len(durations) >= CONSULT_MIN_SAMPLES:
        return max(60, int(sum(d.total_seconds() for d in durations) / len(durations)))
    slot = Schedule.objects.filter(doctor_id=doctor_id).values_list("slot_minutes", flat=True).first()
    return int(slot) * 60 if slot else DEFAULT_CONSULT_SECONDS


def _current_left(*, doctor_id: int, consult: int, now: dt.datetime) -> int:
    """What is left of the consultation the doctor admitted last, if it is still open."""
    admitted_at = (
        Appointment.objects.filter(
            doctor_id=doctor_id,
            state=v.ADMITTED,
            admitted_at__isnull=False,
            consultation__state__in=(Consultation.State.ACCEPTED, Consultation.State.IN_PROGRESS),
        )
        .order_by("-admitted_at")
        .values_list("admitted_at", flat=True)
        .first()
    )
    if admitted_at is None:
        return 0
    return max(0, consult - int((now - admitted_at).total_seconds()))


def waiting(*, doctor_id: int, now: dt.datetime | None = None) -> list[Waiting]:
    """The doctor's checked-in patients in queue order, with positions and estimates."""
    now = now or timezone.now()
    rows = list(
        Appointment.objects.filter(doctor_id=doctor_id, state=v.CHECKED_IN)
        .order_by("starts_at", "checked_in_at", "id")
        .values_list("pk", "patient_id", "patient__display_name", "checked_in_at", "starts_at")
    )
    if not rows:
        return []
    consult = consult_seconds(doctor_id=doctor_id)
    busy = _current_left(doctor_id=doctor_id, consult=consult, now=now)
    out = []
    for index, (pk, patient_id, name, checked_in_at, starts_at) in enumerate(rows):
        until_start = int((starts_at - now).total_seconds())
        out.append(
            Waiting(
                appointment_id=pk,
                patient_id=patient_id,
                display_name=name,
                checked_in_at=checked_in_at or now,
                starts_at=starts_at,
                position=index + 1,
                estimated_wait_seconds=max(0, until_start, busy + index * consult),
            )
        )
    return out


def queue_data(*, doctor_id: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """The doctor's view: ``{doctor_id, as_of, queue: [...]}`` (``waiting_room.updated``)."""
    now = now or timezone.now()
    return {
        "doctor_id": doctor_id,
        "as_of": now.isoformat(),
        "queue": [w.doctor_view() for w in waiting(doctor_id=doctor_id, now=now)],
    }


def position_data(*, appointment: Appointment, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """The patient's place (``waiting_room.position``), or None when they are not waiting."""
    now = now or timezone.now()
    for entry in waiting(doctor_id=appointment.doctor_id, now=now):
        if entry.appointment_id == appointment.pk:
            return entry.patient_view(doctor_id=appointment.doctor_id, as_of=now)
    return None


def publish(*, doctor_id: int) -> None:
    """Send the doctor their queue and each waiting patient their place (read fresh: call it
    after commit)."""
    now = timezone.now()
    entries = waiting(doctor_id=doctor_id, now=now)
    fan_out(
        user_ids=[doctor_id],
        frame={
            "type": "waiting_room.updated",
            "data": {
                "doctor_id": doctor_id,
                "as_of": now.isoformat(),
                "queue": [w.doctor_view() for w in entries],
            },
        },
    )
    for entry in entries:
        fan_out(
            user_ids=[entry.patient_id],
            frame={
                "type": "waiting_room.position",
                "data": entry.patient_view(doctor_id=doctor_id, as_of=now),
            },
        )


def publish_on_commit(*, doctor_id: int) -> None:
    """After the current transaction commits, publish the doctor's waiting room (a live hint:
    a failure is logged, never turned into an error of the committed action)."""

    def run() -> None:
        try:
            publish(doctor_id=doctor_id)
        except Exception:
            logger.exception("waiting room of doctor %s not published", doctor_id)

    transaction.on_commit(run)
