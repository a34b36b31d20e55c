"""Appointments in the account holder's data export and in account erasure (registered with
``accounts.services`` in ``AppointmentsConfig.ready``).

Export (section ``appointments``): the appointments the user is the patient or the doctor of,
with their log; a doctor's schedule (zone, rules, weekly hours, exceptions) and whether a
calendar feed exists (never its token, which is not stored anyway); the user's on-demand
requests (``on_demand``) as patient or as the doctor who took them.

Erasure (inside ``accounts.services.user_delete``'s transaction): every appointment of theirs
still held or confirmed is cancelled with everything refunded to the patient (the other side
is told by ``appointment.updated``), pending reminders go with it; a doctor's schedule and
calendar feed are deleted (no more slots, the feed URL answers ``404``); open on-demand
requests are cancelled. Past appointments stay: they are the consultations' records (kept for
the legal retention, like the consultations) and carry no free text (the reason is the
consultation's, erased by payments' eraser).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from accounts.models import User

from . import on_demand, staff
from . import validators as v
from .models import Appointment, CalendarFeed, Schedule


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def export_user_appointments(user: User) -> dict[str, Any]:
    appointments = (
        Appointment.objects.filter(Q(patient=user) | Q(doctor=user))
        .prefetch_related("transitions")
        .order_by("id")
    )
    schedule = Schedule.objects.prefetch_related("windows", "exceptions").filter(doctor=user).first()
    return {
        "appointments": [
            {
                "id": a.pk,
                "role": "patient" if a.patient_id == user.pk else "doctor",
                "patient_id": a.patient_id,
                "doctor_id": a.doctor_id,
                "consultation_id": a.consultation_id,
                "kind": a.kind,
                "state": a.state,
                "starts_at": a.starts_at.isoformat(),
                "ends_at": a.ends_at.isoformat(),
                "created_at": a.created_at.isoformat(),
                "transitions": [
                    {
                        "from": t.from_state,
                        "to": t.to_state,
                        "actor_id": t.actor_id,
                        "source": t.source,
                        "note": t.note,
                        "at": t.at.isoformat(),
                    }
                    for t in a.transitions.all()
                ],
            }
            for a in appointments
        ],
        "schedule": None
        if schedule is None
        else {
            "timezone": schedule.timezone,
            "slot_minutes": schedule.slot_minutes,
            "buffer_minutes": schedule.buffer_minutes,
            "horizon_days": schedule.horizon_days,
            "min_notice_minutes": schedule.min_notice_minutes,
            "bookable": schedule.bookable,
            "weekly_hours": [
                {"weekday": w.weekday, "start": w.start.isoformat(), "end": w.end.isoformat()}
                for w in schedule.windows.all()
            ],
            "exceptions": [
                {"date": e.date.isoformat(), "kind": e.kind, "start": _iso(e.start), "end": _iso(e.end)}
                for e in schedule.exceptions.all()
            ],
        },
        "calendar_feed": CalendarFeed.objects.filter(doctor=user).exists(),
        "on_demand": on_demand.export_requests(user=user),
    }


def erase_user_appointments(user: User) -> None:
    open_ones = (
        Appointment.objects.select_for_update()
        .filter(Q(patient=user) | Q(doctor=user), state__in=v.BLOCKING_STATES)
        .order_by("id")
    )
    for appointment in open_ones:
        staff.cancel_refunding_in_full(
            appointment, actor=None, source="system", note="account erased, refunded in full"
        )
    Schedule.objects.filter(doctor=user).delete()
    CalendarFeed.objects.filter(doctor=user).delete()
    on_demand.erase_requests(user=user)
