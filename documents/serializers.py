"""Input and output shapes of the documents REST API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import QuerySerializer, StrictSerializer

from . import validators as v
from .models import Document


# --- Input ----------------------------------------------------------------------------------
class DocumentRequestInputSerializer(StrictSerializer):
    field_codes = {"kind": {"invalid_choice": "invalid_kind"}}

    kind = serializers.ChoiceField(
        choices=Document.Kind.choices,
        help_text="receipt (consultation_id, payment_id?), consultation_summary (consultation_id, "
        "include_chat?) or prescription (prescription_id)",
    )
    consultation_id = serializers.IntegerField(
        min_value=1, required=False, help_text="receipt and consultation_summary: the consultation"
    )
    payment_id = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="receipt: the payment or refund (`payment.id` of a receipt in `GET documents`); "
        "omitted: the consultation's payment",
    )
    prescription_id = serializers.IntegerField(min_value=1, required=False, help_text="prescription")
    include_chat = serializers.BooleanField(
        required=False,
        default=False,
        help_text="consultation_summary: include the consultation's chat (the patient only; such a "
        "summary is visible to the patient alone)",
    )


class DocumentListQuerySerializer(QuerySerializer, StrictSerializer):
    kind = serializers.ChoiceField(choices=v.KINDS, required=False)
    consultation_id = serializers.IntegerField(min_value=1, required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)


# --- Output ---------------------------------------------------------------------------------
class DocumentPaymentOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(
        help_text="the payment's (or refund's) id: `payment_id` of a receipt request"
    )
    kind = serializers.ChoiceField(choices=v.RECEIPT_ENTRY_KINDS, help_text="charge (a payment) or refund")
    amount = serializers.IntegerField(help_text="minor units, positive for both kinds")
    currency = serializers.CharField()
    created_at = serializers.DateTimeField()


class DocumentOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Document.Kind.choices)
    status = serializers.ChoiceField(
        choices=Document.Status.choices, help_text="pending (queued), ready (downloadable) or failed"
    )
    error = serializers.CharField(allow_null=True, help_text="failed: why (a code)")
    consultation_id = serializers.IntegerField(allow_null=True)
    payment = DocumentPaymentOutSerializer(allow_null=True, help_text="receipts: the payment or refund")
    prescription_id = serializers.IntegerField(allow_null=True)
    include_chat = serializers.BooleanField()
    content_type = serializers.CharField(help_text="always application/pdf")
    size = serializers.IntegerField(allow_null=True, help_text="bytes, once generated")
    sha256 = serializers.CharField(allow_null=True, help_text="of the PDF, once generated")
    created_at = serializers.DateTimeField()
    requested_at = serializers.DateTimeField(help_text="the last time it was asked for (or made)")
    generated_at = serializers.DateTimeField(allow_null=True)


class DocumentLinkOutSerializer(DocumentOutSerializer):
    url = serializers.URLField(allow_null=True, help_text="a short-lived download link; null unless ready")
    expires_at = serializers.DateTimeField(allow_null=True)
