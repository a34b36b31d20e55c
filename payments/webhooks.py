"""The provider's word about our consultations: Stripe webhooks (each event applied once, with its
effect, in one transaction) and reconciliation against the provider (a command, the tests).
Both end in the consultation actions of ``payments.services`` (``sync_payment_intent``,
``settle``), so the same facts give the same state and ledger in any order."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.db import IntegrityError, transaction

from . import selectors, services
from . import validators as v
from .gateway import ConnectAccount, Event, GatewayError, PaymentIntent
from .models import (
    Consultation,
    WebhookEvent,
)
from .payouts import stripe_account_sync

State = Consultation.State


# --- Webhooks -------------------------------------------------------------------------------
def _consultation_for_intent(payment_intent_id: str, metadata_id: int | None) -> Consultation | None:
    consultation = (
        Consultation.objects.select_for_update().filter(payment_intent_id=payment_intent_id).first()
        if payment_intent_id
        else None
    )
    if consultation is None and metadata_id is not None:
        consultation = Consultation.objects.select_for_update().filter(pk=metadata_id).first()
        if consultation is not None and consultation.payment_intent_id not in (None, payment_intent_id):
            return None
    return consultation


def _on_payment_intent(event: Event) -> tuple[Consultation | None, str]:
    from .stripe_gateway import payment_intent_from_event

    intent = payment_intent_from_event(event.object)
    consultation = _consultation_for_intent(intent.id, intent.consultation_id)
    if consultation is None:
        return None, "ignored: unknown payment intent"
    return consultation, services.sync_payment_intent(consultation, intent, source="webhook")


def _on_charge(event: Event) -> tuple[Consultation | None, str]:
    charge = event.object
    intent_id = str(charge.get("payment_intent") or "")
    metadata = charge.get("metadata") or {}
    meta_id = str(metadata.get("consultation_id") or "")
    consultation = _consultation_for_intent(intent_id, int(meta_id) if meta_id.isdigit() else None)
    if consultation is None:
        return None, "ignored: unknown charge"
    if consultation.state == State.REQUESTED and charge.get("captured"):
        services.transition(
            consultation, "pay", actor=None, source="webhook", note="captured at the provider"
        )
    if charge.get("captured"):
        services.record_charge(
            consultation,
            amount=int(charge.get("amount_captured") or 0),
            charge_id=str(charge.get("id") or ""),
            source="webhook",
        )
    changed = services.sync_refunds(
        consultation, amount_refunded=int(charge.get("amount_refunded") or 0), source="webhook"
    )
    return consultation, "refund recorded" if changed else "no change"


def _on_account(event: Event) -> tuple[Consultation | None, str]:
    data = event.object
    account = ConnectAccount(
        id=str(data.get("id") or ""),
        charges_enabled=bool(data.get("charges_enabled")),
        payouts_enabled=bool(data.get("payouts_enabled")),
        details_submitted=bool(data.get("details_submitted")),
    )
    return None, "account updated" if stripe_account_sync(account=account) else "ignored: unknown account"


_HANDLERS: dict[str, Callable[[Event], tuple[Consultation | None, str]]] = {
    "payment_intent.amount_capturable_updated": _on_payment_intent,
    "payment_intent.succeeded": _on_payment_intent,
    "payment_intent.canceled": _on_payment_intent,
    "payment_intent.payment_failed": _on_payment_intent,
    "charge.captured": _on_charge,
    "charge.refunded": _on_charge,
    "account.updated": _on_account,
}


def webhook_event_process(*, event: Event) -> tuple[WebhookEvent | None, bool]:
    """Apply a verified event once: the event row and its effect commit together.

    Returns ``(record, applied)``; a duplicate (already recorded, or being recorded by a
    concurrent delivery that then commits) returns ``(None, False)``. Effects only move state
    forward and post keyed ledger entries, so events may arrive in any order.
    """
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    record = WebhookEvent.objects.create(
                        event_id=event.id,
                        type=event.type[:100],
                        livemode=event.livemode,
                        stripe_created_at=dt.datetime.fromtimestamp(event.created, tz=dt.UTC)
                        if event.created
                        else None,
                        payload=event.raw,
                    )
            except IntegrityError:
                return None, False
            handler = _HANDLERS.get(event.type)
            consultation, result = handler(event) if handler else (None, "ignored: event type not handled")
            record.consultation = consultation
            record.result = result[:255]
            record.save(update_fields=["consultation", "result"])
            return record, True
    except GatewayError as exc:
        raise services.provider_failed(exc) from exc


# --- Reconciliation ---------------------------------------------------------------------------
def reconcile_payment_intent(*, intent: PaymentIntent, fix: bool) -> list[str]:
    """Compare one provider PaymentIntent with our records; with ``fix``, apply what is missing
    (the same effects a webhook would have had). Returns the differences found."""
    with transaction.atomic():
        consultation = _consultation_for_intent(intent.id, intent.consultation_id)
        if consultation is None:
            if intent.consultation_id is None:
                return []
            return [f"{intent.id}: no consultation {intent.consultation_id} here (status {intent.status})"]
        summary = selectors.ledger_summary(consultation_id=consultation.pk)
        problems: list[str] = []
        label = f"consultation {consultation.pk} ({intent.id})"
        if intent.status == "requires_capture" and consultation.state == State.REQUESTED:
            problems.append(f"{label}: authorised at the provider, still requested here")
        if intent.status == "canceled" and consultation.state in (State.REQUESTED, State.PAID):
            problems.append(f"{label}: cancelled at the provider, {consultation.state} here")
        if intent.status == "succeeded" and summary.charge != intent.amount_received:
            problems.append(f"{label}: captured {intent.amount_received}, ledger has {summary.charge}")
        if intent.amount_refunded is not None and intent.amount_refunded != summary.refunded:
            problems.append(f"{label}: refunded {intent.amount_refunded}, ledger has {summary.refunded}")
        if (
            intent.status in ("requires_capture", "requires_payment_method")
            and consultation.state in v.ENDED_STATES
        ):
            problems.append(f"{label}: {consultation.state} here, still {intent.status} at the provider")
        if problems and fix:
            services.sync_payment_intent(consultation, intent, source="reconcile")
            if intent.status in ("requires_capture", "requires_payment_method") and consultation.state in (
                v.ENDED_STATES
            ):
                services.release(consultation, reason="abandoned")
        return problems
