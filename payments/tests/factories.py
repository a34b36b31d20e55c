"""Helpers for payments tests: people and consultations built through the real services."""

from __future__ import annotations

from typing import Any

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory
from payments import booking, payouts, services, webhooks
from payments.models import Consultation, StripeAccount
from payments.tests.fake_stripe import FakeStripe


def people(**doctor_profile: Any) -> tuple[User, User]:
    """A patient and a verified doctor (fee 3000 GBP unless given)."""
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create(**{f"profile__{k}": v for k, v in doctor_profile.items()})
    return patient, doctor


def onboarded(doctor: User, fake: FakeStripe) -> StripeAccount:
    """The doctor's Connect account exists and can receive transfers."""
    account, _, _ = payouts.payout_onboarding_start(doctor=doctor)
    fake.enable_account(account.account_id)
    account.payouts_enabled = account.charges_enabled = account.details_submitted = True
    account.save()
    return account


def requested(patient: User, doctor: User, kind: str = "chat") -> Consultation:
    return booking.consultation_request(patient=patient, doctor_id=doctor.pk, kind=kind, reason="Headache")


def authorised(patient: User, doctor: User, fake: FakeStripe) -> Consultation:
    """Requested, the card authorised at Stripe, and our state synced (as the webhook would)."""
    consultation = requested(patient, doctor)
    assert consultation.payment_intent_id
    fake.authorize(consultation.payment_intent_id)
    webhooks.reconcile_payment_intent(intent=_intent(fake, consultation.payment_intent_id), fix=True)
    consultation.refresh_from_db()
    assert consultation.state == "paid"
    return consultation


def completed(patient: User, doctor: User, fake: FakeStripe) -> Consultation:
    consultation = authorised(patient, doctor, fake)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    services.consultation_complete(user=doctor, consultation_id=consultation.pk)
    consultation.refresh_from_db()
    return consultation


def _intent(fake: FakeStripe, pi_id: str) -> Any:
    from payments.gateway import get_gateway

    return get_gateway("stripe").retrieve_payment_intent(pi_id)
