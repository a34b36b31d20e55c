"""Payments: consultations and their money.

A consultation is what a patient pays a doctor for. Its ``state`` only moves along the
machine in ``validators.TRANSITIONS``; every move is one service function that appends a
``ConsultationTransition`` (who, when). Money is recorded in ``LedgerEntry`` rows that are
only ever appended (a database trigger refuses UPDATE and DELETE on PostgreSQL). Models are
thin: fields, constraints, indexes. Writes go through ``payments.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from . import validators as v


class Consultation(models.Model):
    class Kind(models.TextChoices):
        CHAT = "chat", "Chat"
        VOICE = "voice", "Voice"
        VIDEO = "video", "Video"

    class State(models.TextChoices):
        REQUESTED = "requested", "Requested (awaiting payment authorisation)"
        PAID = "paid", "Paid (authorised, awaiting the doctor)"
        ACCEPTED = "accepted", "Accepted (captured)"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        DECLINED = "declined", "Declined"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"
        REFUNDED = "refunded", "Refunded"

    class Payout(models.TextChoices):
        NOT_DUE = "not_due", "Not due"
        PENDING = "pending", "Pending (doctor has no payout account yet)"
        TRANSFERRED = "transferred", "Transferred"
        NONE = "none", "Nothing to pay out"

    patient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="consultations_as_patient"
    )
    doctor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="consultations_as_doctor"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    reason = models.TextField(max_length=v.REASON_MAX, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.REQUESTED)
    # Copied from the doctor's profile when requested; later fee changes do not apply.
    price = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    platform_fee = models.PositiveIntegerField()
    conversation = models.ForeignKey(
        "messaging.Conversation", on_delete=models.PROTECT, related_name="consultations"
    )
    provider = models.CharField(max_length=16)
    payment_intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    client_secret = models.CharField(max_length=255, blank=True, default="")
    charge_id = models.CharField(max_length=255, blank=True, default="")
    transfer_id = models.CharField(max_length=255, blank=True, default="")
    payout_status = models.CharField(max_length=16, choices=Payout.choices, default=Payout.NOT_DUE)
    last_payment_error = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # End of the follow-up window (completion + CONSULTATION_FOLLOW_UP_DAYS).
    closes_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        permissions = [
            ("refund_consultation", "Can refund a consultation"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=v.KINDS), name="consultation_kind_valid"),
            models.CheckConstraint(condition=Q(state__in=v.STATES), name="consultation_state_valid"),
            models.CheckConstraint(condition=Q(price__gt=0), name="consultation_price_positive"),
            models.CheckConstraint(
                condition=Q(platform_fee__gte=0) & Q(platform_fee__lte=models.F("price")),
                name="consultation_fee_within_price",
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=v.CURRENCY_REGEX), name="consultation_currency_iso"
            ),
            models.CheckConstraint(
                condition=~Q(patient=models.F("doctor")), name="consultation_not_with_self"
            ),
            models.CheckConstraint(condition=Q(provider__in=v.PROVIDERS), name="consultation_provider_valid"),
            models.CheckConstraint(
                condition=Q(payout_status__in=v.PAYOUT_STATUSES), name="consultation_payout_valid"
            ),
            models.CheckConstraint(
                condition=~Q(state__in=v.TAKEN_STATES) | Q(accepted_at__isnull=False),
                name="consultation_captured_has_accepted_at",
            ),
            models.CheckConstraint(
                condition=~Q(state="completed")
                | (Q(completed_at__isnull=False) & Q(closes_at__isnull=False)),
                name="consultation_completed_has_times",
            ),
            models.CheckConstraint(
                condition=~Q(state__in=v.ENDED_STATES) | Q(ended_at__isnull=False),
                name="consultation_ended_has_time",
            ),
            # One open consultation per patient and doctor at a time.
            models.UniqueConstraint(
                fields=["patient", "doctor"],
                condition=Q(state__in=v.OPEN_STATES),
                name="consultation_one_open_per_pair",
            ),
        ]
        indexes = [
            models.Index(fields=["patient", "-id"], name="consultation_patient_recent"),
            models.Index(fields=["doctor", "-id"], name="consultation_doctor_recent"),
            models.Index(fields=["state", "expires_at"], name="consultation_state_expiry"),
            models.Index(fields=["payout_status"], name="consultation_payout_status"),
        ]

    def __str__(self) -> str:
        return f"consultation {self.pk} ({self.state})"


class ConsultationTransition(models.Model):
    """Who moved a consultation from one state to another, and when (append-only)."""

    consultation = models.ForeignKey(Consultation, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=16, blank=True, default="")
    to_state = models.CharField(max_length=16)
    # Null: the system (a webhook, the expiry task, reconciliation).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source = models.CharField(max_length=16)
    note = models.CharField(max_length=255, blank=True, default="")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(to_state__in=v.STATES), name="transition_to_state_valid"),
            models.CheckConstraint(condition=Q(source__in=v.SOURCES), name="transition_source_valid"),
            models.UniqueConstraint(fields=["consultation", "to_state"], name="transition_once_per_state"),
        ]

    def __str__(self) -> str:
        return f"{self.consultation_id}: {self.from_state or '-'} -> {self.to_state}"


class LedgerEntry(models.Model):
    """One movement of money for a consultation, in minor units; never updated or deleted.

    Signs: ``charge`` > 0 (captured from the patient), ``refund`` < 0 (returned to the
    patient), ``fee`` (kept by the platform) and ``transfer`` (paid to the doctor) are
    positive when earned or sent and negative when reversed. For every consultation
    ``charge + refund == fee + transfer + held`` where ``held`` is what the platform holds
    before completion; after completion ``held`` is 0 (see ``selectors.ledger_summary``).
    """

    class Kind(models.TextChoices):
        CHARGE = "charge", "Charge"
        FEE = "fee", "Platform fee"
        TRANSFER = "transfer", "Transfer to doctor"
        REFUND = "refund", "Refund"

    consultation = models.ForeignKey(Consultation, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    # Stripe object behind the entry (ch_, re_, tr_, trr_), when there is one.
    stripe_id = models.CharField(max_length=255, blank=True, default="")
    # Deterministic per effect ("charge", "refund:1500", ...): the same effect is recorded once,
    # whether it arrives from our own call, a webhook or reconciliation.
    key = models.CharField(max_length=120)
    source = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=v.LEDGER_KINDS), name="ledger_kind_valid"),
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_amount_nonzero"),
            models.CheckConstraint(
                condition=~Q(kind="charge") | Q(amount__gt=0), name="ledger_charge_positive"
            ),
            models.CheckConstraint(
                condition=~Q(kind="refund") | Q(amount__lt=0), name="ledger_refund_negative"
            ),
            models.CheckConstraint(condition=Q(source__in=v.SOURCES), name="ledger_source_valid"),
            models.UniqueConstraint(fields=["consultation", "key"], name="ledger_effect_once"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.currency} ({self.consultation_id})"


class WebhookEvent(models.Model):
    """A Stripe event, recorded in the same transaction as its effect: each id is applied once."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    livemode = models.BooleanField(default=False)
    stripe_created_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    consultation = models.ForeignKey(
        Consultation, on_delete=models.SET_NULL, null=True, blank=True, related_name="webhook_events"
    )
    result = models.CharField(max_length=255, blank=True, default="")
    payload = models.JSONField()

    class Meta:
        indexes = [models.Index(fields=["type", "-received_at"], name="webhook_type_recent")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class StripeAccount(models.Model):
    """A doctor's Stripe Connect Express account (where their share is transferred)."""

    doctor = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, primary_key=True, related_name="stripe_account"
    )
    account_id = models.CharField(max_length=255, unique=True)
    charges_enabled = models.BooleanField(default=False)
    payouts_enabled = models.BooleanField(default=False)
    details_submitted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(account_id=""), name="stripe_account_id_not_blank")
        ]

    def __str__(self) -> str:
        return f"{self.account_id} (doctor {self.doctor_id})"

    @property
    def can_receive_transfers(self) -> bool:
        return self.payouts_enabled


class DoctorAvailability(models.Model):
    """Whether a doctor takes requests now: an online switch and weekly hours.

    A doctor without any weekly window is available whenever online.
    """

    class OutsideHours(models.TextChoices):
        REFUSE = "refuse", "Refuse requests"
        QUEUE = "queue", "Accept requests to answer later"

    doctor = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="availability"
    )
    online = models.BooleanField(default=True)
    timezone = models.CharField(max_length=64, default="UTC")
    outside_hours = models.CharField(max_length=8, choices=OutsideHours.choices, default=OutsideHours.REFUSE)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "doctor availabilities"
        constraints = [
            models.CheckConstraint(
                condition=Q(outside_hours__in=v.OUTSIDE_HOURS), name="availability_outside_hours_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"availability of {self.doctor_id}"


class AvailabilityWindow(models.Model):
    """One weekly window (weekday 0 = Monday, local times in the availability's time zone)."""

    availability = models.ForeignKey(DoctorAvailability, on_delete=models.CASCADE, related_name="windows")
    weekday = models.PositiveSmallIntegerField()
    start = models.TimeField()
    end = models.TimeField()

    class Meta:
        ordering = ["weekday", "start"]
        constraints = [
            models.CheckConstraint(condition=Q(weekday__lte=6), name="window_weekday_valid"),
            models.CheckConstraint(condition=Q(start__lt=models.F("end")), name="window_start_before_end"),
        ]

    def __str__(self) -> str:
        return f"{self.weekday} {self.start}-{self.end}"
