"""Reads for payments, each scoped to what the caller may see."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging.models import Membership
from messaging.reach import Reach
from messaging.send_rules import BatchStatement, DeferredRule, ReachRule, refusals_of

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


# --- The closed rule: read-only for the patient once a consultation has closed ------------
CLOSED_MESSAGE = "This consultation has closed; request a new consultation to write again."


def consultation_closed(consultations: list[tuple[str, dt.datetime | None]], moment: dt.datetime) -> bool:
    """THE decision, for one patient and one doctor, from their consultations' ``(state,
    closes_at)``: closed when one was completed and its follow-up window has ended, and none is
    open or still inside its window (a new consultation opens the conversation again). A pair
    that never had a completed consultation is not affected. Every form of the rule (the SQL
    statement the batch writers run, the ORM query of other databases) ends here."""
    completed_and_over = False
    for state, closes_at in consultations:
        if consultation_open_at(state, closes_at, moment):
            return False
        if state == "completed":
            completed_and_over = True
    return completed_and_over


def consultation_open_at(state: str, closes_at: dt.datetime | None, moment: dt.datetime) -> bool:
    """Whether one consultation is still open at ``moment``: not yet ended, or completed and
    inside its follow-up window (the closed rule's and the scheduled-message rule's answer)."""
    return state in v.OPEN_STATES or (state == "completed" and closes_at is not None and closes_at > moment)


# For each reach asked (ord): the consultations between its sender (as patient) and each person
# it reaches (as doctor): the other active members of the conversation and the named users.
_REACH_CONSULTATIONS_SQL = """
SELECT r.ord, c.doctor_id, c.state, c.closes_at
FROM (
    SELECT a.ord, a.sender, m.user_id
    FROM unnest(%(ord)s::int[], %(sender)s::bigint[], %(conv)s::bigint[]) AS a(ord, sender, conv)
    JOIN messaging_membership m ON m.conversation_id = a.conv AND m.user_id <> a.sender AND m.left_at IS NULL
    UNION
    SELECT * FROM unnest(%(named_ord)s::int[], %(named_sender)s::bigint[], %(named_peer)s::bigint[])
) AS r(ord, sender, peer)
JOIN payments_consultation c ON c.patient_id = r.sender AND c.doctor_id = r.peer
"""


def _patient_reaches(reaches: Sequence[Reach]) -> list[int]:
    """The positions of the reaches the rule is about: a patient's (doctors never are refused)."""
    return [i for i, r in enumerate(reaches) if r.sender.role == User.Role.PATIENT]


def _closed_refusals(rows: Any, moment: dt.datetime) -> dict[int, ApplicationError]:
    """``rows`` of ``(ord, doctor_id, state, closes_at)`` → the refused reaches (by ord)."""
    by_pair: dict[tuple[int, int], list[tuple[str, dt.datetime | None]]] = {}
    for ord_, doctor_id, state, closes_at in rows:
        by_pair.setdefault((int(ord_), int(doctor_id)), []).append((state, closes_at))
    refused = {ord_ for (ord_, _doctor), pair in by_pair.items() if consultation_closed(pair, moment)}
    return {ord_: PermissionDenied(CLOSED_MESSAGE, code="consultation_closed") for ord_ in sorted(refused)}


def consultation_reach_statement(reaches: Sequence[Reach]) -> BatchStatement | None:
    """The rule as one PostgreSQL statement and the reading of its answer (what the event loop's
    batch writer runs; the thread runs the same through ``consultation_reach_rule``)."""
    asked = _patient_reaches(reaches)
    if not asked:
        return None
    moment = timezone.now()
    named = [(i, reaches[i].sender.pk, peer) for i in asked for peer in reaches[i].recipient_ids]
    return BatchStatement(
        _REACH_CONSULTATIONS_SQL,
        {
            "ord": asked,
            "sender": [reaches[i].sender.pk for i in asked],
            "conv": [reaches[i].conversation_id for i in asked],
            "named_ord": [n[0] for n in named],
            "named_sender": [n[1] for n in named],
            "named_peer": [n[2] for n in named],
        },
        lambda rows: _closed_refusals(rows, moment),
    )


def consultation_reach_rule_orm(reaches: Sequence[Reach]) -> dict[int, ApplicationError]:
    """The rule through the ORM (databases other than PostgreSQL): the statement's rows, read
    with Django's queries, then the same decision."""
    asked = _patient_reaches(reaches)
    if not asked:
        return {}
    return _closed_refusals(_reach_consultation_rows(reaches, asked), timezone.now())


def _reach_consultation_rows(reaches: Sequence[Reach], asked: list[int]) -> list[tuple[Any, ...]]:
    """The statement's rows through the ORM."""
    conversations = {c for i in asked if (c := reaches[i].conversation_id) is not None}
    members: dict[int, set[int]] = {}
    for conversation_id, user_id in Membership.objects.filter(
        conversation_id__in=conversations, left_at__isnull=True
    ).values_list("conversation_id", "user_id"):
        members.setdefault(conversation_id, set()).add(user_id)
    reached = {
        i: (
            {*members.get(reaches[i].conversation_id or 0, set()), *reaches[i].recipient_ids}
            - {reaches[i].sender.pk}
        )
        for i in asked
    }
    consultations = Consultation.objects.filter(
        patient_id__in={reaches[i].sender.pk for i in asked},
        doctor_id__in={peer for peers in reached.values() for peer in peers},
    ).values_list("patient_id", "doctor_id", "state", "closes_at")
    return [
        (i, doctor_id, state, closes_at)
        for patient_id, doctor_id, state, closes_at in consultations
        for i in asked
        if reaches[i].sender.pk == patient_id and doctor_id in reached[i]
    ]


# Messaging's reach rule (registered by ``PaymentsConfig.ready``): once a consultation has closed
# (completion plus the follow-up window), nothing the patient writes reaches that doctor (a
# message, an edit, typing, a call, a group) until a new consultation opens. One statement for a
# batch of reaches, run by every writer; the ORM form on other databases.
CONSULTATION_CLOSED_RULE = ReachRule(
    name="payments.consultation_closed",
    statement=consultation_reach_statement,
    orm=consultation_reach_rule_orm,
)


def consultation_reach_rule(reaches: Sequence[Reach]) -> dict[int, ApplicationError]:
    """The rule alone on Django's connection: ``{index: error}`` for the reaches it refuses."""
    if connection.vendor == "postgresql":
        statement = consultation_reach_statement(reaches)
        return {} if statement is None else refusals_of(statement)
    return consultation_reach_rule_orm(reaches)


# --- The consultation a scheduled message is written in ------------------------------------
# Messaging's deferred rule (``DeferredRule``, registered by ``PaymentsConfig.ready``): a message
# written now to be sent later (``scheduled``) is bound to the consultation open in its
# conversation when it is written, and refused (``consultation_closed``) if that consultation
# is over when it is due, even from a doctor (who may otherwise still write after it closed).
SCHEDULED_CLOSED_MESSAGE = "The consultation this message was written in has ended."


def consultation_in_progress_id(
    author: User, conversation_id: int, *, now: dt.datetime | None = None
) -> int | None:
    """The newest consultation of ``conversation_id`` with ``author`` as its doctor or patient
    that is open now (``consultation_open_at``); ``None`` when none is (nothing to bind)."""
    moment = now or timezone.now()
    candidates = (
        Consultation.objects.filter(conversation_id=conversation_id)
        .filter(Q(doctor=author) | Q(patient=author))
        .filter(Q(state__in=v.OPEN_STATES) | Q(state="completed", closes_at__gt=moment))
        .order_by("-id")
        .values_list("pk", flat=True)
    )
    return candidates.first()


def consultation_ended_refusal(consultation_id: int, now: dt.datetime) -> ApplicationError | None:
    """``consultation_closed`` when that consultation is no longer open at ``now``."""
    row = Consultation.objects.filter(pk=consultation_id).values_list("state", "closes_at").first()
    if row is not None and consultation_open_at(row[0], row[1], now):
        return None
    return PermissionDenied(SCHEDULED_CLOSED_MESSAGE, code="consultation_closed")


CONSULTATION_DEFERRED_RULE = DeferredRule(
    name="consultation", bind=consultation_in_progress_id, refusal=consultation_ended_refusal
)


def patient_may_write(*, patient: User, doctor: User, now: dt.datetime | None = None) -> bool:
    """Whether the closed rule lets ``patient`` write to ``doctor`` now (the same decision)."""
    consultations = list(
        Consultation.objects.filter(patient=patient, doctor=doctor).values_list("state", "closes_at")
    )
    return not consultation_closed(consultations, now or timezone.now())


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
