"""The on-demand queue by specialty: a patient asks for "the first available" doctor of a
specialty; exactly one doctor's acceptance wins.

- ``request_create``: the patient (one open request at a time, ``409 request_open``) names a
  specialty (``accounts.Specialty`` slug), a kind and an optional reason. Every **eligible**
  doctor (that specialty, verified, active, a fee, online and inside their hours or queuing:
  ``payments.selectors.availability_refusal``) gets ``on_demand.updated`` on their sockets; a
  doctor's ``GET on-demand`` lists the open requests of their specialty.
- ``request_accept``: a conditional ``UPDATE … WHERE state = 'open' AND expires_at > now``
  decides the winner (PostgreSQL re-checks the condition after waiting on a concurrent
  acceptance's row lock, so exactly one row count of 1 exists); in the same transaction the
  winner is checked as for a direct request (``payments.booking.check_can_request``: online,
  fee, not blocked, no open consultation with this patient) and the consultation is opened
  through the payments flow (``payments.booking.consultation_open``: the winner's price, a
  PaymentIntent with manual capture, the direct conversation). Any refusal rolls the whole
  acceptance back and the request stays open for the others. Losers get ``409 request_taken``
  (or ``request_closed`` when it expired or was cancelled).
- ``request_cancel`` (the patient) and ``expire_due`` (beat) close open requests.

After each committed change the patient and the eligible doctors get ``on_demand.updated``
(never the reason or the patient's id: doctors read those in ``GET on-demand``, audited).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import DoctorProfile, Specialty, User
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging.services import fan_out_on_commit
from payments import booking as payment_booking
from payments import selectors as payment_selectors
from payments import validators as payment_validators
from payments.models import DoctorAvailability

from .models import OnDemandRequest

logger = logging.getLogger("healthchat.appointments")
State = OnDemandRequest.State
LIST_LIMIT = 100


# --- Who may see and take a request ---------------------------------------------------------
def _candidates(specialty_id: int) -> QuerySet[DoctorProfile]:
    return DoctorProfile.objects.filter(
        specialty_id=specialty_id,
        verification_status=DoctorProfile.Verification.VERIFIED,
        consultation_fee__gt=0,
        user__is_active=True,
        user__deleted_at__isnull=True,
    )


def eligible_doctor_ids(*, specialty_id: int, now: dt.datetime | None = None) -> list[int]:
    """The doctors who can take a request of this specialty right now (online, in hours)."""
    ids = list(_candidates(specialty_id).values_list("user_id", flat=True))
    availability = {
        a.doctor_id: a
        for a in DoctorAvailability.objects.filter(doctor_id__in=ids).prefetch_related("windows")
    }
    return [
        doctor_id
        for doctor_id in ids
        if payment_selectors.availability_refusal(availability=availability.get(doctor_id), now=now) is None
    ]


def _doctor_specialty(doctor: User) -> int:
    """The specialty of a verified doctor, or ``403 doctors_only`` / ``not_verified``."""
    if doctor.role != User.Role.DOCTOR:
        raise PermissionDenied("Only doctors take on-demand requests.", code="doctors_only")
    profile = DoctorProfile.objects.filter(user=doctor).only("specialty_id", "verification_status").first()
    if profile is None or profile.verification_status != DoctorProfile.Verification.VERIFIED:
        raise PermissionDenied("Only verified doctors take on-demand requests.", code="not_verified")
    return profile.specialty_id


# --- Frames ---------------------------------------------------------------------------------
def request_data(request: OnDemandRequest) -> dict[str, Any]:
    """What ``on_demand.updated`` carries (no reason, no patient id)."""
    return {
        "id": request.pk,
        "specialty": request.specialty.slug,
        "kind": request.kind,
        "state": request.state,
        "created_at": request.created_at.isoformat(),
        "expires_at": request.expires_at.isoformat(),
        "doctor_id": request.doctor_id,
        "consultation_id": request.consultation_id,
    }


def _announce(request: OnDemandRequest, doctor_ids: list[int]) -> None:
    users = sorted({request.patient_id, *doctor_ids})
    fan_out_on_commit(
        user_ids=users, frame={"type": "on_demand.updated", "data": {"request": request_data(request)}}
    )


# --- Reads ----------------------------------------------------------------------------------
def request_list(*, user: User) -> QuerySet[OnDemandRequest]:
    """A patient: their own requests, newest first. A verified doctor: the open, unexpired
    requests of their specialty, oldest first (the queue), and the ones they accepted."""
    base = OnDemandRequest.objects.select_related("specialty")
    if user.role == User.Role.DOCTOR:
        specialty_id = _doctor_specialty(user)
        return base.filter(
            Q(specialty_id=specialty_id, state=State.OPEN, expires_at__gt=timezone.now()) | Q(doctor=user)
        ).order_by("-state", "created_at", "id")  # "open" sorts before "accepted" descending
    return base.filter(patient=user).order_by("-created_at", "-id")


def request_get(*, user: User, request_id: int) -> OnDemandRequest:
    """The patient's own request, the winner's, or an open one of a verified doctor's
    specialty; anyone else ``404 request_not_found``."""
    request = OnDemandRequest.objects.select_related("specialty").filter(pk=request_id).first()
    visible = request is not None and (
        request.patient_id == user.pk
        or request.doctor_id == user.pk
        or (
            user.role == User.Role.DOCTOR
            and request.state == State.OPEN
            and DoctorProfile.objects.filter(
                user=user,
                specialty_id=request.specialty_id,
                verification_status=DoctorProfile.Verification.VERIFIED,
            ).exists()
        )
    )
    if request is None or not visible:
        raise NotFound("No such on-demand request.", code="request_not_found")
    return request


# --- Actions --------------------------------------------------------------------------------
def request_create(*, patient: User, specialty: str, kind: str, reason: str | None = None) -> OnDemandRequest:
    if patient.role != User.Role.PATIENT:
        raise PermissionDenied("Only patients ask for a doctor.", code="patients_only")
    kind = payment_validators.validate_kind(kind)
    text = payment_validators.validate_reason(reason)
    found = Specialty.objects.filter(slug=specialty).first() if isinstance(specialty, str) else None
    if found is None:
        raise ApplicationError(
            "unknown_specialty", "Unknown specialty.", status=400, fields={"specialty": ["invalid"]}
        )
    try:
        with transaction.atomic():
            request = OnDemandRequest.objects.create(
                patient=patient,
                specialty=found,
                kind=kind,
                reason=text,
                expires_at=timezone.now() + dt.timedelta(minutes=settings.ON_DEMAND_REQUEST_TTL_MINUTES),
            )
            _announce(request, eligible_doctor_ids(specialty_id=found.pk))
    except IntegrityError as exc:
        if "on_demand_one_open_per_patient" in str(exc):
            raise ApplicationError(
                "request_open", "You already have an open request for a doctor.", status=409
            ) from exc
        raise
    logger.info("on-demand request %s opened (%s)", request.pk, found.slug)
    return request


def _closed_error(request_id: int) -> ApplicationError:
    state = OnDemandRequest.objects.filter(pk=request_id).values_list("state", flat=True).first()
    if state == State.ACCEPTED:
        return ApplicationError(
            "request_taken", "Another doctor has already accepted this request.", status=409
        )
    return ApplicationError("request_closed", "This request has expired or was cancelled.", status=409)


def request_accept(*, doctor: User, request_id: int) -> OnDemandRequest:
    """Exactly one doctor wins (see the module's docstring); the consultation is opened with the
    winner's price in the same transaction."""
    specialty_id = _doctor_specialty(doctor)
    if not OnDemandRequest.objects.filter(pk=request_id, specialty_id=specialty_id).exists():
        raise NotFound("No such on-demand request.", code="request_not_found")
    now = timezone.now()
    with transaction.atomic():
        won = OnDemandRequest.objects.filter(pk=request_id, state=State.OPEN, expires_at__gt=now).update(
            state=State.ACCEPTED, doctor=doctor, ended_at=now
        )
        if won != 1:
            raise _closed_error(request_id)
        request = OnDemandRequest.objects.select_related("specialty", "patient").get(pk=request_id)
        profile = payment_booking.check_can_request(patient=request.patient, doctor_id=doctor.pk)
        consultation = payment_booking.consultation_open(
            patient=request.patient,
            profile=profile,
            kind=request.kind,
            reason=request.reason,
            expires_at=now + dt.timedelta(hours=settings.CONSULTATION_REQUEST_TTL_HOURS),
        )
        request.consultation = consultation
        request.save(update_fields=["consultation"])
        _announce(request, eligible_doctor_ids(specialty_id=request.specialty_id, now=now))
    logger.info("on-demand request %s accepted by %s", request.pk, doctor.pk)
    return request


def request_cancel(*, patient: User, request_id: int) -> OnDemandRequest:
    """The patient withdraws an open request (idempotent for a cancelled one)."""
    with transaction.atomic():
        request = (
            OnDemandRequest.objects.select_for_update()
            .select_related("specialty")
            .filter(pk=request_id, patient=patient)
            .first()
        )
        if request is None:
            raise NotFound("No such on-demand request.", code="request_not_found")
        if request.state == State.CANCELLED:
            return request
        if request.state != State.OPEN:
            raise _closed_error(request_id)
        request.state = State.CANCELLED
        request.ended_at = timezone.now()
        request.save(update_fields=["state", "ended_at"])
        _announce(request, eligible_doctor_ids(specialty_id=request.specialty_id))
    return request


def expire_due(*, now: dt.datetime | None = None) -> int:
    """Close the open requests past their time (beat); everyone concerned is told."""
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            OnDemandRequest.objects.select_for_update(skip_locked=True)
            .select_related("specialty")
            .filter(state=State.OPEN, expires_at__lte=now)
            .order_by("id")[:500]
        )
        eligible: dict[int, list[int]] = {}
        for request in due:
            request.state = State.EXPIRED
            request.ended_at = now
            request.save(update_fields=["state", "ended_at"])
            if request.specialty_id not in eligible:
                eligible[request.specialty_id] = eligible_doctor_ids(
                    specialty_id=request.specialty_id, now=now
                )
            _announce(request, eligible[request.specialty_id])
    return len(due)


# --- Accounts hooks (``account_data``) ------------------------------------------------------
def export_requests(*, user: User) -> list[dict[str, Any]]:
    rows = (
        OnDemandRequest.objects.filter(Q(patient=user) | Q(doctor=user))
        .select_related("specialty")
        .order_by("id")
    )
    return [
        {
            **request_data(r),
            "role": "patient" if r.patient_id == user.pk else "doctor",
            "reason": r.reason if r.patient_id == user.pk else "",
            "ended_at": r.ended_at.isoformat() if r.ended_at else None,
        }
        for r in rows
    ]


def erase_requests(*, user: User) -> None:
    """Open requests of the erased patient are cancelled; their reasons go (the consultation
    opened from one keeps its own record, erased by payments)."""
    now = timezone.now()
    OnDemandRequest.objects.filter(patient=user, state=State.OPEN).update(state=State.CANCELLED, ended_at=now)
    OnDemandRequest.objects.filter(patient=user).exclude(reason="").update(reason="")
