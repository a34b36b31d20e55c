"""The consultation's clinical record: visit notes (with amendments) and prescriptions.

A doctor of a consultation writes one structured ``VisitNote`` for it (a draft, then signed;
the patient sees it once it is signed and shared). Signed notes are never changed: corrections
are ``NoteAmendment`` rows that reference the note. A ``Prescription`` is issued, and may be
cancelled with a reason; never edited. On PostgreSQL triggers enforce this (migration
``0002_append_only``, docs/record.md "Immutability"): UPDATE and DELETE of a signed note are
refused (except setting ``shared_at`` once), amendments are never updated or deleted, a
prescription's clinical fields are never updated and it is never deleted.

Models are thin: fields, constraints, indexes. Writes go through ``records.services``; reads
through ``records.selectors``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import validators as v


class VisitNote(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        SIGNED = "signed", "Signed"

    consultation = models.OneToOneField(
        "payments.Consultation", on_delete=models.PROTECT, related_name="visit_note"
    )
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="visit_notes")
    state = models.CharField(max_length=8, choices=State.choices, default=State.DRAFT)
    reason = models.TextField(max_length=v.NOTE_TEXT_MAX, blank=True, default="")
    findings = models.TextField(max_length=v.NOTE_TEXT_MAX, blank=True, default="")
    assessment = models.TextField(max_length=v.NOTE_TEXT_MAX, blank=True, default="")
    plan = models.TextField(max_length=v.NOTE_TEXT_MAX, blank=True, default="")
    follow_up = models.TextField(max_length=v.NOTE_TEXT_MAX, blank=True, default="")
    # Optional coded entries: [{"system": "ICD-10", "code": "J06.9", "display": "..."}].
    codes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    signed_at = models.DateTimeField(null=True, blank=True)
    shared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(state__in=v.NOTE_STATES), name="visit_note_state_valid"),
            models.CheckConstraint(
                condition=Q(state="draft", signed_at__isnull=True)
                | Q(state="signed", signed_at__isnull=False),
                name="visit_note_signed_has_time",
            ),
            models.CheckConstraint(
                condition=Q(shared_at__isnull=True) | Q(state="signed"),
                name="visit_note_shared_only_signed",
            ),
        ]
        indexes = [models.Index(fields=["author", "-id"], name="visit_note_author_recent")]

    def __str__(self) -> str:
        return f"visit note {self.pk} ({self.state})"

    @property
    def is_signed(self) -> bool:
        return self.state == self.State.SIGNED


class NoteAmendment(models.Model):
    """A correction of a signed note: who, when, why, what (append-only)."""

    note = models.ForeignKey(VisitNote, on_delete=models.PROTECT, related_name="amendments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="note_amendments"
    )
    reason = models.TextField(max_length=v.AMENDMENT_REASON_MAX)
    text = models.TextField(max_length=v.NOTE_TEXT_MAX)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=~Q(reason=""), name="note_amendment_reason_not_blank"),
            models.CheckConstraint(condition=~Q(text=""), name="note_amendment_text_not_blank"),
        ]

    def __str__(self) -> str:
        return f"amendment {self.pk} of note {self.note_id}"


class Prescription(models.Model):
    class Status(models.TextChoices):
        ISSUED = "issued", "Issued"
        CANCELLED = "cancelled", "Cancelled"

    consultation = models.ForeignKey(
        "payments.Consultation", on_delete=models.PROTECT, related_name="prescriptions"
    )
    doctor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="prescriptions_written"
    )
    patient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="prescriptions_received"
    )
    # Human-readable and unique ("RX-7K3Q-9M2D"); the verification code is the secret a
    # pharmacist's check uses (the QR code carries it), never guessable from the number.
    number = models.CharField(max_length=16, unique=True)
    verification_code = models.CharField(max_length=v.VERIFICATION_CODE_LENGTH, unique=True)
    # The prescriber's credentials as they were when it was issued (the doctor's profile may
    # change or go with an erased account; the prescription must still say who signed it).
    doctor_licence_number = models.CharField(max_length=64)
    jurisdiction = models.CharField(max_length=64)
    medication_name = models.CharField(max_length=v.MEDICATION_NAME_MAX)
    strength = models.CharField(max_length=v.SHORT_FIELD_MAX, blank=True, default="")
    form = models.CharField(max_length=v.SHORT_FIELD_MAX, blank=True, default="")
    dose = models.CharField(max_length=v.SHORT_FIELD_MAX)
    route = models.CharField(max_length=v.SHORT_FIELD_MAX, blank=True, default="")
    frequency = models.CharField(max_length=v.SHORT_FIELD_MAX)
    duration = models.CharField(max_length=v.SHORT_FIELD_MAX, blank=True, default="")
    quantity = models.PositiveIntegerField()
    repeats = models.PositiveSmallIntegerField(default=0)
    instructions = models.TextField(max_length=v.INSTRUCTIONS_MAX, blank=True, default="")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ISSUED)
    issued_at = models.DateTimeField(default=timezone.now)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    cancel_reason = models.TextField(max_length=v.CANCEL_REASON_MAX, blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=v.PRESCRIPTION_STATUSES), name="prescription_status_valid"
            ),
            models.CheckConstraint(condition=Q(quantity__gte=1), name="prescription_quantity_positive"),
            models.CheckConstraint(condition=~Q(dose=""), name="prescription_dose_not_blank"),
            models.CheckConstraint(
                condition=~Q(medication_name=""), name="prescription_medication_not_blank"
            ),
            models.CheckConstraint(condition=~Q(frequency=""), name="prescription_frequency_not_blank"),
            models.CheckConstraint(
                condition=Q(status="issued", cancelled_at__isnull=True)
                | (Q(status="cancelled", cancelled_at__isnull=False) & ~Q(cancel_reason="")),
                name="prescription_cancel_has_time_and_reason",
            ),
            models.CheckConstraint(
                condition=~Q(patient=models.F("doctor")), name="prescription_not_for_self"
            ),
        ]
        indexes = [
            models.Index(fields=["patient", "-id"], name="prescription_patient_recent"),
            models.Index(fields=["doctor", "-id"], name="prescription_doctor_recent"),
            models.Index(fields=["consultation", "id"], name="prescription_consultation"),
        ]

    def __str__(self) -> str:
        return f"prescription {self.number} ({self.status})"

    @property
    def is_cancelled(self) -> bool:
        return self.status == self.Status.CANCELLED
