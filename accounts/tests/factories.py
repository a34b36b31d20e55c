"""factory_boy factories for accounts (build data through the real models)."""

from __future__ import annotations

from typing import Any

import factory
from django.utils import timezone

from accounts.models import Device, DoctorProfile, PatientProfile, Specialty, User
from conftest import unique_phone


class SpecialtyFactory(factory.django.DjangoModelFactory[Specialty]):
    class Meta:
        model = Specialty
        django_get_or_create = ("slug",)

    slug = "general-practice"
    name = "General practice"


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    phone_number = factory.LazyFunction(unique_phone)
    firebase_uid = factory.Sequence(lambda n: f"factory-uid-{n}-{timezone.now().timestamp()}")
    role = User.Role.PATIENT
    display_name = factory.Faker("name")


class PatientFactory(UserFactory):
    role = User.Role.PATIENT
    profile = factory.RelatedFactory(
        "accounts.tests.factories.PatientProfileFactory", factory_related_name="user"
    )


class PatientProfileFactory(factory.django.DjangoModelFactory[PatientProfile]):
    class Meta:
        model = PatientProfile

    user: Any = factory.SubFactory(UserFactory)


class DoctorFactory(UserFactory):
    role = User.Role.DOCTOR
    profile = factory.RelatedFactory(
        "accounts.tests.factories.DoctorProfileFactory", factory_related_name="user"
    )


class DoctorProfileFactory(factory.django.DjangoModelFactory[DoctorProfile]):
    class Meta:
        model = DoctorProfile

    user: Any = factory.SubFactory(UserFactory, role=User.Role.DOCTOR)
    specialty = factory.SubFactory(SpecialtyFactory)
    licence_number = factory.Sequence(lambda n: f"LIC-{n:06d}-{timezone.now().timestamp()}")
    jurisdiction = "GB"
    verification_status = DoctorProfile.Verification.VERIFIED
    verified_at = factory.LazyFunction(timezone.now)
    consultation_fee = 3000
    currency = "GBP"


class DeviceFactory(factory.django.DjangoModelFactory[Device]):
    class Meta:
        model = Device

    user: Any = factory.SubFactory(PatientFactory)
    installation_id = factory.Sequence(lambda n: f"fid-{n}")
    platform = Device.Platform.ANDROID
