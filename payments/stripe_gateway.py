"""The Stripe adapter: the only module that imports the Stripe SDK.

Every mutating call carries the idempotency key the caller derived from the consultation (or
doctor) and the action, so a retry (ours, or the SDK's own on network errors, 409 and 5xx)
replays the first result instead of charging, refunding or transferring twice. Stripe
objects never leave this module: they are turned into the plain dataclasses of ``gateway``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import stripe

from .gateway import (
    AccountLink,
    ConnectAccount,
    Event,
    GatewayError,
    PaymentIntent,
    Refund,
    Transfer,
    TransferReversal,
    WebhookSignatureError,
)

WEBHOOK_TOLERANCE_SECONDS = 300


def _plain(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    result: dict[str, Any] = obj.to_dict()
    return result


def _payment_intent(obj: Any) -> PaymentIntent:
    data = _plain(obj)
    charge = data.get("latest_charge")
    charge_id, refunded = "", None
    if isinstance(charge, dict):
        charge_id, refunded = str(charge.get("id") or ""), int(charge.get("amount_refunded") or 0)
    elif isinstance(charge, str):
        charge_id = charge
    error = data.get("last_payment_error") or {}
    return PaymentIntent(
        id=str(data["id"]),
        status=str(data.get("status") or ""),
        amount=int(data.get("amount") or 0),
        currency=str(data.get("currency") or "").upper(),
        client_secret=str(data.get("client_secret") or ""),
        amount_capturable=int(data.get("amount_capturable") or 0),
        amount_received=int(data.get("amount_received") or 0),
        latest_charge=charge_id,
        amount_refunded=refunded,
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        last_payment_error=str(error.get("code") or error.get("message") or "")[:255]
        if isinstance(error, dict)
        else "",
    )


def payment_intent_from_event(obj: dict[str, Any]) -> PaymentIntent:
    """A PaymentIntent from a webhook's ``data.object`` (already plain data)."""
    return _payment_intent(obj)


def _account(obj: Any) -> ConnectAccount:
    data = _plain(obj)
    return ConnectAccount(
        id=str(data["id"]),
        charges_enabled=bool(data.get("charges_enabled")),
        payouts_enabled=bool(data.get("payouts_enabled")),
        details_submitted=bool(data.get("details_submitted")),
    )


def construct_event(payload: bytes, signature_header: str | None, secret: str) -> Event:
    """Verify the ``Stripe-Signature`` header and parse the event (Stripe's own verifier)."""
    try:
        text = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(text, signature_header, secret, WEBHOOK_TOLERANCE_SECONDS)
        # Stripe's verifier refuses old timestamps only; refuse ones from the future too.
        stamp = int(str(signature_header).split("t=", 1)[1].split(",", 1)[0])
        if stamp > time.time() + WEBHOOK_TOLERANCE_SECONDS:
            raise WebhookSignatureError("Timestamp in the future.")
        event = stripe.Webhook.construct_event(text, signature_header, secret, WEBHOOK_TOLERANCE_SECONDS)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, IndexError) as exc:
        raise WebhookSignatureError(str(exc)) from exc
    except ValueError as exc:  # signed, but not JSON
        raise WebhookSignatureError("The payload is not a JSON event.") from exc
    raw = event.to_dict()
    data = raw.get("data") or {}
    return Event(
        id=str(raw.get("id") or ""),
        type=str(raw.get("type") or ""),
        created=int(raw.get("created") or 0),
        livemode=bool(raw.get("livemode")),
        object=dict(data.get("object") or {}),
        raw=raw,
    )


class StripeGateway:
    name = "stripe"

    def __init__(self, *, api_key: str, api_base: str | None, max_network_retries: int) -> None:
        base: dict[str, str] = {}
        if api_base:
            base = {"api": api_base, "connect": api_base, "files": api_base}
        self.client = stripe.StripeClient(
            api_key,
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=max_network_retries,
        )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as exc:
            code = str(getattr(exc, "code", "") or "")
            raise GatewayError(
                exc.user_message or "The payment provider refused the request.",
                code=code,
                http_status=exc.http_status,
            ) from exc

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
        pi = self._call(
            self.client.v1.payment_intents.create,
            params={
                "amount": amount,
                "currency": currency.lower(),
                "capture_method": "manual",
                "automatic_payment_methods": {"enabled": True},
                "metadata": metadata,
                "transfer_group": transfer_group,
                "description": description,
            },
            options={"idempotency_key": idempotency_key},
        )
        return _payment_intent(pi)

    def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        pi = self._call(
            self.client.v1.payment_intents.retrieve,
            payment_intent_id,
            params={"expand": ["latest_charge"]},
        )
        return _payment_intent(pi)

    def capture_payment_intent(
        self, payment_intent_id: str, *, amount: int, idempotency_key: str
    ) -> PaymentIntent:
        pi = self._call(
            self.client.v1.payment_intents.capture,
            payment_intent_id,
            params={"amount_to_capture": amount},
            options={"idempotency_key": idempotency_key},
        )
        return _payment_intent(pi)

    def cancel_payment_intent(
        self, payment_intent_id: str, *, reason: str, idempotency_key: str
    ) -> PaymentIntent:
        pi = self._call(
            self.client.v1.payment_intents.cancel,
            payment_intent_id,
            params={"cancellation_reason": reason},
            options={"idempotency_key": idempotency_key},
        )
        return _payment_intent(pi)

    def create_refund(
        self, *, payment_intent_id: str, amount: int, metadata: dict[str, str], idempotency_key: str
    ) -> Refund:
        refund = _plain(
            self._call(
                self.client.v1.refunds.create,
                params={"payment_intent": payment_intent_id, "amount": amount, "metadata": metadata},
                options={"idempotency_key": idempotency_key},
            )
        )
        return Refund(
            id=str(refund["id"]), amount=int(refund["amount"]), status=str(refund.get("status") or "")
        )

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
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "destination": destination,
            "transfer_group": transfer_group,
            "metadata": metadata,
        }
        if source_transaction:
            params["source_transaction"] = source_transaction
        transfer = _plain(
            self._call(
                self.client.v1.transfers.create, params=params, options={"idempotency_key": idempotency_key}
            )
        )
        return Transfer(
            id=str(transfer["id"]),
            amount=int(transfer["amount"]),
            amount_reversed=int(transfer.get("amount_reversed") or 0),
        )

    def reverse_transfer(self, transfer_id: str, *, amount: int, idempotency_key: str) -> TransferReversal:
        reversal = _plain(
            self._call(
                self.client.v1.transfers.reversals.create,
                transfer_id,
                params={"amount": amount},
                options={"idempotency_key": idempotency_key},
            )
        )
        return TransferReversal(id=str(reversal["id"]), amount=int(reversal["amount"]))

    def create_express_account(
        self, *, country: str, metadata: dict[str, str], idempotency_key: str
    ) -> ConnectAccount:
        account = self._call(
            self.client.v1.accounts.create,
            params={
                "type": "express",
                "country": country,
                "capabilities": {"transfers": {"requested": True}},
                "metadata": metadata,
            },
            options={"idempotency_key": idempotency_key},
        )
        return _account(account)

    def retrieve_account(self, account_id: str) -> ConnectAccount:
        return _account(self._call(self.client.v1.accounts.retrieve, account_id))

    def create_account_link(
        self, *, account_id: str, refresh_url: str, return_url: str, idempotency_key: str
    ) -> AccountLink:
        link = _plain(
            self._call(
                self.client.v1.account_links.create,
                params={
                    "account": account_id,
                    "refresh_url": refresh_url,
                    "return_url": return_url,
                    "type": "account_onboarding",
                },
                options={"idempotency_key": idempotency_key},
            )
        )
        return AccountLink(url=str(link["url"]), expires_at=int(link.get("expires_at") or 0))

    def list_payment_intents(self, *, created_gte: int) -> Iterator[PaymentIntent]:
        page = self._call(
            self.client.v1.payment_intents.list,
            params={"created": {"gte": created_gte}, "limit": 100, "expand": ["data.latest_charge"]},
        )
        try:
            for pi in page.auto_paging_iter():
                yield _payment_intent(pi)
        except stripe.StripeError as exc:
            raise GatewayError(
                exc.user_message or "Listing payments failed.", http_status=exc.http_status
            ) from exc
