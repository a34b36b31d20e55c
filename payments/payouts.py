"""Doctor payouts: the Stripe Connect Express account (created once, onboarding links) and what
Stripe says about it (pending transfers are queued once it can receive them)."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import IntegrityError, transaction

from accounts.models import DoctorProfile, User
from core.errors import PermissionDenied

from . import services
from .gateway import ConnectAccount, GatewayError, get_gateway
from .models import (
    StripeAccount,
)


# --- Doctor payouts (Stripe Connect Express) --------------------------------------------------
def payout_onboarding_start(*, doctor: User) -> tuple[StripeAccount, str, int]:
    """Create the doctor's Express account (once) and a fresh onboarding link to it."""
    if doctor.role != User.Role.DOCTOR:
        raise PermissionDenied("Only doctors have payout accounts.", code="doctors_only")
    if not DoctorProfile.objects.filter(
        user=doctor, verification_status=DoctorProfile.Verification.VERIFIED
    ).exists():
        raise PermissionDenied(
            "Your account must be verified before you can receive payouts.", code="not_verified"
        )
    gateway = get_gateway()
    try:
        account = StripeAccount.objects.filter(doctor=doctor).first()
        if account is None:
            remote = gateway.create_express_account(
                country=settings.STRIPE_CONNECT_COUNTRY,
                metadata={"doctor_id": str(doctor.pk)},
                idempotency_key=f"doctor:{doctor.pk}:connect-account",
            )
            try:
                with transaction.atomic():
                    account = StripeAccount.objects.create(
                        doctor=doctor,
                        account_id=remote.id,
                        charges_enabled=remote.charges_enabled,
                        payouts_enabled=remote.payouts_enabled,
                        details_submitted=remote.details_submitted,
                    )
            except IntegrityError:  # a concurrent request created it (same idempotency key)
                account = StripeAccount.objects.get(doctor=doctor)
        link = gateway.create_account_link(
            account_id=account.account_id,
            refresh_url=settings.STRIPE_CONNECT_REFRESH_URL,
            return_url=settings.STRIPE_CONNECT_RETURN_URL,
            idempotency_key=f"doctor:{doctor.pk}:account-link:{int(time.time()) // 60}",
        )
    except GatewayError as exc:
        raise services.provider_failed(exc) from exc
    return account, link.url, link.expires_at


def stripe_account_sync(*, account: ConnectAccount) -> bool:
    """Record what Stripe says about a doctor's account; queue their pending transfers when it
    can receive them."""
    with transaction.atomic():
        row = StripeAccount.objects.select_for_update().filter(account_id=account.id).first()
        if row is None:
            return False
        became_payable = account.payouts_enabled and not row.payouts_enabled
        row.charges_enabled = account.charges_enabled
        row.payouts_enabled = account.payouts_enabled
        row.details_submitted = account.details_submitted
        row.save()
        if became_payable:
            doctor_id = row.doctor_id

            def queue() -> None:
                from .tasks import retry_payouts

                retry_payouts.delay(doctor_id=doctor_id)

            transaction.on_commit(queue)
    return True
