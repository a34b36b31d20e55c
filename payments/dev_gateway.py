"""DEVELOPMENT PAYMENT PROVIDER: NO MONEY MOVES. Production settings refuse it.

The embedded default when no ``STRIPE_SECRET_KEY`` is set, so the whole consultation flow runs
on one machine with nothing else installed: every payment is authorised at once, every
capture, refund and transfer "succeeds", and Connect onboarding returns a local placeholder
link. It keeps no state (ids are derived from the idempotency keys), so it behaves the same
in every process. There is nothing to reconcile and no webhooks arrive from it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

from .gateway import (
    AccountLink,
    ConnectAccount,
    GatewayError,
    PaymentIntent,
    Refund,
    Transfer,
    TransferReversal,
)


def _id(prefix: str, key: str) -> str:
    return f"{prefix}_dev_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class DevelopmentGateway:
    name = "development"

    def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        transfer_group: str,
        description: str,
        idempotency_key: str,
    ) -> PaymentIntent:
        pi_id = _id("pi", idempotency_key)
        return PaymentIntent(
            id=pi_id,
            status="requires_capture",  # authorised at once: there is no card to confirm
            amount=amount,
            currency=currency.upper(),
            client_secret=f"{pi_id}_secret_development",
            amount_capturable=amount,
            metadata=dict(metadata),
        )

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        raise GatewayError("The development payment provider keeps no state to retrieve.")

    def capture_payment_intent(
        self, payment_intent_id: str, *, amount: int, idempotency_key: str
    ) -> PaymentIntent:
        return PaymentIntent(
            id=payment_intent_id,
            status="succeeded",
            amount=amount,
            currency="",
            amount_received=amount,
            latest_charge=_id("ch", payment_intent_id),
            amount_refunded=0,
        )

    def cancel_payment_intent(
        self, payment_intent_id: str, *, reason: str, idempotency_key: str
    ) -> PaymentIntent:
        return PaymentIntent(id=payment_intent_id, status="canceled", amount=0, currency="")

    def create_refund(
        self, *, payment_intent_id: str, amount: int, metadata: dict[str, str], idempotency_key: str
    ) -> Refund:
        return Refund(id=_id("re", idempotency_key), amount=amount, status="succeeded")

    def create_transfer(
        self,
        *,
        amount: int,
        currency: str,
        destination: str,
        source_transaction: str,
        transfer_group: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> Transfer:
        return Transfer(id=_id("tr", idempotency_key), amount=amount)

    def reverse_transfer(self, transfer_id: str, *, amount: int, idempotency_key: str) -> TransferReversal:
        return TransferReversal(id=_id("trr", idempotency_key), amount=amount)

    def create_express_account(
        self, *, country: str, metadata: dict[str, str], idempotency_key: str
    ) -> ConnectAccount:
        return ConnectAccount(
            id=_id("acct", idempotency_key),
            charges_enabled=True,
            payouts_enabled=True,
            details_submitted=True,
        )

    def retrieve_account(self, account_id: str) -> ConnectAccount:
        return ConnectAccount(
            id=account_id, charges_enabled=True, payouts_enabled=True, details_submitted=True
        )

    def create_account_link(
        self, *, account_id: str, refresh_url: str, return_url: str, idempotency_key: str
    ) -> AccountLink:
        return AccountLink(
            url=f"{return_url}?development_account={account_id}", expires_at=int(time.time()) + 300
        )

    def list_payment_intents(self, *, created_gte: int) -> Iterator[PaymentIntent]:
        return iter(())
