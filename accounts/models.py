"""Accounts: users, patient and doctor profiles, specialties, devices.

Models are thin: fields, constraints, indexes. Writes go through ``accounts.services``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length

from . import validators as v


class UserManager(BaseUserManager["User"]):
    """Creates staff accounts for ``createsuperuser``; app users come from ``services``."""

    def create_user(self, phone_number: str, password: str | None = None, **extra: Any) -> User:
        user = self.model(phone_number=v.validate_phone_number(phone_number), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, phone_number: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        extra.setdefault("display_name", "Administrator")
        return self.create_user(phone_number, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    class Role(models.TextChoices):
        PATIENT = "patient", "Patient"
        DOCTOR = "doctor", "Doctor"

    phone_number = models.CharField(max_length=16, unique=True, null=True, blank=True)
    firebase_uid = models.CharField(max_length=128, unique=True, null=True, blank=True)
    role = models.CharField(max_length=16, choices=Role.choices, null=True, blank=True)
    display_name = models.CharField(max_length=v.DISPLAY_NAME_MAX, blank=True, default="")
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "phone_number"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        # Staff actions beyond "change" (docs/trust.md "Staff permissions").
        permissions = [
            ("erase_account", "Can erase an account (personal data, devices, Firebase user)"),
            ("deactivate_account", "Can deactivate or reactivate an account"),
            ("revoke_sessions", "Can sign an account out everywhere"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(role__isnull=True) | Q(role__in=v.ROLES), name="user_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(phone_number__isnull=True) | Q(phone_number__regex=v.E164_REGEX),
                name="user_phone_e164",
            ),
            models.CheckConstraint(
                condition=Q(deleted_at__isnull=True)
                | Q(phone_number__isnull=True, firebase_uid__isnull=True, is_active=False),
                name="user_deleted_has_no_identity",
            ),
            models.CheckConstraint(
                condition=Q(deleted_at__isnull=False) | ~Q(display_name=""),
                name="user_display_name_not_blank",
            ),
            models.CheckConstraint(
                condition=Q(firebase_uid__isnull=True) | ~Q(firebase_uid=""),
                name="user_firebase_uid_not_blank",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or f"user {self.pk}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def is_doctor(self) -> bool:
        return self.role == self.Role.DOCTOR

    @property
    def is_patient(self) -> bool:
        return self.role == self.Role.PATIENT


class PatientProfile(models.Model):
    class Sex(models.TextChoices):
        FEMALE = "female", "Female"
        MALE = "male", "Male"
        OTHER = "other", "Other"
        UNDISCLOSED = "undisclosed", "Undisclosed"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="patient_profile"
    )
    date_of_birth = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=16, choices=Sex.choices, default=Sex.UNDISCLOSED)
    emergency_contact_name = models.CharField(max_length=100, blank=True, default="")
    emergency_contact_phone = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(sex__in=v.SEXES), name="patient_sex_valid"),
            models.CheckConstraint(
                condition=Q(emergency_contact_phone="") | Q(emergency_contact_phone__regex=v.E164_REGEX),
                name="patient_emergency_phone_e164",
            ),
        ]

    def __str__(self) -> str:
        return f"patient profile of {self.user_id}"


class Specialty(models.Model):
    """The managed list of medical specialties (edited by staff in the admin)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        verbose_name_plural = "specialties"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=~Q(slug=""), name="specialty_slug_not_blank"),
            models.CheckConstraint(condition=~Q(name=""), name="specialty_name_not_blank"),
        ]

    def __str__(self) -> str:
        return self.name


class DoctorProfile(models.Model):
    class Verification(models.TextChoices):
        PENDING = "pending", "Pending"
        VERIFIED = "verified", "Verified"
        REJECTED = "rejected", "Rejected"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="doctor_profile"
    )
    specialty = models.ForeignKey(Specialty, on_delete=models.PROTECT, related_name="doctors")
    licence_number = models.CharField(max_length=64)
    jurisdiction = models.CharField(max_length=64)
    # The licence's expiry, when staff recorded it at verification (None: not recorded). A doctor
    # whose licence has expired cannot issue prescriptions (records: ``licence_expired``).
    licence_expires_on = models.DateField(null=True, blank=True)
    verification_status = models.CharField(
        max_length=16, choices=Verification.choices, default=Verification.PENDING
    )
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    bio = models.TextField(max_length=2000, blank=True, default="")
    consultation_fee = models.PositiveIntegerField(default=0)
    currency = models.CharField(max_length=3, default="USD")
    languages = models.JSONField(default=list, blank=True)

    class Meta:
        permissions = [
            ("verify_doctor", "Can verify or reject a doctor"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(verification_status__in=v.VERIFICATION_STATUSES), name="doctor_verification_valid"
            ),
            models.CheckConstraint(
                condition=Q(verification_status="pending") | Q(verified_at__isnull=False),
                name="doctor_decision_has_time",
            ),
            models.CheckConstraint(condition=Q(consultation_fee__gte=0), name="doctor_fee_non_negative"),
            models.CheckConstraint(condition=Q(currency__regex=v.CURRENCY_REGEX), name="doctor_currency_iso"),
            models.CheckConstraint(condition=~Q(licence_number=""), name="doctor_licence_not_blank"),
            models.CheckConstraint(condition=~Q(jurisdiction=""), name="doctor_jurisdiction_not_blank"),
            models.UniqueConstraint(fields=["jurisdiction", "licence_number"], name="doctor_licence_unique"),
        ]
        indexes = [models.Index(fields=["verification_status", "specialty"], name="doctor_status_specialty")]

    def __str__(self) -> str:
        return f"doctor profile of {self.user_id}"

    @property
    def is_verified(self) -> bool:
        return self.verification_status == self.Verification.VERIFIED


class Device(models.Model):
    """One installed app instance signed in to one account: push address, end-to-end keys.

    The installation id is scoped per account (a shared phone has one row per account that signed
    in on it). When another account registers the same installation id or FCM token, this row is
    ``superseded``: it loses its FCM token and gets no pushes until its app registers again;
    nothing else of it changes (keys, ciphertexts, history stay)."""

    class Platform(models.TextChoices):
        ANDROID = "android", "Android"
        IOS = "ios", "iOS"
        WEB = "web", "Web"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices")
    installation_id = models.CharField(max_length=200, null=True, blank=True)
    fcm_token = models.CharField(max_length=4096, null=True, blank=True)
    platform = models.CharField(max_length=16, choices=Platform.choices, default=Platform.ANDROID)
    app_version = models.CharField(max_length=32, blank=True, default="")
    # Set when another account registered this installation id or FCM token (the phone signed in
    # to that account): no pushes until this device registers again.
    superseded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(platform__in=v.PLATFORMS), name="device_platform_valid"),
            models.CheckConstraint(
                condition=Q(installation_id__isnull=False)
                | Q(fcm_token__isnull=False)
                | Q(superseded_at__isnull=False),
                name="device_has_identifier",
            ),
            models.UniqueConstraint(fields=["fcm_token"], name="device_fcm_token_unique"),
            models.UniqueConstraint(
                fields=["user", "installation_id"], name="device_installation_unique_per_user"
            ),
            # One account at a time receives an installation's pushes.
            models.UniqueConstraint(
                fields=["installation_id"],
                condition=Q(superseded_at__isnull=True),
                name="device_installation_active_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"device {self.pk} of {self.user_id}"


# --- End-to-end encryption: the key directory (public keys only, opaque to the server) --------
# Lengths as libsignal serialises them: Curve25519 public keys are a type byte (0x05) and 32
# bytes; XEdDSA signatures 64 bytes; Kyber-1024 public keys a type byte (0x08) and 1568 bytes.
models.BinaryField.register_lookup(Length)


class DeviceIdentity(models.Model):
    """A device's long-term identity key and registration id (Signal's ``IdentityKey``)."""

    device = models.OneToOneField(Device, on_delete=models.CASCADE, primary_key=True, related_name="identity")
    registration_id = models.PositiveIntegerField()
    identity_key = models.BinaryField(max_length=v.EC_PUBLIC_KEY_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "device identities"
        constraints = [
            models.CheckConstraint(
                condition=Q(registration_id__gte=1, registration_id__lte=v.REGISTRATION_ID_MAX),
                name="identity_registration_id_range",
            ),
            models.CheckConstraint(
                condition=Q(identity_key__length=v.EC_PUBLIC_KEY_LENGTH), name="identity_key_length"
            ),
        ]

    def __str__(self) -> str:
        return f"identity of device {self.device_id}"


class SignedPreKey(models.Model):
    """The device's current signed prekey (one per device; uploading a new one replaces it)."""

    device = models.OneToOneField(Device, on_delete=models.CASCADE, related_name="signed_prekey")
    key_id = models.PositiveIntegerField()
    public_key = models.BinaryField(max_length=v.EC_PUBLIC_KEY_LENGTH)
    signature = models.BinaryField(max_length=v.SIGNATURE_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(key_id__lte=v.PREKEY_ID_MAX), name="signed_prekey_id_range"),
            models.CheckConstraint(
                condition=Q(public_key__length=v.EC_PUBLIC_KEY_LENGTH), name="signed_prekey_key_length"
            ),
            models.CheckConstraint(
                condition=Q(signature__length=v.SIGNATURE_LENGTH), name="signed_prekey_signature_length"
            ),
        ]

    def __str__(self) -> str:
        return f"signed prekey {self.key_id} of device {self.device_id}"


class OneTimePreKey(models.Model):
    """A one-time Curve25519 prekey: handed out in exactly one bundle, then gone."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="one_time_prekeys")
    key_id = models.PositiveIntegerField()
    public_key = models.BinaryField(max_length=v.EC_PUBLIC_KEY_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "key_id"], name="one_time_prekey_unique"),
            models.CheckConstraint(condition=Q(key_id__lte=v.PREKEY_ID_MAX), name="one_time_prekey_id_range"),
            models.CheckConstraint(
                condition=Q(public_key__length=v.EC_PUBLIC_KEY_LENGTH), name="one_time_prekey_key_length"
            ),
        ]

    def __str__(self) -> str:
        return f"one-time prekey {self.key_id} of device {self.device_id}"


class KyberPreKey(models.Model):
    """A signed Kyber (post-quantum) prekey: one-time ones are handed out once; the device's one
    last-resort key is handed out whenever the one-time ones have run out, and stays."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="kyber_prekeys")
    key_id = models.PositiveIntegerField()
    public_key = models.BinaryField(max_length=v.KYBER_PUBLIC_KEY_LENGTH)
    signature = models.BinaryField(max_length=v.SIGNATURE_LENGTH)
    last_resort = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "key_id"], name="kyber_prekey_unique"),
            models.UniqueConstraint(
                fields=["device"], condition=Q(last_resort=True), name="kyber_prekey_one_last_resort"
            ),
            models.CheckConstraint(condition=Q(key_id__lte=v.PREKEY_ID_MAX), name="kyber_prekey_id_range"),
            models.CheckConstraint(
                condition=Q(public_key__length=v.KYBER_PUBLIC_KEY_LENGTH), name="kyber_prekey_key_length"
            ),
            models.CheckConstraint(
                condition=Q(signature__length=v.SIGNATURE_LENGTH), name="kyber_prekey_signature_length"
            ),
        ]
        indexes = [
            models.Index(
                fields=["device", "key_id"], name="kyber_prekey_one_time", condition=Q(last_resort=False)
            ),
        ]

    def __str__(self) -> str:
        return f"kyber prekey {self.key_id} of device {self.device_id}"
