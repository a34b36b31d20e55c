"""Input and output shapes of the payments REST API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from accounts.models import User
from core.validation import QuerySerializer, StrictSerializer, drf

from . import validators as v
from .models import Consultation, ConsultationTransition, LedgerEntry, StripeAccount


# --- Input ----------------------------------------------------------------------------------
class ConsultationCreateInputSerializer(StrictSerializer):
    doctor_id = serializers.IntegerField(min_value=1)
    kind = serializers.ChoiceField(choices=Consultation.Kind.choices)
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=v.REASON_MAX,
        validators=[drf(v.validate_reason)],
    )


class ConsultationListQuerySerializer(QuerySerializer, StrictSerializer):
    state = serializers.ChoiceField(choices=v.STATES, required=False)
    role = serializers.ChoiceField(choices=("patient", "doctor"), required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)


class EmptyInputSerializer(StrictSerializer):
    """Actions without parameters still refuse unknown fields."""


class ConsultationDeclineInputSerializer(StrictSerializer):
    reason = serializers.CharField(
        required=False, allow_blank=True, max_length=255, validators=[drf(v.validate_reason)]
    )


class AvailabilityInputSerializer(StrictSerializer):
    online = serializers.BooleanField(required=False)
    timezone = serializers.CharField(required=False, max_length=64, validators=[drf(v.validate_timezone)])
    outside_hours = serializers.ChoiceField(choices=v.OUTSIDE_HOURS, required=False)
    weekly_hours = serializers.JSONField(required=False, validators=[drf(v.validate_weekly_hours)])


# --- Output ---------------------------------------------------------------------------------
class TransitionOutSerializer(serializers.ModelSerializer[ConsultationTransition]):
    class Meta:
        model = ConsultationTransition
        fields = ["from_state", "to_state", "actor_id", "source", "at"]


class PaymentOutSerializer(serializers.Serializer[Consultation]):
    """The patient's view of the payment: what the Stripe SDK needs to confirm it."""

    provider = serializers.CharField()
    payment_intent_id = serializers.CharField(allow_null=True)
    client_secret = serializers.SerializerMethodField()
    amount = serializers.IntegerField(source="price")
    currency = serializers.CharField()
    status = serializers.SerializerMethodField()
    last_payment_error = serializers.CharField()

    def get_client_secret(self, obj: Consultation) -> str | None:
        # Only useful (and only shown) while the payment still has to be confirmed.
        return obj.client_secret or None if obj.state == Consultation.State.REQUESTED else None

    def get_status(self, obj: Consultation) -> str:
        if obj.state == Consultation.State.REQUESTED:
            return "requires_confirmation"
        if obj.state == Consultation.State.PAID:
            return "authorised"
        if obj.state in v.TAKEN_STATES:
            return "captured"
        if obj.state == Consultation.State.REFUNDED:
            return "refunded"
        return "released"


class ConsultationOutSerializer(serializers.ModelSerializer[Consultation]):
    amount_refunded = serializers.SerializerMethodField()

    class Meta:
        model = Consultation
        fields = [
            "id",
            "patient_id",
            "doctor_id",
            "kind",
            "reason",
            "state",
            "price",
            "currency",
            "amount_refunded",
            "conversation_id",
            "payout_status",
            "created_at",
            "expires_at",
            "paid_at",
            "accepted_at",
            "started_at",
            "completed_at",
            "closes_at",
            "ended_at",
        ]

    def get_amount_refunded(self, obj: Consultation) -> int:
        refunded = getattr(obj, "refunded", None)
        if refunded is None:
            from .selectors import ledger_summary

            return ledger_summary(consultation_id=obj.pk).refunded
        return -int(refunded)


class ConsultationDetailOutSerializer(ConsultationOutSerializer):
    transitions = TransitionOutSerializer(many=True, read_only=True)
    payment = serializers.SerializerMethodField()

    class Meta(ConsultationOutSerializer.Meta):
        fields = [*ConsultationOutSerializer.Meta.fields, "transitions", "payment"]

    def get_payment(self, obj: Consultation) -> dict[str, Any] | None:
        viewer = self.context.get("viewer")
        if not isinstance(viewer, User) or viewer.pk != obj.patient_id:
            return None
        return dict(PaymentOutSerializer(obj).data)


def consultation_out(consultation: Consultation, *, viewer: User) -> dict[str, Any]:
    data = dict(ConsultationDetailOutSerializer(consultation, context={"viewer": viewer}).data)
    if viewer.pk != consultation.doctor_id:
        data.pop("payout_status", None)
    return data


class StripeAccountOutSerializer(serializers.ModelSerializer[StripeAccount]):
    class Meta:
        model = StripeAccount
        fields = ["account_id", "charges_enabled", "payouts_enabled", "details_submitted"]


class PayoutEntryOutSerializer(serializers.ModelSerializer[LedgerEntry]):
    class Meta:
        model = LedgerEntry
        fields = ["consultation_id", "amount", "currency", "stripe_id", "created_at"]


class OnboardingOutSerializer(serializers.Serializer[Any]):
    url = serializers.URLField()
    expires_at = serializers.IntegerField()
    account = StripeAccountOutSerializer()


class WeeklyWindowSerializer(serializers.Serializer[Any]):
    weekday = serializers.IntegerField(min_value=0, max_value=6)
    start = serializers.CharField()
    end = serializers.CharField()


class AvailabilityOutSerializer(serializers.Serializer[Any]):
    doctor_id = serializers.IntegerField()
    online = serializers.BooleanField()
    timezone = serializers.CharField()
    outside_hours = serializers.CharField()
    weekly_hours = WeeklyWindowSerializer(many=True)
    available_now = serializers.BooleanField()
