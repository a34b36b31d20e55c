"""iCalendar (RFC 5545) files made with the ``icalendar`` library: one appointment's ``.ics``
for its patient or doctor, and a doctor's private feed (a revocable token in the URL).

No health context in either: the summary names the kind of consultation and the other person
only for the patient's own file (their doctor); the doctor's feed, which calendar apps fetch
and store outside healthchat, says "healthchat appointment" and the id, never the patient's
name or the reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from django.db import transaction
from django.utils import timezone
from icalendar import Calendar, Event

from accounts.models import User
from audit import actions as audited
from audit import services as audit
from audit.client import Client
from core.errors import NotFound, PermissionDenied

from . import validators as v
from .models import Appointment, CalendarFeed

PRODID = "-//healthchat//appointments//EN"
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{20,100}")
FEED_PAST_DAYS = 30
FEED_FUTURE_DAYS = 400


def _calendar(name: str) -> Calendar:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", name)
    return cal


def _event(appointment: Appointment, summary: str, sequence: int) -> Event:
    event = Event()
    event.add("uid", f"appointment-{appointment.pk}@healthchat")
    event.add("dtstamp", timezone.now().astimezone(dt.UTC))
    event.add("dtstart", appointment.starts_at.astimezone(dt.UTC))
    event.add("dtend", appointment.ends_at.astimezone(dt.UTC))
    event.add("summary", summary)
    event.add("sequence", sequence)
    event.add("status", "CONFIRMED" if appointment.state in v.BLOCKING_STATES else "CANCELLED")
    return event


def appointment_ics(*, appointment: Appointment, viewer: User) -> bytes:
    """The appointment as a one-event calendar, for its patient or its doctor (the caller checked)."""
    if viewer.pk == appointment.patient_id:
        summary = f"{appointment.kind.capitalize()} consultation with {appointment.doctor.display_name}"
    else:
        summary = f"healthchat appointment #{appointment.pk} ({appointment.kind})"
    cal = _calendar("healthchat")
    cal.add("method", "PUBLISH")
    cal.add_component(_event(appointment, summary, appointment.transitions.count()))
    return bytes(cal.to_ical())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def feed_rotate(*, doctor: User) -> str:
    """A new feed token for the doctor (the old URL stops working); the token, shown once."""
    if doctor.role != User.Role.DOCTOR:
        raise PermissionDenied("Only doctors have a calendar feed.", code="doctors_only")
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        CalendarFeed.objects.update_or_create(doctor=doctor, defaults={"token_hash": _hash(token)})
    return token


def feed_revoke(*, doctor: User) -> None:
    if doctor.role != User.Role.DOCTOR:
        raise PermissionDenied("Only doctors have a calendar feed.", code="doctors_only")
    CalendarFeed.objects.filter(doctor=doctor).delete()


def feed_ics(*, token: str, client: Client | None = None) -> bytes:
    """The doctor's appointments (30 days back, 400 ahead), held and confirmed ones and the
    cancelled ones (so calendar apps remove them). ``404 feed_not_found`` for any bad token.
    Each fetch is audited (``calendar_feed.read``, as the doctor whose feed it is)."""
    feed = (
        CalendarFeed.objects.filter(token_hash=_hash(token)).first() if TOKEN_SHAPE.fullmatch(token) else None
    )
    if feed is None:
        raise NotFound("No such calendar feed.", code="feed_not_found")
    audit.record(
        audited.CALENDAR_FEED_READ,
        actor=feed.doctor_id,
        object_type="calendar_feed",
        object_id=feed.doctor_id,
        client=client,
    )
    now = timezone.now()
    appointments = Appointment.objects.filter(
        doctor_id=feed.doctor_id,
        starts_at__gte=now - dt.timedelta(days=FEED_PAST_DAYS),
        starts_at__lte=now + dt.timedelta(days=FEED_FUTURE_DAYS),
        state__in=(*v.BLOCKING_STATES, v.CANCELLED),
    ).order_by("starts_at")
    cal = _calendar("healthchat appointments")
    for appointment in appointments:
        cal.add_component(
            _event(appointment, f"healthchat appointment #{appointment.pk} ({appointment.kind})", 0)
        )
    return bytes(cal.to_ical())
