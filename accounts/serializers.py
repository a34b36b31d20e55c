"""Input and output shapes of the accounts API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import QuerySerializer, StrictSerializer, drf

from . import validators as v
from .models import Device, DoctorProfile, Specialty, User


class RegisterInputSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=v.ROLES)
    display_name = serializers.CharField(max_length=200, validators=[drf(v.validate_display_name)])
    # patient
    date_of_birth = serializers.DateField(required=False, allow_null=True)
    sex = serializers.ChoiceField(choices=v.SEXES, required=False)
    emergency_contact_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    emergency_contact_phone = serializers.CharField(required=False, allow_blank=True, max_length=32)
    # doctor
    specialty = serializers.SlugField(required=False)
    licence_number = serializers.CharField(required=False, max_length=64)
    jurisdiction = serializers.CharField(required=False, max_length=64)
    consultation_fee = serializers.IntegerField(required=False, validators=[drf(v.validate_fee)])
    currency = serializers.CharField(required=False, max_length=3, validators=[drf(v.validate_currency)])
    bio = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    languages = serializers.ListField(
        child=serializers.CharField(max_length=12), required=False, max_length=20
    )


class MeUpdateInputSerializer(RegisterInputSerializer):
    role = None  # type: ignore[assignment]
    display_name = serializers.CharField(
        max_length=200, required=False, validators=[drf(v.validate_display_name)]
    )


class SpecialtySerializer(serializers.ModelSerializer[Specialty]):
    class Meta:
        model = Specialty
        fields = ["slug", "name"]


class SpecialtyListOutSerializer(serializers.Serializer[Any]):
    results = SpecialtySerializer(many=True)


class PatientProfileOutSerializer(serializers.Serializer[Any]):
    date_of_birth = serializers.DateField(allow_null=True)
    sex = serializers.CharField()
    emergency_contact_name = serializers.CharField()
    emergency_contact_phone = serializers.CharField()


class DoctorProfileOutSerializer(serializers.ModelSerializer[DoctorProfile]):
    specialty = SpecialtySerializer()

    class Meta:
        model = DoctorProfile
        fields = [
            "specialty",
            "licence_number",
            "jurisdiction",
            "verification_status",
            "verified_at",
            "bio",
            "consultation_fee",
            "currency",
            "languages",
        ]


class UserOutSerializer(serializers.ModelSerializer[User]):
    patient_profile = serializers.SerializerMethodField()
    doctor_profile = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = [
            "id",
            "role",
            "display_name",
            "phone_number",
            "created_at",
            "patient_profile",
            "doctor_profile",
        ]

    def get_patient_profile(self, user: User) -> dict[str, Any] | None:
        profile = getattr(user, "patient_profile", None) if user.role == "patient" else None
        return PatientProfileOutSerializer(profile).data if profile else None

    def get_doctor_profile(self, user: User) -> dict[str, Any] | None:
        profile = getattr(user, "doctor_profile", None) if user.role == "doctor" else None
        return DoctorProfileOutSerializer(profile).data if profile else None


class DoctorPublicSerializer(serializers.ModelSerializer[DoctorProfile]):
    """What a patient sees of a verified doctor: no phone number, no licence details."""

    id = serializers.IntegerField(source="user_id")
    display_name = serializers.CharField(source="user.display_name")
    specialty = SpecialtySerializer()
    rating_average = serializers.FloatField(
        allow_null=True,
        help_text="average stars (1-5, two decimals) of the visible reviews by patients of completed "
        "consultations; null without any",
    )
    rating_count = serializers.IntegerField(help_text="how many reviews the average is of")

    class Meta:
        model = DoctorProfile
        fields = [
            "id",
            "display_name",
            "specialty",
            "jurisdiction",
            "bio",
            "consultation_fee",
            "currency",
            "languages",
            "rating_average",
            "rating_count",
        ]


class DoctorListQuerySerializer(QuerySerializer):
    """``GET doctors`` filters (text fields refuse NUL characters, which PostgreSQL cannot hold)."""

    specialty = serializers.SlugField(required=False, max_length=64, help_text="specialty slug")
    q = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="name search")


class DeviceInputSerializer(StrictSerializer):
    platform = serializers.ChoiceField(choices=v.PLATFORMS, default="android")
    fcm_token = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=4096)
    installation_id = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=200)
    app_version = serializers.CharField(required=False, allow_blank=True, max_length=32, default="")


class DeviceOutSerializer(serializers.ModelSerializer[Device]):
    class Meta:
        model = Device
        fields = ["id", "platform", "installation_id", "app_version", "created_at", "updated_at"]


# --- End-to-end encryption key directory (keys are base64; checked by the service) -----------
class SignedKeySerializer(StrictSerializer):
    id = serializers.IntegerField(min_value=0, max_value=v.PREKEY_ID_MAX)
    public_key = serializers.CharField(max_length=4096, trim_whitespace=False)
    signature = serializers.CharField(max_length=128, trim_whitespace=False)


class OneTimeKeySerializer(StrictSerializer):
    id = serializers.IntegerField(min_value=0, max_value=v.PREKEY_ID_MAX)
    public_key = serializers.CharField(max_length=128, trim_whitespace=False)


class KeysPutInputSerializer(StrictSerializer):
    device_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    registration_id = serializers.IntegerField()
    identity_key = serializers.CharField(max_length=128, trim_whitespace=False)
    signed_prekey = SignedKeySerializer(required=False)
    one_time_prekeys = serializers.ListField(child=OneTimeKeySerializer(), required=False)
    kyber_prekeys = serializers.ListField(child=SignedKeySerializer(), required=False)
    last_resort_kyber_prekey = SignedKeySerializer(required=False)


class KeyCountsOutSerializer(serializers.Serializer[Any]):
    one_time_prekeys = serializers.IntegerField()
    kyber_prekeys = serializers.IntegerField()


class KeysPutOutSerializer(KeyCountsOutSerializer):
    device_id = serializers.IntegerField()
    identity_changed = serializers.BooleanField()


class BundleKyberKeySerializer(SignedKeySerializer):
    last_resort = serializers.BooleanField()


class DeviceBundleOutSerializer(serializers.Serializer[Any]):
    device_id = serializers.IntegerField()
    registration_id = serializers.IntegerField()
    identity_key = serializers.CharField()
    signed_prekey = SignedKeySerializer()
    one_time_prekey = OneTimeKeySerializer(allow_null=True)
    kyber_prekey = BundleKyberKeySerializer()


class KeyBundlesOutSerializer(serializers.Serializer[Any]):
    user_id = serializers.IntegerField()
    devices = DeviceBundleOutSerializer(many=True)
