"""Account actions: registration, profile updates, doctor verification, devices, deletion, export
(the end-to-end encryption key directory is ``accounts.keys``).

Every write of the accounts domain goes through one function here; REST views, socket
handlers, the admin and management commands all call these.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit import actions as audited
from audit import services as audit
from audit.client import Client
from audit.models import AuditEntry
from core.errors import ApplicationError
from core.realtime import publish_on_commit, user_group
from core.registry import Registry

from . import firebase, selectors
from . import validators as v
from .actors import Actor, acting_user, require_permission
from .models import (
    Device,
    DoctorProfile,
    PatientProfile,
    Specialty,
    User,
)

logger = logging.getLogger("healthchat.accounts")

# Other apps contribute to export and erasure (registered in their AppConfig.ready).
ExportSection = Callable[[User], Any]
Eraser = Callable[[User], None]
export_sections: Registry[ExportSection] = Registry("data export section")
erasers: Registry[Eraser] = Registry("eraser")


def register_export_section(name: str, fn: ExportSection) -> None:
    export_sections.register(name, fn)


def export_section_names() -> list[str]:
    """The sections other apps added to the export, in the order they appear."""
    return export_sections.names()


def register_eraser(name: str, fn: Eraser) -> None:
    erasers.register(name, fn)


# --- Registration -------------------------------------------------------------------------
PATIENT_FIELDS = {"date_of_birth", "sex", "emergency_contact_name", "emergency_contact_phone"}
DOCTOR_FIELDS = {
    "specialty",
    "licence_number",
    "jurisdiction",
    "consultation_fee",
    "currency",
    "bio",
    "languages",
}


def _clean_patient_fields(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "date_of_birth" in data:
        out["date_of_birth"] = v.validate_date_of_birth(data["date_of_birth"])
    if "sex" in data:
        if data["sex"] not in v.SEXES:
            raise ApplicationError(
                "invalid_sex", "Unknown value for sex.", fields={"sex": ["invalid_choice"]}
            )
        out["sex"] = data["sex"]
    if "emergency_contact_name" in data:
        out["emergency_contact_name"] = v.validate_short_text(
            data["emergency_contact_name"], field="emergency_contact_name", max_length=100, required=False
        )
    if data.get("emergency_contact_phone"):
        out["emergency_contact_phone"] = v.validate_phone_number(
            data["emergency_contact_phone"], field="emergency_contact_phone"
        )
    elif "emergency_contact_phone" in data:
        out["emergency_contact_phone"] = ""
    return out


def _clean_doctor_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if creating:
        missing = [f for f in ("specialty", "licence_number", "jurisdiction") if not data.get(f)]
        if missing:
            raise ApplicationError(
                "missing_fields",
                "A doctor must give specialty, licence_number and jurisdiction.",
                fields={f: ["required"] for f in missing},
            )
    if "specialty" in data:
        specialty = Specialty.objects.filter(slug=data["specialty"]).first()
        if specialty is None:
            raise ApplicationError(
                "unknown_specialty", "Unknown specialty.", fields={"specialty": ["does_not_exist"]}
            )
        out["specialty"] = specialty
    for name, limit in (("licence_number", 64), ("jurisdiction", 64)):
        if name in data:
            out[name] = v.validate_short_text(str(data[name]), field=name, max_length=limit)
    if "bio" in data:
        out["bio"] = v.validate_short_text(data["bio"], field="bio", max_length=2000, required=False)
    if "consultation_fee" in data:
        out["consultation_fee"] = v.validate_fee(data["consultation_fee"])
    if "currency" in data:
        out["currency"] = v.validate_currency(data["currency"])
    if "languages" in data:
        out["languages"] = v.validate_languages(data["languages"])
    return out


def _check_role_fields(role: str, data: dict[str, Any]) -> None:
    """Profile fields of the other role are refused, not silently dropped."""
    foreign = set(data) & (DOCTOR_FIELDS if role == User.Role.PATIENT else PATIENT_FIELDS)
    if foreign:
        raise ApplicationError(
            "invalid",
            f"These fields do not apply to a {role}.",
            fields={
                f: [{"code": "not_for_role", "message": f"Not a {role} field."}] for f in sorted(foreign)
            },
        )


def _registered(*, uid: str, role: str) -> User | None:
    """The account already registered for ``uid`` (same role), or None."""
    existing = selectors.user_get_by_firebase_uid(uid=uid)
    if existing is not None and existing.role != role:
        raise ApplicationError(
            "role_mismatch", "This account is already registered with another role.", status=409
        )
    return existing


class _PhoneTaken(Exception):
    pass


def user_register(
    *, token: firebase.VerifiedToken, role: str, display_name: str, profile: dict[str, Any]
) -> tuple[User, bool]:
    """Register the holder of ``token``; idempotent. Returns ``(user, created)``.

    The phone number comes from the verified token, never from the request body.
    """
    role = v.validate_role(role)
    display_name = v.validate_display_name(display_name)
    existing = _registered(uid=token.uid, role=role)
    if existing is not None:
        return existing, False
    if not token.phone_number:
        raise ApplicationError(
            "phone_number_required", "Sign in with a phone number before registering.", status=400
        )
    phone = v.validate_verified_phone_number(token.phone_number)
    _check_role_fields(role, profile)
    patient_fields = _clean_patient_fields(profile) if role == User.Role.PATIENT else {}
    doctor_fields = _clean_doctor_fields(profile, creating=True) if role == User.Role.DOCTOR else {}
    try:
        with transaction.atomic():
            if User.objects.filter(phone_number=phone).exists():
                raise _PhoneTaken
            user = User(phone_number=phone, firebase_uid=token.uid, role=role, display_name=display_name)
            user.set_unusable_password()
            user.save()
            if role == User.Role.PATIENT:
                PatientProfile.objects.create(user=user, **patient_fields)
            else:
                DoctorProfile.objects.create(user=user, **doctor_fields)
    except (IntegrityError, _PhoneTaken) as exc:
        # A concurrent registration of the same token may have won the race (committed before
        # our phone check, or while our insert waited on the unique index): return its user.
        winner = _registered(uid=token.uid, role=role)
        if winner is not None:
            return winner, False
        if isinstance(exc, _PhoneTaken) or "phone_number" in str(exc):
            raise ApplicationError(
                "phone_number_in_use", "This phone number belongs to another account.", status=409
            ) from exc
        if "licence" in str(exc):
            raise ApplicationError(
                "licence_in_use", "This licence number is already registered.", status=409
            ) from exc
        raise ApplicationError(
            "conflict", "Registration conflicts with an existing account.", status=409
        ) from exc
    logger.info("user registered id=%s role=%s", user.pk, role)
    fresh = selectors.user_get_by_firebase_uid(uid=token.uid)
    assert fresh is not None
    return fresh, True


CREDENTIAL_FIELDS = ("licence_number", "jurisdiction", "specialty")


def _credentials_changed(*, user: User, fields: dict[str, Any]) -> bool:
    """True when a doctor's credentials differ from what staff verified (not merely sent again)."""
    sent = {name: getattr(fields[name], "pk", fields[name]) for name in CREDENTIAL_FIELDS if name in fields}
    if not sent:
        return False
    current = DoctorProfile.objects.select_for_update().filter(user=user).values(*CREDENTIAL_FIELDS).get()
    return any(current[name] != value for name, value in sent.items())


def user_update(*, user: User, data: dict[str, Any]) -> User:
    """PATCH me: display name and own profile fields. Role and verification never change here."""
    forbidden = {"role", "verification_status", "phone_number", "firebase_uid", "is_staff", "verified_at"}
    if forbidden & set(data):
        raise ApplicationError(
            "read_only_field",
            "These fields cannot be changed.",
            status=400,
            fields={f: ["read_only"] for f in sorted(forbidden & set(data))},
        )
    if user.role in (User.Role.PATIENT, User.Role.DOCTOR):
        _check_role_fields(str(user.role), {k: data[k] for k in PATIENT_FIELDS | DOCTOR_FIELDS if k in data})
    with transaction.atomic():
        if "display_name" in data:
            user.display_name = v.validate_display_name(data["display_name"])
            user.save(update_fields=["display_name", "updated_at"])
        if user.role == User.Role.PATIENT:
            fields = _clean_patient_fields({k: data[k] for k in PATIENT_FIELDS if k in data})
            if fields:
                PatientProfile.objects.filter(user=user).update(**fields)
        elif user.role == User.Role.DOCTOR:
            fields = _clean_doctor_fields({k: data[k] for k in DOCTOR_FIELDS if k in data}, creating=False)
            if _credentials_changed(user=user, fields=fields):
                # Staff must verify again.
                fields["verification_status"] = DoctorProfile.Verification.PENDING
                fields["verified_at"] = None
                fields["verified_by"] = None
            if fields:
                try:
                    with transaction.atomic():
                        DoctorProfile.objects.filter(user=user).update(**fields)
                except IntegrityError as exc:
                    raise ApplicationError(
                        "licence_in_use", "This licence number is already registered.", status=409
                    ) from exc
    fresh = selectors.user_get_by_firebase_uid(uid=user.firebase_uid or "")
    return fresh or user


def doctor_set_verification(*, doctor: User, status: str, actor: Actor) -> DoctorProfile:
    """Staff decision on a doctor's credentials (admin action and ``verify_doctor``); needs
    ``accounts.verify_doctor``."""
    require_permission(actor, "accounts.verify_doctor")
    if status not in (DoctorProfile.Verification.VERIFIED, DoctorProfile.Verification.REJECTED):
        raise ApplicationError("invalid_status", "Status must be verified or rejected.")
    with transaction.atomic():
        profile = DoctorProfile.objects.select_for_update().filter(user=doctor).first()
        if profile is None:
            raise ApplicationError("not_a_doctor", "This user is not a doctor.", status=404)
        profile.verification_status = status
        profile.verified_at = timezone.now()
        profile.verified_by = acting_user(actor)
        profile.save(update_fields=["verification_status", "verified_at", "verified_by"])
    logger.info("doctor %s verification=%s", doctor.pk, status)
    return profile


# --- Devices ------------------------------------------------------------------------------
def device_register(
    *,
    user: User,
    platform: str,
    fcm_token: str | None = None,
    installation_id: str | None = None,
    app_version: str = "",
    client: Client | None = None,
) -> tuple[Device, bool]:
    """One row per device of an account: re-registration (same installation id or token)
    updates it.

    An installation id is scoped per account: a phone signed in to several accounts in turn has
    one row per account. The latest registration takes the phone's push address: any other row
    with this installation id or this FCM token is ``superseded`` (token cleared, no pushes until
    it registers again); nothing else of it changes, and for another account's row the move is
    written to the audit log. A claim never deletes a device, its keys or its ciphertexts."""
    platform = v.validate_platform(platform)
    fcm_token = (fcm_token or "").strip() or None
    installation_id = (installation_id or "").strip() or None
    if fcm_token is None and installation_id is None:
        raise ApplicationError(
            "device_identifier_required",
            "Give an fcm_token or an installation_id.",
            fields={"fcm_token": ["required"]},
        )
    if fcm_token is not None and len(fcm_token) > 4096:
        raise ApplicationError("invalid_fcm_token", "fcm_token is too long.")
    if installation_id is not None and len(installation_id) > 200:
        raise ApplicationError("invalid_installation_id", "installation_id is too long.")
    app_version = v.validate_short_text(app_version, field="app_version", max_length=32, required=False)
    try:
        with transaction.atomic():
            return _device_register(
                user=user,
                platform=platform,
                fcm_token=fcm_token,
                installation_id=installation_id,
                app_version=app_version,
                client=client,
            )
    except IntegrityError as exc:  # a concurrent registration of the same phone won the race
        raise ApplicationError(
            "device_conflict", "This device was registered at the same moment; try again.", status=409
        ) from exc


def _device_register(
    *,
    user: User,
    platform: str,
    fcm_token: str | None,
    installation_id: str | None,
    app_version: str,
    client: Client | None,
) -> tuple[Device, bool]:
    device = None
    if installation_id is not None:
        device = Device.objects.select_for_update().filter(user=user, installation_id=installation_id).first()
    if device is None and fcm_token is not None:
        device = Device.objects.select_for_update().filter(user=user, fcm_token=fcm_token).first()
    claimed = Q(pk__in=[])
    if installation_id is not None:
        claimed |= Q(installation_id=installation_id, superseded_at__isnull=True)
    if fcm_token is not None:
        claimed |= Q(fcm_token=fcm_token)
    others = Device.objects.select_for_update().filter(claimed).order_by("pk")
    if device is not None:
        others = others.exclude(pk=device.pk)
    now = timezone.now()
    moved: list[AuditEntry] = []
    for other in others:
        # This phone now belongs to ``user``: the other row keeps everything but its push address.
        Device.objects.filter(pk=other.pk).update(fcm_token=None, superseded_at=other.superseded_at or now)
        if other.user_id != user.pk:
            moved.append(
                audit.entry(
                    audited.DEVICE_SUPERSEDED,
                    actor=user,
                    object_type="device",
                    object_id=other.pk,
                    code="installation_id"
                    if installation_id is not None and other.installation_id == installation_id
                    else "fcm_token",
                    client=client,
                )
            )
    audit.record_many(moved)
    created = device is None
    if device is None:
        device = Device(user=user)
    device.platform = platform
    device.fcm_token = fcm_token
    device.installation_id = installation_id or device.installation_id
    device.app_version = app_version
    device.superseded_at = None
    device.save()
    if moved:
        logger.info(
            "device registration of user %s superseded %d other account device(s)", user.pk, len(moved)
        )
    return device, created


def device_delete(*, user: User, device_id: int) -> None:
    device = selectors.device_get(user=user, device_id=device_id)
    device.delete()


# --- Session safety -----------------------------------------------------------------------
# Close codes of the socket (docs/protocol.md "Close codes"): 4403 = do not reconnect (account
# gone or deactivated), 4401 = sign in again (tokens revoked).
CLOSE_FORBIDDEN = 4403
CLOSE_UNAUTHORIZED = 4401


def terminate_sessions_on_commit(*, user_id: int, code: int, error: tuple[str, str] | None = None) -> None:
    """Close every socket of ``user_id`` on every server process, once the transaction commits.

    The consumer (``session_terminate``) sends ``error`` (code, message) first, when given.
    """
    event: dict[str, Any] = {"type": "session.terminate", "code": code}
    if error is not None:
        event["error"] = {"code": error[0], "message": error[1]}
    publish_on_commit(user_group(user_id), event)


def user_set_active(*, user: User, active: bool, actor: Actor) -> User:
    """Deactivate (or reactivate) an account; deactivation closes the user's sockets at once.

    The one way to change ``is_active`` (admin form and action, ``deactivate_user``); needs
    ``accounts.deactivate_account``. A deactivated user's tokens are refused by REST and the
    socket (``user_inactive``); deleted accounts stay deleted.
    """
    require_permission(actor, "accounts.deactivate_account")
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        if active and locked.deleted_at is not None:
            raise ApplicationError("user_deleted", "A deleted account cannot be reactivated.", status=409)
        if actor.pk == locked.pk and not active:
            raise ApplicationError("cannot_deactivate_self", "You cannot deactivate your own account.")
        changed = locked.is_active != active
        if changed:
            locked.is_active = active
            locked.save(update_fields=["is_active", "updated_at"])
        if not active:
            # Also when it was already inactive: a socket opened before is closed all the same.
            terminate_sessions_on_commit(
                user_id=locked.pk,
                code=CLOSE_FORBIDDEN,
                error=("user_inactive", "This account is deactivated."),
            )
    user.is_active = active
    if changed:
        logger.info(
            "user %s %s by %s",
            user.pk,
            "reactivated" if active else "deactivated",
            actor.pk or "operator",
        )
    return user


def revoke_sessions(*, user: User, actor: Actor) -> None:
    """Sign the user out everywhere: revoke their Firebase refresh tokens, close their sockets.
    The user themselves may; anyone else needs ``accounts.revoke_sessions``.

    Firebase stops issuing new ID tokens at once. ID tokens already issued (valid up to an hour)
    are refused by REST and the socket only with ``FIREBASE_CHECK_REVOKED`` on (a Firebase lookup
    per token check); with it off they work until they expire.
    """
    if actor.pk is None or actor.pk != user.pk:
        require_permission(actor, "accounts.revoke_sessions")
    if user.firebase_uid:
        firebase.revoke_refresh_tokens(user.firebase_uid)
    with transaction.atomic():
        terminate_sessions_on_commit(
            user_id=user.pk,
            code=CLOSE_UNAUTHORIZED,
            error=("token_revoked", "You were signed out; sign in again."),
        )
    logger.info("sessions of user %s revoked by %s", user.pk, actor.pk or "operator")


# --- Deletion and export ------------------------------------------------------------------
def user_delete(*, user: User, actor: Actor) -> None:
    """Erase an account: Firebase user, tokens, devices, personal data; close sockets at once.

    The account holder may (``DELETE /me``); anyone else needs ``accounts.erase_account``.
    Messages the user sent stay in their conversations as from a deleted user, content erased;
    the user leaves every group as leaving does (erasers registered by the other apps, run in
    this transaction).
    """
    if actor.pk is None or actor.pk != user.pk:
        require_permission(actor, "accounts.erase_account")
    if user.deleted_at is not None:
        return
    if user.firebase_uid:
        firebase.revoke_refresh_tokens(user.firebase_uid)
        firebase.delete_user(user.firebase_uid)
    with transaction.atomic():
        # NO KEY UPDATE: it still orders concurrent erasures, but does not block the foreign-key
        # checks of a message the user is sending right now, which holds its conversation's row
        # lock that the groups' erasure step (leaving) then waits for: no deadlock.
        locked = User.objects.select_for_update(no_key=True).get(pk=user.pk)
        for eraser in erasers:
            eraser(locked)
        Device.objects.filter(user=locked).delete()
        PatientProfile.objects.filter(user=locked).delete()
        DoctorProfile.objects.filter(user=locked).delete()
        locked.phone_number = None
        locked.firebase_uid = None
        locked.display_name = ""
        locked.is_active = False
        locked.is_staff = False
        locked.is_superuser = False
        locked.deleted_at = timezone.now()
        locked.set_unusable_password()
        locked.save()
        locked.groups.clear()
        locked.user_permissions.clear()
        _pseudonymise_admin_log(locked)
        terminate_sessions_on_commit(user_id=locked.pk, code=CLOSE_FORBIDDEN)
    logger.info("user %s deleted by %s", user.pk, "self" if actor.pk == user.pk else actor.pk or "operator")


def _pseudonymise_admin_log(user: User) -> None:
    """The admin's history names a changed user by ``str(user)`` (the display name): keep the
    entries (who changed what, when), but under the erased user's id."""
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(User), object_id=str(user.pk)
    ).update(object_repr=str(user))


def user_export(*, user: User) -> dict[str, Any]:
    """Everything we hold about ``user``, machine-readable."""
    data: dict[str, Any] = {
        "format": "healthchat-export/1",
        "exported_at": timezone.now().isoformat(),
        "user": selectors.user_profile_data(user),
        "devices": [
            {
                "id": d.pk,
                "platform": d.platform,
                "installation_id": d.installation_id,
                "has_fcm_token": d.fcm_token is not None,
                "app_version": d.app_version,
                "created_at": d.created_at.isoformat(),
            }
            for d in selectors.device_list(user=user)
        ],
    }
    for name, section in export_sections.items():
        data[name] = section(user)
    return data


# --- The directory's rating (set by the ratings app) ----------------------------------------
def doctor_rating_set(*, doctor_id: int, count: int, average: Decimal | None) -> None:
    """The doctor's rating as the directory shows it (``ratings.services`` computes it, in the
    transaction of the review that changed it, holding the doctor's profile row)."""
    DoctorProfile.objects.filter(user_id=doctor_id).update(rating_count=count, rating_average=average)


# --- Specialties (the managed list doctors register with; public and cached) ----------------
def specialties_changed() -> None:
    """After the current transaction commits, serve the specialty list afresh (a new cache
    version, see ``selectors.specialty_list``); nothing if it rolls back."""
    from django.core.cache import cache

    def new_version() -> None:
        cache.set(selectors.SPECIALTIES_VERSION_KEY, time.time_ns(), timeout=None)

    transaction.on_commit(new_version)


def specialty_save(*, specialty: Specialty) -> Specialty:
    """Create or change a specialty (staff, in the admin)."""
    with transaction.atomic():
        specialty.save()
        specialties_changed()
    return specialty


def specialty_delete(*, specialty: Specialty) -> None:
    """Delete a specialty no doctor uses (the foreign key protects used ones)."""
    with transaction.atomic():
        specialty.delete()
        specialties_changed()


def seed_specialties(specialties: list[tuple[str, str]]) -> int:
    """Create the missing ones of ``specialties`` (slug, name); returns how many."""
    created = 0
    with transaction.atomic():
        for slug, name in specialties:
            _, was_created = Specialty.objects.get_or_create(slug=slug, defaults={"name": name})
            created += int(was_created)
        if created:
            specialties_changed()
    return created
