"""Input and output shapes of the clinical record's REST API.

Inputs only check JSON types and unknown fields: the services give each rule its own code
(``dose_required``, ``quantity_out_of_range``, ``note_empty``...; ``records.validators``).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import StrictSerializer

from .models import NoteAmendment, Prescription, VisitNote
from .selectors import ERASED_NAME, VERIFY_PATH


def _text(help_text: str) -> serializers.CharField:
    return serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, help_text=help_text)


class NoteCodeSerializer(StrictSerializer):
    system = serializers.CharField(help_text="the code system, e.g. ICD-10, SNOMED-CT or a URI (≤ 100)")
    code = serializers.CharField(help_text="the code in that system (≤ 64)")
    display = serializers.CharField(required=False, allow_blank=True, help_text="its label (≤ 255)")


class NoteInputSerializer(StrictSerializer):
    """A draft's fields; each optional (a PATCH changes the ones given). Free text ≤ 10000."""

    reason = _text("why the patient consulted")
    findings = _text("history and examination findings")
    assessment = _text("the doctor's assessment (diagnosis)")
    plan = _text("treatment and advice")
    follow_up = _text("when and how to follow up")
    codes = NoteCodeSerializer(many=True, required=False, help_text="optional coded entries (≤ 50)")


class NoteSignInputSerializer(StrictSerializer):
    share = serializers.BooleanField(
        required=False, default=False, help_text="share with the patient at once (default false)"
    )


class AmendmentInputSerializer(StrictSerializer):
    reason = _text("why the note is corrected (required, ≤ 1000)")
    text = _text("the correction (required, ≤ 10000)")


class AmendmentOutSerializer(serializers.ModelSerializer[NoteAmendment]):
    author_name = serializers.SerializerMethodField()

    class Meta:
        model = NoteAmendment
        fields = ["id", "author_id", "author_name", "created_at", "reason", "text"]

    def get_author_name(self, obj: NoteAmendment) -> str:
        return ERASED_NAME if obj.author.is_deleted else obj.author.display_name


class NoteOutSerializer(serializers.ModelSerializer[VisitNote]):
    doctor_id = serializers.IntegerField(source="author_id")
    codes = NoteCodeSerializer(many=True)
    amendments = AmendmentOutSerializer(many=True)

    class Meta:
        model = VisitNote
        fields = [
            "id",
            "consultation_id",
            "doctor_id",
            "state",
            "reason",
            "findings",
            "assessment",
            "plan",
            "follow_up",
            "codes",
            "created_at",
            "updated_at",
            "signed_at",
            "shared_at",
            "amendments",
        ]


class PrescriptionInputSerializer(StrictSerializer):
    medication_name = _text("required, ≤ 200")
    strength = _text("e.g. 500 mg (≤ 100)")
    form = _text("e.g. tablet (≤ 100)")
    dose = _text("required, e.g. 1 tablet (≤ 100)")
    route = _text("e.g. oral (≤ 100)")
    frequency = _text("required, e.g. three times a day (≤ 100)")
    duration = _text("e.g. 5 days (≤ 100)")
    quantity = serializers.IntegerField(required=False, help_text="units to dispense, required (1..max)")
    repeats = serializers.IntegerField(required=False, help_text="refills allowed (0..max, default 0)")
    instructions = _text("for the patient (≤ 2000)")
    jurisdiction = serializers.CharField(
        required=False,
        help_text="where it is for; when given it must be the doctor's verified jurisdiction",
    )


class PrescriptionCancelInputSerializer(StrictSerializer):
    reason = _text("why it is cancelled (required, ≤ 1000)")


class PrescriptionOutSerializer(serializers.ModelSerializer[Prescription]):
    doctor_name = serializers.SerializerMethodField()
    verify_path = serializers.SerializerMethodField()

    class Meta:
        model = Prescription
        fields = [
            "id",
            "number",
            "verification_code",
            "verify_path",
            "consultation_id",
            "patient_id",
            "doctor_id",
            "doctor_name",
            "doctor_licence_number",
            "jurisdiction",
            "medication_name",
            "strength",
            "form",
            "dose",
            "route",
            "frequency",
            "duration",
            "quantity",
            "repeats",
            "instructions",
            "status",
            "issued_at",
            "cancelled_at",
            "cancel_reason",
        ]

    def get_doctor_name(self, obj: Prescription) -> str:
        return ERASED_NAME if obj.doctor.is_deleted else obj.doctor.display_name

    def get_verify_path(self, obj: Prescription) -> str:
        return VERIFY_PATH.format(code=obj.verification_code)


class PrescriberSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    licence_number = serializers.CharField()
    jurisdiction = serializers.CharField()


class VerificationOutSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=["valid", "cancelled"])
    number = serializers.CharField()
    issued_at = serializers.DateTimeField()
    prescriber = PrescriberSerializer()
