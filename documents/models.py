"""Generated documents: receipts, consultation summaries and prescriptions as PDF files.

A ``Document`` is the file of one record (``key``: a receipt per payment or refund, a summary
per consultation with or without the chat, one per prescription). It is rendered by the Celery
worker from the record alone (``documents.services.document_render``), so rendering it again
gives the same bytes while the record is the same. Stored like chat attachments (the default
storage: local disk or S3), served through short-lived signed links to the people who may see
the record. Models are thin; writes go through ``documents.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from . import validators as v


class Document(models.Model):
    class Kind(models.TextChoices):
        RECEIPT = v.RECEIPT, "Receipt"
        CONSULTATION_SUMMARY = v.CONSULTATION_SUMMARY, "Consultation summary"
        PRESCRIPTION = v.PRESCRIPTION, "Prescription"

    class Status(models.TextChoices):
        PENDING = v.PENDING, "Pending (queued for the worker)"
        READY = v.READY, "Ready"
        FAILED = v.FAILED, "Failed"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    # The record this is the document of (validators.document_key): at most one per record.
    key = models.CharField(max_length=80, unique=True)
    # Whom the document is about, and the doctor of the record: who may see it (the patient
    # alone when it carries the chat), what export and erasure find.
    patient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    doctor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    consultation = models.ForeignKey(
        "payments.Consultation", on_delete=models.PROTECT, null=True, blank=True, related_name="documents"
    )
    # A receipt's payment or refund (a ledger entry of kind charge or refund).
    payment = models.ForeignKey(
        "payments.LedgerEntry", on_delete=models.PROTECT, null=True, blank=True, related_name="documents"
    )
    prescription = models.ForeignKey(
        "records.Prescription", on_delete=models.PROTECT, null=True, blank=True, related_name="documents"
    )
    include_chat = models.BooleanField(default=False)
    # Who asked last (null: the system, e.g. a receipt made when a payment succeeded).
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    # Why the last rendering failed (a code, never a traceback).
    error = models.CharField(max_length=40, blank=True, default="")
    file = models.FileField(max_length=200, blank=True, default="")
    sha256 = models.CharField(max_length=64, blank=True, default="")
    size = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    requested_at = models.DateTimeField()
    generated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("regenerate_document", "Can regenerate a generated document")]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=v.KINDS), name="document_kind_valid"),
            models.CheckConstraint(condition=Q(status__in=v.STATUSES), name="document_status_valid"),
            models.CheckConstraint(
                condition=~Q(kind=v.RECEIPT) | (Q(payment__isnull=False) & Q(consultation__isnull=False)),
                name="document_receipt_has_payment",
            ),
            models.CheckConstraint(
                condition=~Q(kind=v.CONSULTATION_SUMMARY) | Q(consultation__isnull=False),
                name="document_summary_has_consultation",
            ),
            models.CheckConstraint(
                condition=~Q(kind=v.PRESCRIPTION) | Q(prescription_id__isnull=False),
                name="document_prescription_has_id",
            ),
            models.CheckConstraint(
                condition=Q(include_chat=False) | Q(kind=v.CONSULTATION_SUMMARY),
                name="document_chat_only_in_summaries",
            ),
            models.CheckConstraint(
                condition=~Q(status=v.READY)
                | (~Q(file="") & Q(sha256__regex=r"^[0-9a-f]{64}$") & Q(generated_at__isnull=False)),
                name="document_ready_has_file",
            ),
        ]
        indexes = [
            models.Index(fields=["patient", "-id"], name="document_patient_recent"),
            models.Index(fields=["doctor", "-id"], name="document_doctor_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk} ({self.status})"
