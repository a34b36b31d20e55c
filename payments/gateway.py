"""The payment provider seen by the rest of the code: plain data and one interface.

Two providers implement ``PaymentGateway``: ``stripe_gateway.StripeGateway`` (the only module
that imports the Stripe SDK) and ``dev_gateway.DevelopmentGateway`` (the embedded default
when no Stripe key is configured; production settings refuse it). ``get_gateway()`` picks one
from settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from core.errors import ApplicationError


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    status: str
    amount: int
    currency: str
    client_secret: str = ""
    amount_capturable: int = 0
    amount_received: int = 0
    latest_charge: str = ""
    # Known when the charge was expanded (retrieve/list): what Stripe has refunded so far.
    amount_refunded: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    last_payment_error: str = ""

    @property
    def consultation_id(self) -> int | None:
        value = self.metadata.get("consultation_id", "")
        return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class Refund:
    id: str
    amount: int
    status: str


@dataclass(frozen=True)
class Transfer:
    id: str
    amount: int
    amount_reversed: int = 0


@dataclass(frozen=True)
class TransferReversal:
    id: str
    amount: int


@dataclass(frozen=True)
class ConnectAccount:
    id: str
    charges_enabled: bool
    payouts_enabled: bool
    details_submitted: bool


@dataclass(frozen=True)
class AccountLink:
    url: str
    expires_at: int


@dataclass(frozen=True)
class Event:
    """A verified webhook event; ``object`` is the event's ``data.object`` as plain data."""

    id: str
    type: str
    created: int
    livemode: bool
    object: dict[str, Any]
    raw: dict[str, Any]


class GatewayError(Exception):
    """The provider refused or failed a call (after the SDK's own retries)."""

    def __init__(self, message: str, *, code: str = "", http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class WebhookSignatureError(Exception):
    """A webhook whose signature is missing, forged or outside the time tolerance."""


class PaymentGateway(Protocol):
    name: str

    def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        transfer_group: str,
        description: str,
        idempotency_key: str,
    ) -> PaymentIntent: ...

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent: ...

    def capture_payment_intent(
        self, payment_intent_id: str, *, amount: int, idempotency_key: str
    ) -> PaymentIntent: ...

    def cancel_payment_intent(
        self, payment_intent_id: str, *, reason: str, idempotency_key: str
    ) -> PaymentIntent: ...

    def create_refund(
        self, *, payment_intent_id: str, amount: int, metadata: dict[str, str], idempotency_key: str
    ) -> Refund: ...

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
    ) -> Transfer: ...

    def reverse_transfer(
        self, transfer_id: str, *, amount: int, idempotency_key: str
    ) -> TransferReversal: ...

    def create_express_account(
        self, *, country: str, metadata: dict[str, str], idempotency_key: str
    ) -> ConnectAccount: ...

    def retrieve_account(self, account_id: str) -> ConnectAccount: ...

    def create_account_link(
        self, *, account_id: str, refresh_url: str, return_url: str, idempotency_key: str
    ) -> AccountLink: ...

    def list_payment_intents(self, *, created_gte: int) -> Iterator[PaymentIntent]: ...


def get_gateway(provider: str | None = None) -> PaymentGateway:
    """The configured provider (or ``provider``, for a consultation made with an earlier one)."""
    name = provider or settings.PAYMENTS_PROVIDER
    if name == "stripe":
        from .stripe_gateway import StripeGateway

        if not settings.STRIPE_SECRET_KEY:
            raise ApplicationError("payments_unavailable", "Payments are not configured.", status=503)
        return StripeGateway(
            api_key=settings.STRIPE_SECRET_KEY,
            api_base=settings.STRIPE_API_BASE or None,
            max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
        )
    if name == "development":
        from .dev_gateway import DevelopmentGateway

        return DevelopmentGateway()
    raise ApplicationError("payments_unavailable", f"Unknown payment provider {name!r}.", status=503)


def parse_webhook(payload: bytes, signature_header: str | None) -> Event:
    """Verify a Stripe webhook (HMAC-SHA256 with STRIPE_WEBHOOK_SECRET or
    STRIPE_CONNECT_WEBHOOK_SECRET, 300 s tolerance)."""
    from .stripe_gateway import construct_event

    secrets = [s for s in (settings.STRIPE_WEBHOOK_SECRET, settings.STRIPE_CONNECT_WEBHOOK_SECRET) if s]
    if not secrets:
        raise ApplicationError("webhooks_not_configured", "Webhooks are not configured.", status=503)
    # The platform endpoint and the Connect endpoint (connected accounts' events) sign with
    # their own secrets; both deliver here.
    for secret in secrets[:-1]:
        try:
            return construct_event(payload, signature_header, secret)
        except WebhookSignatureError:
            continue
    return construct_event(payload, signature_header, secrets[-1])
