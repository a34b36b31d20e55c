"""Consultation and payment actions: one function per transition, each in one transaction (the
request and the availability: ``payments.booking``; the
provider's webhooks and reconciliation: ``payments.webhooks``; payouts: ``payments.payouts``).

Each action locks the consultation row, checks the transition (``validators.TRANSITIONS``),
makes the provider call it needs with an idempotency key derived from the consultation and
the action (so a retry after a crash or a lost response replays Stripe's first answer),
then records the new state, who and when, and the ledger entries, and commits. A provider
failure rolls everything back and nothing is stored. Live events go out on commit.

Money after the fact is settled by ``settle``: from the ledger and the state it computes
what the platform fee and the doctor's transfer should now be and posts the difference
(transfer at completion, proportional reversals after refunds). Webhooks, reconciliation and
the refund action all end there, so the same facts give the same ledger in any order.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.actors import Actor, acting_user, require_permission
from accounts.models import User
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging.services import fan_out_on_commit

from . import selectors
from . import validators as v
from .gateway import GatewayError, PaymentGateway, PaymentIntent, get_gateway
from .models import (
    Consultation,
    ConsultationTransition,
    LedgerEntry,
    StripeAccount,
)
from .signals import consultation_transitioned, ledger_entry_posted

logger = logging.getLogger("healthchat.payments")

State = Consultation.State


# --- Helpers --------------------------------------------------------------------------------
def idempotency_key(consultation_id: int, action: str, *parts: object) -> str:
    """``consultation:<id>:<action>[:<part>...]``: the same effect always sends the same key."""
    return ":".join(["consultation", str(consultation_id), action, *(str(p) for p in parts)])


def provider_failed(exc: GatewayError) -> ApplicationError:
    logger.warning("payment provider call failed code=%s status=%s", exc.code, exc.http_status)
    return ApplicationError(
        "payment_provider_error",
        "The payment provider could not complete the request. Try again.",
        status=502,
        extra={"provider_code": exc.code} if exc.code else None,
    )


def _gateway(consultation: Consultation) -> PaymentGateway:
    return get_gateway(consultation.provider)


def lock(consultation_id: int) -> Consultation:
    consultation = Consultation.objects.select_for_update().filter(pk=consultation_id).first()
    if consultation is None:
        raise NotFound("No such consultation.", code="consultation_not_found")
    return consultation


def _lock_for(user: User, consultation_id: int) -> Consultation:
    """Lock a consultation of ``user``; anyone else cannot tell it exists."""
    consultation = lock(consultation_id)
    if user.pk not in (consultation.patient_id, consultation.doctor_id):
        raise NotFound("No such consultation.", code="consultation_not_found")
    return consultation


def consultation_data(consultation: Consultation) -> dict[str, Any]:
    """The consultation as participants see it (never the client secret)."""
    return {
        "id": consultation.pk,
        "patient_id": consultation.patient_id,
        "doctor_id": consultation.doctor_id,
        "kind": consultation.kind,
        "state": consultation.state,
        "price": consultation.price,
        "currency": consultation.currency,
        "conversation_id": consultation.conversation_id,
    }


def announce(consultation: Consultation) -> None:
    """Tell both participants' devices, after commit (a hint: ``GET consultations`` is the truth)."""
    fan_out_on_commit(
        user_ids=[consultation.patient_id, consultation.doctor_id],
        frame={"type": "consultation.updated", "data": {"consultation": consultation_data(consultation)}},
    )


_STAMPS: dict[str, str] = {
    State.PAID: "paid_at",
    State.ACCEPTED: "accepted_at",
    State.IN_PROGRESS: "started_at",
    State.COMPLETED: "completed_at",
}


def transition(
    consultation: Consultation, action: str, *, actor: User | None, source: str, note: str = ""
) -> Consultation:
    """Move the locked consultation along ``action`` and log who and when."""
    target = v.check_transition(state=consultation.state, action=action)
    now = timezone.now()
    previous = consultation.state
    consultation.state = target
    fields = ["state", "updated_at"]
    if target in _STAMPS:
        setattr(consultation, _STAMPS[target], now)
        fields.append(_STAMPS[target])
    if target == State.COMPLETED:
        consultation.closes_at = now + dt.timedelta(days=settings.CONSULTATION_FOLLOW_UP_DAYS)
        fields.append("closes_at")
    if target in v.ENDED_STATES:
        consultation.ended_at = now
        fields.append("ended_at")
    consultation.save(update_fields=fields)
    ConsultationTransition.objects.create(
        consultation=consultation,
        from_state=previous,
        to_state=target,
        actor=actor,
        source=source,
        note=note[:255],
    )
    logger.info("consultation %s %s -> %s (%s)", consultation.pk, previous, target, source)
    announce(consultation)
    consultation_transitioned.send(
        sender=Consultation, consultation=consultation, from_state=previous, to_state=target, source=source
    )
    return consultation


def _post(
    consultation: Consultation, *, kind: str, amount: int, key: str, source: str, stripe_id: str = ""
) -> bool:
    """Append a ledger entry unless this effect (``key``) is already recorded."""
    if amount == 0 or LedgerEntry.objects.filter(consultation=consultation, key=key).exists():
        return False
    entry = LedgerEntry.objects.create(
        consultation=consultation,
        kind=kind,
        amount=amount,
        currency=consultation.currency,
        key=key,
        source=source,
        stripe_id=stripe_id,
    )
    ledger_entry_posted.send(sender=LedgerEntry, entry=entry)
    return True


def _check_role(consultation: Consultation, user: User, action: str) -> None:
    if user.pk == consultation.doctor_id and action in v.DOCTOR_ACTIONS:
        return
    if user.pk == consultation.patient_id and action in v.PATIENT_ACTIONS:
        return
    raise PermissionDenied(
        f"Only the {'doctor' if user.pk == consultation.patient_id else 'patient'} can {action} this consultation.",
        code="not_allowed",
    )


# --- Provider state -> our state (webhooks, reconciliation, accept) ---------------------------
def record_charge(consultation: Consultation, *, amount: int, charge_id: str, source: str) -> None:
    if amount <= 0:
        return
    if charge_id and not consultation.charge_id:
        consultation.charge_id = charge_id
        consultation.save(update_fields=["charge_id", "updated_at"])
    _post(consultation, kind="charge", amount=amount, key="charge", source=source, stripe_id=charge_id)


def sync_refunds(consultation: Consultation, *, amount_refunded: int, source: str) -> bool:
    """Record refunds made at the provider that the ledger does not have yet (cumulative)."""
    summary = selectors.ledger_summary(consultation_id=consultation.pk)
    if amount_refunded <= summary.refunded:
        return False
    _post(
        consultation,
        kind="refund",
        amount=-(amount_refunded - summary.refunded),
        key=f"refund:{amount_refunded}",
        source=source,
    )
    if consultation.state in v.TAKEN_STATES and amount_refunded >= summary.charge > 0:
        transition(consultation, "refund", actor=None, source=source, note="refunded at the provider")
    settle(consultation, source=source)
    return True


def sync_payment_intent(consultation: Consultation, intent: PaymentIntent, *, source: str) -> str:
    """Move a locked consultation forward to what the provider says; never backwards."""
    status = intent.status
    if status == "requires_capture":
        if consultation.state == State.REQUESTED:
            transition(consultation, "pay", actor=None, source=source, note="authorised")
            return "authorised"
        return "no change"
    if status == "succeeded":
        changed = False
        if consultation.state == State.REQUESTED:
            transition(consultation, "pay", actor=None, source=source, note="captured at the provider")
            changed = True
        before = selectors.ledger_summary(consultation_id=consultation.pk).charge
        record_charge(
            consultation, amount=intent.amount_received, charge_id=intent.latest_charge, source=source
        )
        changed = changed or before == 0 < intent.amount_received
        if intent.amount_refunded is not None:
            changed = (
                sync_refunds(consultation, amount_refunded=intent.amount_refunded, source=source) or changed
            )
        return "captured" if changed else "no change"
    if status == "canceled":
        if consultation.state in (State.REQUESTED, State.PAID):
            transition(consultation, "expire", actor=None, source=source, note="cancelled at the provider")
            return "expired"
        return "no change"
    if status == "requires_payment_method" and intent.last_payment_error:
        consultation.last_payment_error = intent.last_payment_error
        consultation.save(update_fields=["last_payment_error", "updated_at"])
        return "payment failed"
    return "no change"


# --- Doctor's and patient's actions -----------------------------------------------------------
def consultation_accept(*, user: User, consultation_id: int) -> Consultation:
    """The doctor accepts: the authorised amount is captured."""
    try:
        with transaction.atomic():
            consultation = _lock_for(user, consultation_id)
            _check_role(consultation, user, "accept")
            if consultation.state == State.ACCEPTED:
                return consultation
            gateway = _gateway(consultation)
            if consultation.state == State.REQUESTED and consultation.payment_intent_id:
                # The authorisation webhook may be late or lost: ask the provider.
                try:
                    intent = gateway.retrieve_payment_intent(consultation.payment_intent_id)
                except GatewayError:
                    intent = None
                if intent is not None:
                    sync_payment_intent(consultation, intent, source="system")
            if consultation.state == State.REQUESTED:
                raise ApplicationError(
                    "payment_not_authorised", "The patient's payment is not authorised yet.", status=409
                )
            v.check_transition(state=consultation.state, action="accept")
            assert consultation.payment_intent_id
            if selectors.ledger_summary(consultation_id=consultation.pk).charge == 0:
                intent = gateway.capture_payment_intent(
                    consultation.payment_intent_id,
                    amount=consultation.price,
                    idempotency_key=idempotency_key(consultation.pk, "capture"),
                )
                if intent.status != "succeeded":
                    raise ApplicationError(
                        "payment_not_captured", "The payment could not be captured.", status=409
                    )
                record_charge(
                    consultation, amount=intent.amount_received, charge_id=intent.latest_charge, source="api"
                )
            return transition(consultation, "accept", actor=user, source="api")
    except GatewayError as exc:
        raise provider_failed(exc) from exc


def release(consultation: Consultation, *, reason: str) -> None:
    """Cancel the uncaptured PaymentIntent (the authorisation is released)."""
    if not consultation.payment_intent_id:
        return
    gateway = _gateway(consultation)
    try:
        gateway.cancel_payment_intent(
            consultation.payment_intent_id,
            reason=reason,
            idempotency_key=idempotency_key(consultation.pk, "cancel"),
        )
    except GatewayError:
        # Already cancelled (by us earlier, or at the provider)? Then there is nothing to release.
        intent = gateway.retrieve_payment_intent(consultation.payment_intent_id)
        if intent.status != "canceled":
            raise


def consultation_decline(*, user: User, consultation_id: int, note: str = "") -> Consultation:
    """The doctor declines a request: the authorisation is released."""
    try:
        with transaction.atomic():
            consultation = _lock_for(user, consultation_id)
            _check_role(consultation, user, "decline")
            if consultation.state == State.DECLINED:
                return consultation
            v.check_transition(state=consultation.state, action="decline")
            release(consultation, reason="abandoned")
            return transition(consultation, "decline", actor=user, source="api", note=v.validate_reason(note))
    except GatewayError as exc:
        raise provider_failed(exc) from exc


def consultation_cancel(*, user: User, consultation_id: int) -> Consultation:
    """Before acceptance either side may cancel (authorisation released); after it only the
    doctor, and the patient is refunded in full."""
    try:
        with transaction.atomic():
            consultation = _lock_for(user, consultation_id)
            _check_role(consultation, user, "cancel")
            if consultation.state in (State.CANCELLED, State.REFUNDED):
                return consultation
            if consultation.state in v.TAKEN_STATES and consultation.state != State.COMPLETED:
                if user.pk != consultation.doctor_id:
                    raise ApplicationError(
                        "cannot_cancel",
                        "The doctor has accepted this consultation; ask them or support to cancel it.",
                        status=409,
                    )
                return refund_amount(
                    consultation, amount=None, actor=user, source="api", note="cancelled by the doctor"
                )
            v.check_transition(state=consultation.state, action="cancel")
            reason = "requested_by_customer" if user.pk == consultation.patient_id else "abandoned"
            release(consultation, reason=reason)
            return transition(consultation, "cancel", actor=user, source="api")
    except GatewayError as exc:
        raise provider_failed(exc) from exc


def consultation_keep_fee(*, consultation_id: int, amount: int, source: str, note: str) -> Consultation:
    """Keep ``amount`` of an authorised consultation that will not take place (an appointment
    cancelled late by the patient, a patient's no-show): capture only that much (Stripe releases
    the rest of the authorisation), record the charge, and complete the consultation so the fee
    is settled between the platform and the doctor like any price (``settle``)."""
    try:
        with transaction.atomic():
            consultation = lock(consultation_id)
            if consultation.state != State.PAID or not consultation.payment_intent_id:
                v.check_transition(state=consultation.state, action="accept")
            assert consultation.payment_intent_id
            if not 0 < amount <= consultation.price:
                raise ApplicationError("invalid_amount", "The fee must be within the price.", status=400)
            intent = _gateway(consultation).capture_payment_intent(
                consultation.payment_intent_id,
                amount=amount,
                idempotency_key=idempotency_key(consultation.pk, "capture"),
            )
            record_charge(
                consultation, amount=intent.amount_received, charge_id=intent.latest_charge, source=source
            )
            transition(consultation, "accept", actor=None, source=source, note=note)
            transition(consultation, "complete", actor=None, source=source, note=note)
            settle(consultation, source=source)
            return consultation
    except GatewayError as exc:
        raise provider_failed(exc) from exc


def consultation_set_expiry(*, consultation_id: int, expires_at: dt.datetime) -> Consultation:
    """Move an open request's expiry (a booked appointment moved to another slot)."""
    with transaction.atomic():
        consultation = lock(consultation_id)
        if consultation.state in (State.REQUESTED, State.PAID):
            consultation.expires_at = expires_at
            consultation.save(update_fields=["expires_at", "updated_at"])
        return consultation


def consultation_start(*, user: User, consultation_id: int) -> Consultation:
    with transaction.atomic():
        consultation = _lock_for(user, consultation_id)
        _check_role(consultation, user, "start")
        if consultation.state == State.IN_PROGRESS:
            return consultation
        return transition(consultation, "start", actor=user, source="api")


def consultation_complete(*, user: User, consultation_id: int) -> Consultation:
    """The doctor completes: the fee is kept and the doctor's share transferred (or queued
    until their payout account can receive it). The follow-up window starts."""
    try:
        with transaction.atomic():
            consultation = _lock_for(user, consultation_id)
            _check_role(consultation, user, "complete")
            if consultation.state == State.COMPLETED:
                return consultation
            transition(consultation, "complete", actor=user, source="api")
            settle(consultation, source="api")
            return consultation
    except GatewayError as exc:
        raise provider_failed(exc) from exc


def consultation_expire(*, consultation_id: int, source: str = "task") -> Consultation | None:
    """Expire a request the doctor did not accept in time (authorisation released). Idempotent."""
    try:
        with transaction.atomic():
            consultation = Consultation.objects.select_for_update().filter(pk=consultation_id).first()
            if (
                consultation is None
                or consultation.state not in (State.REQUESTED, State.PAID)
                or consultation.expires_at > timezone.now()
            ):
                return consultation
            release(consultation, reason="abandoned")
            return transition(consultation, "expire", actor=None, source=source)
    except GatewayError as exc:
        raise provider_failed(exc) from exc


# --- Money after completion, refunds ----------------------------------------------------------
def settle(consultation: Consultation, *, source: str) -> None:
    """Post the fee and move the doctor's share so the ledger matches the state.

    Before completion the platform holds everything. From completion on, of what the patient
    paid and was not refunded (``net``), the doctor's share is ``net * (price - fee) / price``
    and the rest is the platform's: a partial refund reverses both proportionally.
    """
    summary = selectors.ledger_summary(consultation_id=consultation.pk)
    if consultation.completed_at is None:
        if consultation.state in v.ENDED_STATES:
            set_payout(consultation, Consultation.Payout.NONE)
        return
    doctor_target = v.proportional(
        summary.net, consultation.price - consultation.platform_fee, consultation.price
    )
    fee_target = summary.net - doctor_target
    _post(consultation, kind="fee", amount=fee_target - summary.fee, key=f"fee:{fee_target}", source=source)
    delta = doctor_target - summary.transfer
    if delta > 0 and not consultation.transfer_id:
        account = StripeAccount.objects.filter(doctor_id=consultation.doctor_id).first()
        if account is not None and not account.can_receive_transfers:
            refresh_account(account)  # the account.updated webhook may not have come
        if account is None or not account.can_receive_transfers:
            set_payout(consultation, Consultation.Payout.PENDING)
            return
        transfer = _gateway(consultation).create_transfer(
            amount=delta,
            currency=consultation.currency,
            destination=account.account_id,
            source_transaction=consultation.charge_id,
            transfer_group=f"consultation-{consultation.pk}",
            metadata={"consultation_id": str(consultation.pk), "doctor_id": str(consultation.doctor_id)},
            idempotency_key=idempotency_key(consultation.pk, "transfer"),
        )
        consultation.transfer_id = transfer.id
        consultation.save(update_fields=["transfer_id", "updated_at"])
        _post(
            consultation, kind="transfer", amount=delta, key="transfer", source=source, stripe_id=transfer.id
        )
        set_payout(consultation, Consultation.Payout.TRANSFERRED)
    elif delta < 0 and consultation.transfer_id:
        reversal = _gateway(consultation).reverse_transfer(
            consultation.transfer_id,
            amount=-delta,
            idempotency_key=idempotency_key(consultation.pk, "reverse-transfer", doctor_target),
        )
        _post(
            consultation,
            kind="transfer",
            amount=delta,
            key=f"transfer:{doctor_target}",
            source=source,
            stripe_id=reversal.id,
        )
    if doctor_target == 0 and not consultation.transfer_id:
        set_payout(consultation, Consultation.Payout.NONE)


def refresh_account(account: StripeAccount) -> None:
    remote = get_gateway().retrieve_account(account.account_id)
    account.charges_enabled = remote.charges_enabled
    account.payouts_enabled = remote.payouts_enabled
    account.details_submitted = remote.details_submitted
    account.save()


def set_payout(consultation: Consultation, status: str) -> None:
    if consultation.payout_status != status:
        consultation.payout_status = status
        consultation.save(update_fields=["payout_status", "updated_at"])


def consultation_settle(*, consultation_id: int, source: str = "task") -> Consultation:
    """Retry what settlement still owes (e.g. a transfer queued until the doctor onboarded)."""
    try:
        with transaction.atomic():
            consultation = lock(consultation_id)
            settle(consultation, source=source)
            return consultation
    except GatewayError as exc:
        raise provider_failed(exc) from exc


def refund_amount(
    consultation: Consultation, *, amount: int | None, actor: User | None, source: str, note: str = ""
) -> Consultation:
    summary = selectors.ledger_summary(consultation_id=consultation.pk)
    if consultation.state not in v.TAKEN_STATES:
        raise ApplicationError(
            "not_refundable",
            "Only accepted, started or completed consultations can be refunded "
            "(requests are cancelled, which releases the authorisation).",
            status=409,
        )
    value = v.validate_refund_amount(amount=amount, refundable=summary.net)
    assert consultation.payment_intent_id
    cumulative = summary.refunded + value
    refund = _gateway(consultation).create_refund(
        payment_intent_id=consultation.payment_intent_id,
        amount=value,
        metadata={"consultation_id": str(consultation.pk)},
        idempotency_key=idempotency_key(consultation.pk, "refund", cumulative),
    )
    _post(
        consultation,
        kind="refund",
        amount=-value,
        key=f"refund:{cumulative}",
        source=source,
        stripe_id=refund.id,
    )
    if cumulative >= summary.charge:
        transition(consultation, "refund", actor=actor, source=source, note=note)
    settle(consultation, source=source)
    if cumulative < summary.charge:
        announce(consultation)
    return consultation


def consultation_refund(
    *,
    consultation_id: int,
    actor: Actor,
    amount: int | None = None,
    source: str = "admin",
    note: str = "",
) -> Consultation:
    """Staff refund of ``amount`` (None: all that is left); needs ``payments.refund_consultation``.
    The doctor's share and the platform fee are reversed in proportion; refunding everything
    moves the consultation to ``refunded``."""
    require_permission(actor, "payments.refund_consultation")
    by = acting_user(actor)
    try:
        with transaction.atomic():
            return refund_amount(lock(consultation_id), amount=amount, actor=by, source=source, note=note)
    except GatewayError as exc:
        raise provider_failed(exc) from exc
