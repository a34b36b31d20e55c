"""Booking a consultation: the patient's request (checked against the doctor's availability and
price, paid by a held payment intent) and the doctor's weekly availability; the consultation's
data in the user's export and erasure. The transitions after the request: ``payments.services``."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import DoctorProfile, User
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging.services import check_not_blocked, conversation_open_direct

from . import selectors
from . import validators as v
from .gateway import GatewayError, get_gateway
from .models import (
    AvailabilityWindow,
    Consultation,
    ConsultationTransition,
    DoctorAvailability,
)
from .services import announce, idempotency_key, provider_failed, transition

logger = logging.getLogger("healthchat.payments")

State = Consultation.State


# --- Request --------------------------------------------------------------------------------
def check_can_request(*, patient: User, doctor_id: int) -> DoctorProfile:
    """A patient may consult a verified, available doctor with a fee, one open request at a time,
    never when either of them blocked the other."""
    if patient.role != User.Role.PATIENT:
        raise PermissionDenied("Only patients can request consultations.", code="patients_only")
    profile = (
        DoctorProfile.objects.select_related("user")
        .filter(
            user_id=doctor_id,
            verification_status=DoctorProfile.Verification.VERIFIED,
            user__is_active=True,
            user__deleted_at__isnull=True,
        )
        .first()
    )
    if profile is None:
        raise NotFound("No such doctor.", code="doctor_not_found")
    check_not_blocked(user_id=patient.pk, peer_id=doctor_id)
    if profile.consultation_fee <= 0:
        raise ApplicationError(
            "doctor_has_no_fee", "This doctor has not set a consultation fee yet.", status=409
        )
    refusal = selectors.availability_refusal(availability=selectors.availability_get(doctor_id=doctor_id))
    if refusal == "doctor_offline":
        raise ApplicationError("doctor_offline", "This doctor is not taking requests now.", status=409)
    if refusal == "outside_hours":
        raise ApplicationError(
            "doctor_unavailable", "This doctor is outside their consultation hours.", status=409
        )
    open_one = (
        Consultation.objects.filter(patient=patient, doctor_id=doctor_id, state__in=v.OPEN_STATES)
        .values_list("pk", flat=True)
        .first()
    )
    if open_one is not None:
        raise ApplicationError(
            "consultation_open",
            "You already have an open consultation with this doctor.",
            status=409,
            extra={"consultation_id": open_one},
        )
    return profile


def consultation_request(
    *, patient: User, doctor_id: int, kind: str, reason: str | None = None
) -> Consultation:
    """Request a consultation: price from the doctor's fee now, a PaymentIntent (manual capture)
    for it, and the direct conversation with the doctor (opened or reused)."""
    kind = v.validate_kind(kind)
    text = v.validate_reason(reason)
    profile = check_can_request(patient=patient, doctor_id=doctor_id)
    return consultation_open(
        patient=patient,
        profile=profile,
        kind=kind,
        reason=text,
        expires_at=timezone.now() + dt.timedelta(hours=settings.CONSULTATION_REQUEST_TTL_HOURS),
    )


def consultation_open(
    *, patient: User, profile: DoctorProfile, kind: str, reason: str, expires_at: dt.datetime
) -> Consultation:
    """Create the consultation (validated ``kind`` and ``reason``, a doctor the caller checked)
    with its PaymentIntent (manual capture) and the direct conversation. Used by
    ``consultation_request`` and by booked appointments (``appointments.services``), whose
    consultation waits until the appointment's end instead of the request TTL."""
    gateway = get_gateway()
    doctor_id = profile.user_id
    price, currency = profile.consultation_fee, profile.currency
    try:
        with transaction.atomic():
            conversation, _ = conversation_open_direct(user=patient, peer_id=doctor_id)
            consultation = Consultation.objects.create(
                patient=patient,
                doctor_id=doctor_id,
                kind=kind,
                reason=reason,
                price=price,
                currency=currency,
                platform_fee=v.platform_fee_for(price),
                conversation=conversation,
                provider=gateway.name,
                expires_at=expires_at,
            )
            ConsultationTransition.objects.create(
                consultation=consultation, to_state=State.REQUESTED, actor=patient, source="api"
            )
            intent = gateway.create_payment_intent(
                amount=price,
                currency=currency,
                metadata={
                    "consultation_id": str(consultation.pk),
                    "patient_id": str(patient.pk),
                    "doctor_id": str(doctor_id),
                },
                transfer_group=f"consultation-{consultation.pk}",
                description=f"healthchat consultation {consultation.pk}",
                idempotency_key=idempotency_key(consultation.pk, "create"),
            )
            consultation.payment_intent_id = intent.id
            consultation.client_secret = intent.client_secret
            consultation.save(update_fields=["payment_intent_id", "client_secret", "updated_at"])
            if intent.status == "requires_capture":  # authorised already (development provider)
                transition(consultation, "pay", actor=None, source="system", note=gateway.name)
            else:
                announce(consultation)
    except GatewayError as exc:
        raise provider_failed(exc) from exc
    except IntegrityError as exc:
        if "consultation_one_open_per_pair" in str(exc):
            raise ApplicationError(
                "consultation_open", "You already have an open consultation with this doctor.", status=409
            ) from exc
        raise
    return consultation


# --- Availability ---------------------------------------------------------------------------
def availability_set(
    *,
    doctor: User,
    online: bool | None = None,
    timezone_name: str | None = None,
    outside_hours: str | None = None,
    weekly_hours: list[dict[str, Any]] | None = None,
) -> DoctorAvailability:
    """A doctor sets their online switch, time zone and weekly hours (given fields only)."""
    if doctor.role != User.Role.DOCTOR:
        raise PermissionDenied("Only doctors set availability.", code="doctors_only")
    windows = v.validate_weekly_hours(weekly_hours) if weekly_hours is not None else None
    tz = v.validate_timezone(timezone_name) if timezone_name is not None else None
    mode = v.validate_outside_hours(outside_hours) if outside_hours is not None else None
    with transaction.atomic():
        availability, _ = DoctorAvailability.objects.select_for_update().get_or_create(doctor=doctor)
        if online is not None:
            availability.online = bool(online)
        if tz is not None:
            availability.timezone = tz
        if mode is not None:
            availability.outside_hours = mode
        availability.save()
        if windows is not None:
            availability.windows.all().delete()
            AvailabilityWindow.objects.bulk_create(
                [
                    AvailabilityWindow(availability=availability, weekday=d, start=s, end=e)
                    for d, s, e in windows
                ]
            )
    fresh = selectors.availability_get(doctor_id=doctor.pk)
    assert fresh is not None
    return fresh


# --- Accounts hooks ---------------------------------------------------------------------------
def export_user_consultations(user: User) -> list[dict[str, Any]]:
    return selectors.export_consultations(user=user)


def erase_user_consultations(user: User) -> None:
    """Account deletion: financial records stay (legal retention), the intake text goes."""
    Consultation.objects.filter(patient=user).exclude(reason="").update(reason="")
