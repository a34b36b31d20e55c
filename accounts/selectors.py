"""Reads for accounts, each scoped to what the caller may see."""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from core.errors import ApplicationError, NotFound

from .models import Device, DoctorProfile, KyberPreKey, OneTimePreKey, Specialty, User
from .validators import validate_verified_phone_number


def user_get_by_firebase_uid(*, uid: str) -> User | None:
    return (
        User.objects.select_related("patient_profile", "doctor_profile__specialty")
        .filter(firebase_uid=uid, deleted_at__isnull=True)
        .first()
    )


def users_by_firebase_uid(*, uids: list[str]) -> dict[str, User]:
    """``user_get_by_firebase_uid`` for many uids in one query (sockets signing in together),
    without the profiles: a socket keeps its user for its whole life and nothing on the socket
    path reads them (a doctor's profile, bio and specialty would stay in memory with every idle
    socket: issue 26; a service that wants one loads it in its own thread)."""
    if not uids:
        return {}
    users = User.objects.filter(firebase_uid__in=sorted(set(uids)), deleted_at__isnull=True)
    return {user.firebase_uid: user for user in users if user.firebase_uid is not None}


def user_get_by_phone_or_id(*, ref: str) -> User:
    """For operator commands: ``ref`` is a user id or a phone number (any common format)."""
    ref = ref.strip()
    user = None
    if ref.isdigit():
        user = User.objects.filter(pk=int(ref)).first()
    else:
        try:  # the stored numbers came from verified tokens: normalise the same way
            phone = validate_verified_phone_number(ref)
        except ApplicationError:
            phone = None
        if phone is not None:
            user = User.objects.filter(phone_number=phone).first()
    if user is None:
        raise NotFound(f"No user matches {ref!r}.", code="user_not_found")
    return user


# The public list of specialties is cached under a version that every committed change replaces
# (services.specialties_changed): a reader that filled the cache from the old rows while the
# change committed wrote them under the old version, which nobody reads any more. A lost version
# key (eviction) starts a new version, never an old one. The timeout bounds what a change made
# outside the services (a shell, a migration) leaves stale.
SPECIALTIES_VERSION_KEY = "accounts:specialties:version"
SPECIALTIES_CACHE_SECONDS = 3600


def specialty_list() -> list[dict[str, str]]:
    """Every specialty (``slug``, ``name``) by name: public reference data, from the cache."""
    version = cache.get_or_set(SPECIALTIES_VERSION_KEY, time.time_ns, timeout=None)
    key = f"accounts:specialties:{version}"
    rows: list[dict[str, str]] | None = cache.get(key)
    if rows is None:
        rows = [
            {"slug": slug, "name": name}
            for slug, name in Specialty.objects.order_by("name", "slug").values_list("slug", "name")
        ]
        cache.set(key, rows, SPECIALTIES_CACHE_SECONDS)
    return rows


def doctor_list(*, specialty: str | None = None, q: str | None = None) -> QuerySet[DoctorProfile]:
    """Verified doctors only, searchable by specialty slug and name."""
    qs = DoctorProfile.objects.select_related("user", "specialty").filter(
        verification_status=DoctorProfile.Verification.VERIFIED,
        user__is_active=True,
        user__deleted_at__isnull=True,
    )
    if specialty:
        qs = qs.filter(specialty__slug=specialty)
    if q:
        qs = qs.filter(Q(user__display_name__icontains=q) | Q(specialty__name__icontains=q))
    return qs


def doctor_get(*, doctor_id: int) -> DoctorProfile:
    profile = doctor_list().filter(user_id=doctor_id).first()
    if profile is None:
        raise NotFound("No such doctor.", code="doctor_not_found")
    return profile


def device_list(*, user: User) -> QuerySet[Device]:
    return Device.objects.filter(user=user).order_by("id")


def device_get(*, user: User, device_id: int) -> Device:
    device = Device.objects.filter(user=user, pk=device_id).first()
    if device is None:
        raise NotFound("No such device.", code="device_not_found")
    return device


def user_profile_data(user: User) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": user.pk,
        "role": user.role,
        "display_name": user.display_name,
        "phone_number": user.phone_number,
        "created_at": user.created_at.isoformat(),
    }
    patient = getattr(user, "patient_profile", None) if user.role == "patient" else None
    doctor = getattr(user, "doctor_profile", None) if user.role == "doctor" else None
    if patient is not None:
        data["patient_profile"] = {
            "date_of_birth": patient.date_of_birth.isoformat() if patient.date_of_birth else None,
            "sex": patient.sex,
            "emergency_contact_name": patient.emergency_contact_name,
            "emergency_contact_phone": patient.emergency_contact_phone,
        }
    if doctor is not None:
        data["doctor_profile"] = {
            "specialty": doctor.specialty.slug,
            "licence_number": doctor.licence_number,
            "jurisdiction": doctor.jurisdiction,
            "verification_status": doctor.verification_status,
            "bio": doctor.bio,
            "consultation_fee": doctor.consultation_fee,
            "currency": doctor.currency,
            "languages": doctor.languages,
        }
    return data


# --- End-to-end encryption key directory --------------------------------------------------------
def prekey_counts(*, device_ids: list[int]) -> dict[int, dict[str, int]]:
    """Per device: one-time prekeys and one-time Kyber prekeys still held (one query)."""
    one_time = (
        OneTimePreKey.objects.filter(device_id=OuterRef("pk"))
        .order_by()
        .values("device_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    kyber = (
        KyberPreKey.objects.filter(device_id=OuterRef("pk"), last_resort=False)
        .order_by()
        .values("device_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    rows = (
        Device.objects.filter(pk__in=device_ids)
        .annotate(
            one_time=Coalesce(Subquery(one_time, output_field=IntegerField()), 0),
            kyber=Coalesce(Subquery(kyber, output_field=IntegerField()), 0),
        )
        .values_list("pk", "one_time", "kyber")
    )
    return {pk: {"one_time_prekeys": int(a), "kyber_prekeys": int(b)} for pk, a, b in rows}


def prekey_count_get(*, user: User, device_id: int) -> dict[str, int]:
    """``GET keys/count``: the caller's own device only."""
    device = device_get(user=user, device_id=device_id)
    return prekey_counts(device_ids=[device.pk])[device.pk]
