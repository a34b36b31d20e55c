"""Account actions: registration, profile updates, doctor verification, devices, deletion, export.

Every write of the accounts domain goes through one function here; REST views, socket
handlers, the admin and management commands all call these.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from audit import actions as audited
from audit import services as audit
from audit.client import Client
from audit.models import AuditEntry
from core.errors import ApplicationError, NotFound, PermissionDenied
from core.realtime import publish_on_commit, user_group

from . import firebase, prekey_budget, selectors, xeddsa
from . import validators as v
from .actors import Actor, acting_user, require_permission
from .models import (
    Device,
    DeviceIdentity,
    DoctorProfile,
    KyberPreKey,
    OneTimePreKey,
    PatientProfile,
    SignedPreKey,
    Specialty,
    User,
)

logger = logging.getLogger("healthchat.accounts")

# Other apps contribute to export and erasure (registered in their AppConfig.ready).
ExportSection = Callable[[User], Any]
Eraser = Callable[[User], None]
_export_sections: dict[str, ExportSection] = {}
_erasers: dict[str, Eraser] = {}


def register_export_section(name: str, fn: ExportSection) -> None:
    _export_sections[name] = fn


def export_section_names() -> list[str]:
    """The sections other apps added to the export, in the order they appear."""
    return list(_export_sections)


def register_eraser(name: str, fn: Eraser) -> None:
    _erasers[name] = fn


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
        for eraser in _erasers.values():
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
    for name, section in _export_sections.items():
        data[name] = section(user)
    return data


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


# --- End-to-end encryption: the key directory ---------------------------------------------
# Who may fetch whose prekey bundles, and how a device's key change reaches the people who talk
# to its owner, is decided by the messaging app (conversations and contact rules; the replayable
# event log), registered in its AppConfig.ready.
KeyAccessRule = Callable[[User, User], bool]
# ``fn(user=, device_id=, kind=)``, called inside the upload's transaction; ``kind`` is
# ``identity.changed`` (a new identity key) or ``device.added`` (a device's first keys).
DeviceKeysListener = Callable[..., None]
_key_access_rules: list[KeyAccessRule] = []
_device_keys_listeners: list[DeviceKeysListener] = []


def register_key_access_rule(fn: KeyAccessRule) -> None:
    """``fn(requester, owner)`` is True when ``requester`` may fetch ``owner``'s bundles."""
    if fn not in _key_access_rules:
        _key_access_rules.append(fn)


def register_device_keys_listener(fn: DeviceKeysListener) -> None:
    """``fn`` records (and announces) a device's new identity key or first keys."""
    if fn not in _device_keys_listeners:
        _device_keys_listeners.append(fn)


@dataclass(frozen=True)
class _SignedKey:
    key_id: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True)
class _OneTimeKey:
    key_id: int
    public_key: bytes


def _signed(data: Any, *, field: str, kyber: bool, identity_key: bytes) -> _SignedKey:
    if not isinstance(data, dict) or set(data) - {"id", "public_key", "signature"}:
        raise ApplicationError(
            "invalid_key",
            f"{field} must be {{id, public_key, signature}}.",
            status=422,
            fields={field: ["invalid"]},
        )
    key_id = v.validate_key_id(data.get("id"), field=f"{field}.id")
    validate = v.validate_kyber_public_key if kyber else v.validate_ec_public_key
    public_key = validate(data.get("public_key"), field=f"{field}.public_key")
    signature = v.validate_signature(data.get("signature"), field=f"{field}.signature")
    if not xeddsa.verify(identity_key, public_key, signature):
        raise ApplicationError(
            "invalid_signature",
            f"{field}.signature is not the identity key's signature of this public key.",
            status=422,
            fields={f"{field}.signature": ["invalid"]},
        )
    return _SignedKey(key_id, public_key, signature)


def _key_list(items: Any, *, field: str) -> list[Any]:
    if items is None:
        return []
    limit = int(settings.HEALTHCHAT_PREKEY_MAX_UPLOAD)
    if not isinstance(items, list) or len(items) > limit:
        raise ApplicationError(
            "invalid_key",
            f"{field} must be a list of at most {limit} keys.",
            status=422,
            fields={field: ["invalid"]},
        )
    ids = [item.get("id") if isinstance(item, dict) else None for item in items]
    if len(set(map(repr, ids))) != len(ids):
        raise ApplicationError(
            "invalid_key", f"{field} has duplicate ids.", status=422, fields={field: ["duplicate"]}
        )
    return items


def _one_time(data: Any, *, field: str) -> _OneTimeKey:
    if not isinstance(data, dict) or set(data) - {"id", "public_key"}:
        raise ApplicationError(
            "invalid_key", f"{field} must be {{id, public_key}}.", status=422, fields={field: ["invalid"]}
        )
    return _OneTimeKey(
        v.validate_key_id(data.get("id"), field=f"{field}.id"),
        v.validate_ec_public_key(data.get("public_key"), field=f"{field}.public_key"),
    )


def _prekey_conflict(field: str) -> ApplicationError:
    return ApplicationError(
        "prekey_conflict",
        f"A {field} with this id but another key is already uploaded; use new ids.",
        status=409,
        fields={field: ["conflict"]},
    )


def _add_keys(model: Any, device: Device, keys: list[Any], *, field: str) -> None:
    """Add keys, skipping ones already held (same id, same key): uploads are idempotent."""
    if not keys:
        return
    held = {
        int(key_id): bytes(public_key)
        for key_id, public_key in model.objects.filter(
            device=device, key_id__in=[k.key_id for k in keys]
        ).values_list("key_id", "public_key")
    }
    for key in keys:
        if key.key_id in held and held[key.key_id] != key.public_key:
            raise _prekey_conflict(field)
    fresh = [k for k in keys if k.key_id not in held]
    stock = model.objects.filter(device=device)
    if model is KyberPreKey:
        stock = stock.filter(last_resort=False)
    if stock.count() + len(fresh) > int(settings.HEALTHCHAT_PREKEY_MAX_STOCK):
        raise ApplicationError(
            "too_many_prekeys",
            f"A device may hold at most {settings.HEALTHCHAT_PREKEY_MAX_STOCK} {field}.",
            status=422,
        )
    if model is KyberPreKey:
        KyberPreKey.objects.bulk_create(
            [
                KyberPreKey(device=device, key_id=k.key_id, public_key=k.public_key, signature=k.signature)
                for k in fresh
            ]
        )
    else:
        OneTimePreKey.objects.bulk_create(
            [OneTimePreKey(device=device, key_id=k.key_id, public_key=k.public_key) for k in fresh]
        )


def device_keys_put(
    *,
    user: User,
    device_id: int,
    registration_id: int,
    identity_key: str,
    signed_prekey: dict[str, Any] | None = None,
    one_time_prekeys: list[dict[str, Any]] | None = None,
    kyber_prekeys: list[dict[str, Any]] | None = None,
    last_resort_kyber_prekey: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Upload or refill the public keys of one of the caller's own devices (idempotent).

    Every signed key (signed prekey, Kyber prekeys) must carry the identity key's XEdDSA
    signature (422 ``invalid_signature``). A device's first upload, and an upload with a new
    identity key (a reinstall), must include the signed prekey and the last-resort Kyber
    prekey; a new identity key drops every key the device held. The first upload
    (``device.added``) and a new identity key (``identity.changed``) are recorded by the
    registered listeners (messaging: in the event log of each of the user's conversations, so
    ``sync`` replays them). Lists are added to what the server holds.
    """
    registration = v.validate_registration_id(registration_id)
    identity = v.validate_ec_public_key(identity_key, field="identity_key")
    signed = (
        _signed(signed_prekey, field="signed_prekey", kyber=False, identity_key=identity)
        if (signed_prekey is not None)
        else None
    )
    last_resort = (
        _signed(last_resort_kyber_prekey, field="last_resort_kyber_prekey", kyber=True, identity_key=identity)
        if last_resort_kyber_prekey is not None
        else None
    )
    one_time = [
        _one_time(item, field=f"one_time_prekeys[{i}]")
        for i, item in enumerate(_key_list(one_time_prekeys, field="one_time_prekeys"))
    ]
    kyber = [
        _signed(item, field=f"kyber_prekeys[{i}]", kyber=True, identity_key=identity)
        for i, item in enumerate(_key_list(kyber_prekeys, field="kyber_prekeys"))
    ]
    if last_resort is not None and any(k.key_id == last_resort.key_id for k in kyber):
        raise _prekey_conflict("last_resort_kyber_prekey")
    changed = False
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(pk=device_id, user=user).first()
        if device is None:
            raise ApplicationError("device_not_found", "No such device of yours.", status=404)
        current = DeviceIdentity.objects.filter(device=device).first()
        if current is not None and bytes(current.identity_key) != identity:
            # A new identity (reinstall, or keys reset): the old prekeys belong to the old one.
            changed = True
            SignedPreKey.objects.filter(device=device).delete()
            OneTimePreKey.objects.filter(device=device).delete()
            KyberPreKey.objects.filter(device=device).delete()
        if (current is None or changed) and (signed is None or last_resort is None):
            raise ApplicationError(
                "keys_incomplete",
                "A device's first upload (and one with a new identity key) needs signed_prekey and "
                "last_resort_kyber_prekey.",
                status=422,
            )
        DeviceIdentity.objects.update_or_create(
            device=device, defaults={"registration_id": registration, "identity_key": identity}
        )
        if signed is not None:
            SignedPreKey.objects.update_or_create(
                device=device,
                defaults={
                    "key_id": signed.key_id,
                    "public_key": signed.public_key,
                    "signature": signed.signature,
                },
            )
        if last_resort is not None:
            existing = KyberPreKey.objects.filter(device=device, last_resort=True).first()
            if existing is None or (existing.key_id, bytes(existing.public_key)) != (
                last_resort.key_id,
                last_resort.public_key,
            ):
                KyberPreKey.objects.filter(device=device, last_resort=True).delete()
                if KyberPreKey.objects.filter(device=device, key_id=last_resort.key_id).exists():
                    raise _prekey_conflict("last_resort_kyber_prekey")
                KyberPreKey.objects.create(
                    device=device,
                    key_id=last_resort.key_id,
                    public_key=last_resort.public_key,
                    signature=last_resort.signature,
                    last_resort=True,
                )
        _add_keys(OneTimePreKey, device, one_time, field="one_time_prekeys")
        _add_keys(KyberPreKey, device, kyber, field="kyber_prekeys")
        counts = selectors.prekey_counts(device_ids=[device.pk])[device.pk]
        if changed or current is None:
            kind = "identity.changed" if changed else "device.added"
            for listener in _device_keys_listeners:
                listener(user=user, device_id=device.pk, kind=kind)
    if changed:
        logger.info("device %s of user %s has a new identity key", device_id, user.pk)
    return {"device_id": device_id, **counts, "identity_changed": changed}


def _check_key_access(requester: User, owner_id: int) -> User:
    missing = NotFound("No such user.", code="user_not_found")
    owner = User.objects.filter(pk=owner_id, is_active=True, deleted_at__isnull=True).first()
    if owner is None:
        raise missing
    if owner.pk == requester.pk:
        return owner
    if not any(rule(requester, owner) for rule in _key_access_rules):
        raise PermissionDenied("You may not fetch this user's keys.", code="keys_not_allowed")
    return owner


_TAKE_ONE_TIME_SQL = """
DELETE FROM {table} WHERE id IN (
    SELECT k.id FROM unnest(%s::bigint[]) AS d(id)
    CROSS JOIN LATERAL (
        SELECT id FROM {table} WHERE device_id = d.id {extra}
        ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED
    ) AS k
) RETURNING device_id, key_id, public_key{signature}
"""


def _take_one_per_device(model: Any, device_ids: list[int]) -> dict[int, Any]:
    """Remove and return one one-time key per device, never the same key twice: concurrent
    fetches skip the rows another transaction has locked (PostgreSQL), or retry (others)."""
    kyber = model is KyberPreKey
    if not device_ids:
        return {}
    if connection.vendor == "postgresql":
        sql = _TAKE_ONE_TIME_SQL.format(
            table=model._meta.db_table,
            extra="AND NOT last_resort" if kyber else "",
            signature=", signature" if kyber else "",
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [device_ids])
            rows = cursor.fetchall()
        return {int(row[0]): row[1:] for row in rows}
    taken: dict[int, Any] = {}
    for device_id in device_ids:
        qs = model.objects.filter(device_id=device_id)
        if kyber:
            qs = qs.filter(last_resort=False)
        for _attempt in range(5):
            row = qs.order_by("key_id").first()
            if row is None:
                break
            if model.objects.filter(pk=row.pk).delete()[0]:
                extra = (bytes(row.signature),) if isinstance(row, KyberPreKey) else ()
                taken[device_id] = (row.key_id, bytes(row.public_key), *extra)
                break
    return taken


def _b64(raw: bytes | memoryview) -> str:
    return base64.b64encode(bytes(raw)).decode("ascii")


def key_bundles_take(*, requester: User, user_id: int, device_id: int | None = None) -> dict[str, Any]:
    """One prekey bundle per device of ``user_id`` (or of one device), each consuming exactly one
    one-time prekey and one one-time Kyber prekey when there are any and the requester is within
    its prekey budgets (``prekey_budget``; the owner's own devices are not budgeted); otherwise
    the bundle has ``one_time_prekey: null`` and the last-resort Kyber key. Devices left low get
    ``keys.low``."""
    owner = _check_key_access(requester, user_id)
    identities = list(
        DeviceIdentity.objects.select_related("device__signed_prekey")
        .filter(device__user=owner, device__signed_prekey__isnull=False)
        .order_by("device_id")
    )
    if device_id is not None:
        identities = [i for i in identities if i.device_id == device_id]
        if not identities:
            raise NotFound("No keys for this device.", code="device_not_found")
    ids = [i.device_id for i in identities]
    threshold = int(settings.HEALTHCHAT_PREKEY_LOW_THRESHOLD)
    budgeted = bool(ids) and (
        owner.pk == requester.pk or prekey_budget.grant(requester_id=requester.pk, target_id=owner.pk)
    )
    with transaction.atomic():
        one_time = _take_one_per_device(OneTimePreKey, ids) if budgeted else {}
        kyber = _take_one_per_device(KyberPreKey, ids) if budgeted else {}
        short = [d for d in ids if d not in kyber]
        for row in KyberPreKey.objects.filter(device_id__in=short, last_resort=True):
            kyber[row.device_id] = (row.key_id, bytes(row.public_key), bytes(row.signature), True)
        counts = selectors.prekey_counts(device_ids=ids) if budgeted else {}
        for d, stock in counts.items():
            if min(stock["one_time_prekeys"], stock["kyber_prekeys"]) < threshold:
                frame = {"type": "keys.low", "data": {"device_id": d, **stock, "threshold": threshold}}
                publish_on_commit(
                    user_group(owner.pk), {"type": "client.event", "frame": frame, "device_id": d}
                )
    devices = []
    for identity in identities:
        signed = identity.device.signed_prekey
        otk = one_time.get(identity.device_id)
        kyb = kyber.get(identity.device_id)
        devices.append(
            {
                "device_id": identity.device_id,
                "registration_id": identity.registration_id,
                "identity_key": _b64(identity.identity_key),
                "signed_prekey": {
                    "id": signed.key_id,
                    "public_key": _b64(signed.public_key),
                    "signature": _b64(signed.signature),
                },
                "one_time_prekey": {"id": otk[0], "public_key": _b64(otk[1])} if otk else None,
                "kyber_prekey": {
                    "id": kyb[0],
                    "public_key": _b64(kyb[1]),
                    "signature": _b64(kyb[2]),
                    "last_resort": len(kyb) > 3,
                }
                if kyb
                else None,
            }
        )
    return {"user_id": owner.pk, "devices": devices}
