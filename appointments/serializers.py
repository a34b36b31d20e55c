"""Input and output shapes of the appointments REST API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import OffsetDateTimeField, QuerySerializer, StrictSerializer, drf
from payments import validators as payment_validators
from payments.models import Consultation
from payments.serializers import ConsultationOutSerializer

from . import validators as v
from .models import Appointment, AppointmentTransition, OnDemandRequest, Schedule


class ScheduleInputSerializer(StrictSerializer):
    timezone = serializers.CharField(required=False, max_length=64, validators=[drf(v.validate_time_zone)])
    slot_minutes = serializers.IntegerField(
        required=False, min_value=v.SLOT_MINUTES_RANGE[0], max_value=v.SLOT_MINUTES_RANGE[1]
    )
    buffer_minutes = serializers.IntegerField(
        required=False, min_value=v.BUFFER_MINUTES_RANGE[0], max_value=v.BUFFER_MINUTES_RANGE[1]
    )
    horizon_days = serializers.IntegerField(
        required=False, min_value=v.HORIZON_DAYS_RANGE[0], max_value=v.HORIZON_DAYS_RANGE[1]
    )
    min_notice_minutes = serializers.IntegerField(
        required=False, min_value=v.MIN_NOTICE_MINUTES_RANGE[0], max_value=v.MIN_NOTICE_MINUTES_RANGE[1]
    )
    bookable = serializers.BooleanField(required=False)
    weekly_hours = serializers.JSONField(
        required=False, validators=[drf(payment_validators.validate_weekly_hours)]
    )
    exceptions = serializers.JSONField(required=False, validators=[drf(v.validate_exceptions)])


class ScheduleOutSerializer(serializers.ModelSerializer[Schedule]):
    weekly_hours = serializers.SerializerMethodField()
    exceptions = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = [
            "doctor_id",
            "timezone",
            "slot_minutes",
            "buffer_minutes",
            "horizon_days",
            "min_notice_minutes",
            "bookable",
            "weekly_hours",
            "exceptions",
        ]

    def get_weekly_hours(self, obj: Schedule) -> list[dict[str, Any]]:
        return [
            {"weekday": w.weekday, "start": w.start.strftime("%H:%M"), "end": w.end.strftime("%H:%M")}
            for w in obj.windows.all()
        ]

    def get_exceptions(self, obj: Schedule) -> list[dict[str, Any]]:
        return [
            {
                "date": e.date.isoformat(),
                "kind": e.kind,
                "start": e.start.strftime("%H:%M") if e.start else None,
                "end": e.end.strftime("%H:%M") if e.end else None,
            }
            for e in obj.exceptions.all()
        ]


class SlotQuerySerializer(QuerySerializer, StrictSerializer):
    start = serializers.DateField(help_text="first local date (YYYY-MM-DD) in tz")
    end = serializers.DateField(help_text="last local date (YYYY-MM-DD) in tz, at most 31 days in all")
    tz = serializers.CharField(max_length=64, help_text="the patient's IANA time zone")


class SlotOutSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


# A start without its UTC offset is refused (the services' code), not read in the server's zone.
STARTS_AT_CODES = {"starts_at": {"naive": "invalid_time_zone"}}


class AppointmentCreateInputSerializer(StrictSerializer):
    field_codes = STARTS_AT_CODES

    doctor_id = serializers.IntegerField(min_value=1)
    starts_at = OffsetDateTimeField(help_text="a slot's start, with its UTC offset")
    kind = serializers.ChoiceField(choices=Consultation.Kind.choices)
    reason = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=payment_validators.REASON_MAX
    )


class AppointmentRescheduleInputSerializer(StrictSerializer):
    field_codes = STARTS_AT_CODES

    starts_at = OffsetDateTimeField(help_text="the new slot's start, with its UTC offset")


class EmptyInputSerializer(StrictSerializer):
    """Actions without parameters still refuse unknown fields."""


class AppointmentTransitionOutSerializer(serializers.ModelSerializer[AppointmentTransition]):
    class Meta:
        model = AppointmentTransition
        fields = ["from_state", "to_state", "actor_id", "source", "note", "at"]


class AppointmentOutSerializer(serializers.ModelSerializer[Appointment]):
    class Meta:
        model = Appointment
        fields = [
            "id",
            "patient_id",
            "doctor_id",
            "consultation_id",
            "kind",
            "state",
            "starts_at",
            "ends_at",
            "hold_expires_at",
            "checked_in_at",
            "admitted_at",
            "created_at",
        ]


class AppointmentDetailOutSerializer(AppointmentOutSerializer):
    transitions = AppointmentTransitionOutSerializer(many=True, read_only=True)

    class Meta(AppointmentOutSerializer.Meta):
        fields = [*AppointmentOutSerializer.Meta.fields, "transitions"]


class FeedOutSerializer(serializers.Serializer[Any]):
    url = serializers.URLField(help_text="the private feed URL (shown once; keep it secret)")


# --- The waiting room (appointments.waiting_room, appointments.queue) ------------------------------
class WaitingEntryOutSerializer(serializers.Serializer[Any]):
    appointment_id = serializers.IntegerField()
    patient_id = serializers.IntegerField()
    display_name = serializers.CharField()
    checked_in_at = serializers.DateTimeField()
    starts_at = serializers.DateTimeField()
    position = serializers.IntegerField(help_text="1 is next (the doctor may admit in any order)")
    estimated_wait_seconds = serializers.IntegerField()


class WaitingRoomOutSerializer(serializers.Serializer[Any]):
    doctor_id = serializers.IntegerField()
    as_of = serializers.DateTimeField()
    queue = WaitingEntryOutSerializer(many=True)


class PositionOutSerializer(serializers.Serializer[Any]):
    appointment_id = serializers.IntegerField()
    doctor_id = serializers.IntegerField()
    position = serializers.IntegerField(help_text="1 is next")
    ahead = serializers.IntegerField(help_text="patients shown before this one")
    estimated_wait_seconds = serializers.IntegerField(help_text="see docs/appointments.md, The waiting room")
    as_of = serializers.DateTimeField()


class CheckInOutSerializer(serializers.Serializer[Any]):
    appointment = AppointmentDetailOutSerializer()
    position = PositionOutSerializer(allow_null=True)


class AdmitOutSerializer(serializers.Serializer[Any]):
    appointment = AppointmentDetailOutSerializer()
    consultation = ConsultationOutSerializer()


class OnDemandCreateInputSerializer(StrictSerializer):
    specialty = serializers.SlugField(max_length=64, help_text="a specialty's slug (GET /api/v1/specialties)")
    kind = serializers.ChoiceField(choices=Consultation.Kind.choices)
    reason = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=payment_validators.REASON_MAX
    )


class OnDemandOutSerializer(serializers.ModelSerializer[OnDemandRequest]):
    specialty: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True
    )

    class Meta:
        model = OnDemandRequest
        fields = [
            "id",
            "specialty",
            "kind",
            "reason",
            "state",
            "created_at",
            "expires_at",
            "ended_at",
            "doctor_id",
            "consultation_id",
        ]
