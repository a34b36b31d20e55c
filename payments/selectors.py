"""Reads for payments, each scoped to what the caller may see."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User
from healthchat.errors import ApplicationError, NotFound, PermissionDenied
from messaging.services import BatchStatement

from . import validators as v
from .models import Consultation, ConsultationTransition, DoctorAvailability, LedgerEntry, StripeAccount


def _refunded() -> Any:
    return Coalesce(Sum("ledger_entries__amount", filter=Q(ledger_entries__kind="refund")), 0)


def consultation_list(
    *, user: User, state: str | None = None, role: str | None = None
) -> QuerySet[Consultation]:
    """Consultations where ``user`` is the patient or the doctor (newest first), with refunds summed."""
    if role == "patient":
        scope = Q(patient=user)
    elif role == "doctor":
        scope = Q(doctor=user)
    else:
        scope = Q(patient=user) | Q(doctor=user)
    qs = Consultation.objects.filter(scope).annotate(refunded=_refunded())
    if state:
        qs = qs.filter(state=state)
    return qs


def consultation_get(*, user: User, consultation_id: int) -> Consultation:
    """One consultation of ``user`` (patient or doctor); anyone else gets ``not_found``."""
    consultation = (
        consultation_list(user=user).filter(pk=consultation_id).prefetch_related("transitions").first()
    )
    if consultation is None:
        raise NotFound("No such consultation.", code="consultation_not_found")
    return consultation


def transitions_of(consultation: Consultation) -> list[ConsultationTransition]:
    return list(consultation.transitions.all())


@dataclass(frozen=True)
class LedgerSummary:
    charge: int
    refund: int
    fee: int
    transfer: int

    @property
    def net(self) -> int:
        """What the patient paid and was not given back."""
        return self.charge + self.refund

    @property
    def refunded(self) -> int:
        return -self.refund

    @property
    def held(self) -> int:
        """What the platform holds neither as its fee nor transferred (the doctor's share before
        completion or while their payout account is missing)."""
        return self.net - self.fee - self.transfer

    @property
    def balanced(self) -> bool:
        return self.charge >= 0 and self.refund <= 0 and self.held >= 0 and self.net >= 0


def ledger_summary(*, consultation_id: int) -> LedgerSummary:
    sums = {
        row["kind"]: int(row["total"])
        for row in LedgerEntry.objects.filter(consultation_id=consultation_id)
        .values("kind")
        .annotate(total=Sum("amount"))
        .order_by()
    }
    return LedgerSummary(
        charge=sums.get("charge", 0),
        refund=sums.get("refund", 0),
        fee=sums.get("fee", 0),
        transfer=sums.get("transfer", 0),
    )


def ledger_entries(*, consultation_id: int) -> QuerySet[LedgerEntry]:
    return LedgerEntry.objects.filter(consultation_id=consultation_id).order_by("id")


def consultation_ids_due_for_expiry(*, now: dt.datetime | None = None, limit: int = 500) -> list[int]:
    moment = now or timezone.now()
    return list(
        Consultation.objects.filter(state__in=("requested", "paid"), expires_at__lte=moment)
        .order_by("expires_at")
        .values_list("pk", flat=True)[:limit]
    )


def consultation_ids_pending_payout(*, doctor_id: int | None = None, limit: int = 500) -> list[int]:
    qs = Consultation.objects.filter(payout_status=Consultation.Payout.PENDING)
    if doctor_id is not None:
        qs = qs.filter(doctor_id=doctor_id)
    return list(qs.order_by("id").values_list("pk", flat=True)[:limit])


def has_consultation(doctor: User, patient: User) -> bool:
    """Contact rule for messaging: a doctor may contact a patient who consulted them."""
    return Consultation.objects.filter(
        doctor=doctor, patient=patient, state__in=(*v.TAKEN_STATES, "paid")
    ).exists()


_CONSULTATION_STATES_SQL = (
    "SELECT patient_id, doctor_id, state, closes_at FROM payments_consultation"
    " WHERE (patient_id, doctor_id) IN (SELECT * FROM unnest(%(patients)s::bigint[], %(doctors)s::bigint[]))"
)


def _patient_sends(sends: list[tuple[User, int]]) -> set[tuple[int, int]]:
    return {(sender.pk, peer_id) for sender, peer_id in sends if sender.role == User.Role.PATIENT}


def _closed_consultation_refusals(
    sends: list[tuple[User, int]], rows: Any, moment: Any
) -> dict[int, ApplicationError]:
    open_pairs: set[tuple[int, int]] = set()
    closed_pairs: set[tuple[int, int]] = set()
    for patient_id, doctor_id, state, closes_at in rows:
        key = (patient_id, doctor_id)
        if state in v.OPEN_STATES or (state == "completed" and closes_at is not None and closes_at > moment):
            open_pairs.add(key)
        elif state == "completed":
            closed_pairs.add(key)
    refused = closed_pairs - open_pairs
    return {
        index: PermissionDenied(
            "This consultation has closed; request a new consultation to write again.",
            code="consultation_closed",
        )
        for index, (sender, peer_id) in enumerate(sends)
        if (sender.pk, peer_id) in refused and sender.role == User.Role.PATIENT
    }


def consultation_send_statement(sends: list[tuple[User, int]]) -> BatchStatement | None:
    """The rule below as one PostgreSQL statement and the reading of its answer (what the
    event loop's batch writer runs; the thread's runs it through ``consultation_send_rule``)."""
    patients = _patient_sends(sends)
    if not patients:
        return None
    moment = timezone.now()
    return BatchStatement(
        _CONSULTATION_STATES_SQL,
        {"patients": [p for p, _ in patients], "doctors": [d for _, d in patients]},
        lambda rows: _closed_consultation_refusals(sends, rows, moment),
    )


def consultation_send_rule(sends: list[tuple[User, int]]) -> dict[int, ApplicationError]:
    """Messaging's direct-send rule, for a batch of ``(sender, peer_id)`` sends (one query):
    once a consultation has closed (completion plus the follow-up window), the conversation is
    read-only for the patient until a new one opens. Conversations that never had a
    consultation are not affected. Returns ``{index: error}`` for the sends it refuses."""
    if connection.vendor == "postgresql":
        # On the send hot path: one plain statement (no ORM query building per batch).
        statement = consultation_send_statement(sends)
        if statement is None:
            return {}
        with connection.cursor() as cursor:
            cursor.execute(statement.sql, statement.params)
            refusals: dict[int, ApplicationError] = statement.answer(cursor.fetchall())
            return refusals
    patients = _patient_sends(sends)
    if not patients:
        return {}
    rows = Consultation.objects.filter(
        patient_id__in={p for p, _ in patients}, doctor_id__in={d for _, d in patients}
    ).values_list("patient_id", "doctor_id", "state", "closes_at")
    return _closed_consultation_refusals(sends, rows, timezone.now())


consultation_send_rule.statement = consultation_send_statement  # type: ignore[attr-defined]


def patient_may_write(*, patient: User, doctor: User, now: dt.datetime | None = None) -> bool:
    """Whether the patient may write to the doctor: an open consultation, or a completed one
    still inside its follow-up window (for messaging to enforce read-only afterwards)."""
    moment = now or timezone.now()
    return Consultation.objects.filter(
        Q(state__in=v.OPEN_STATES) | Q(state="completed", closes_at__gt=moment),
        patient=patient,
        doctor=doctor,
    ).exists()


# --- Availability ---------------------------------------------------------------------------
def availability_get(*, doctor_id: int) -> DoctorAvailability | None:
    return DoctorAvailability.objects.filter(doctor_id=doctor_id).prefetch_related("windows").first()


def availability_data(*, doctor_id: int, availability: DoctorAvailability | None) -> dict[str, Any]:
    if availability is None:
        return {
            "doctor_id": doctor_id,
            "online": True,
            "timezone": "UTC",
            "outside_hours": DoctorAvailability.OutsideHours.REFUSE.value,
            "weekly_hours": [],
            "available_now": True,
        }
    return {
        "doctor_id": doctor_id,
        "online": availability.online,
        "timezone": availability.timezone,
        "outside_hours": availability.outside_hours,
        "weekly_hours": [
            {"weekday": w.weekday, "start": w.start.strftime("%H:%M"), "end": w.end.strftime("%H:%M")}
            for w in availability.windows.all()
        ],
        "available_now": availability_refusal(availability=availability) is None,
    }


def availability_refusal(
    *, availability: DoctorAvailability | None, now: dt.datetime | None = None
) -> str | None:
    """Why a request would be refused now (``doctor_offline`` / ``outside_hours``), or None.

    Outside the weekly hours, a doctor who queues requests still receives them.
    """
    if availability is None:
        return None
    if not availability.online:
        return "doctor_offline"
    windows = list(availability.windows.all())
    if not windows or availability.outside_hours == DoctorAvailability.OutsideHours.QUEUE:
        return None
    local = (now or timezone.now()).astimezone(zoneinfo.ZoneInfo(availability.timezone))
    clock = local.time().replace(tzinfo=None)
    if any(w.weekday == local.weekday() and w.start <= clock < w.end for w in windows):
        return None
    return "outside_hours"


# --- Payouts --------------------------------------------------------------------------------
def stripe_account_get(*, doctor: User) -> StripeAccount | None:
    return StripeAccount.objects.filter(doctor=doctor).first()


def payout_entries(*, doctor: User) -> QuerySet[LedgerEntry]:
    """Transfers (and their reversals) to ``doctor`` only."""
    return LedgerEntry.objects.filter(consultation__doctor=doctor, kind=LedgerEntry.Kind.TRANSFER).order_by(
        "-id"
    )


def export_consultations(*, user: User) -> list[dict[str, Any]]:
    """The user's consultations (as patient or doctor), their transitions and money."""
    consultations = (
        Consultation.objects.filter(Q(patient=user) | Q(doctor=user))
        .prefetch_related("transitions", "ledger_entries")
        .order_by("id")
    )
    return [
        {
            "id": c.pk,
            "role": "patient" if c.patient_id == user.pk else "doctor",
            "patient_id": c.patient_id,
            "doctor_id": c.doctor_id,
            "kind": c.kind,
            "reason": c.reason,
            "state": c.state,
            "price": c.price,
            "currency": c.currency,
            "platform_fee": c.platform_fee,
            "payment_intent_id": c.payment_intent_id,
            "created_at": c.created_at.isoformat(),
            "completed_at": c.completed_at.isoformat() if c.completed_at else None,
            "transitions": [
                {"from": t.from_state, "to": t.to_state, "actor_id": t.actor_id, "at": t.at.isoformat()}
                for t in c.transitions.all()
            ],
            "payments": [
                {"kind": e.kind, "amount": e.amount, "currency": e.currency, "at": e.created_at.isoformat()}
                for e in c.ledger_entries.all()
                # A patient sees what they paid and got back; a doctor also their transfers.
                if e.kind in ("charge", "refund") or c.doctor_id == user.pk
            ],
        }
        for c in consultations
    ]
