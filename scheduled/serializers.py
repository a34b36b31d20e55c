"""Shapes of the scheduled messages REST API (outputs come from ``selectors.scheduled_data``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import OffsetDateTimeField, QuerySerializer, StrictSerializer

from .models import ScheduledMessage

# The services' codes for these rules (docs/protocol.md), not DRF's ``invalid``: a blank body is
# ``empty_message`` (``messaging.validators.validate_body``), a time without its offset
# ``invalid_send_at``.
SEND_AT_CODES = {"send_at": {"naive": "invalid_send_at"}}


class ScheduledCreateInputSerializer(StrictSerializer):
    field_codes = SEND_AT_CODES

    conversation_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    body = serializers.CharField(allow_blank=True, trim_whitespace=False)
    send_at = OffsetDateTimeField(help_text="when to send it, with its UTC offset")
    client_id = serializers.UUIDField(
        required=False, help_text="the message's client_id when sent; repeating it returns the same row"
    )


class ScheduledUpdateInputSerializer(StrictSerializer):
    field_codes = SEND_AT_CODES

    body = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    send_at = OffsetDateTimeField(required=False, help_text="with its UTC offset")


class ScheduledListQuerySerializer(QuerySerializer):
    state = serializers.ChoiceField(choices=ScheduledMessage.State.choices, required=False)


class ScheduledOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    client_id = serializers.UUIDField()
    body = serializers.CharField(help_text="empty once sent (the message has it) or cancelled")
    send_at = serializers.DateTimeField()
    state = serializers.ChoiceField(choices=ScheduledMessage.State.choices)
    message_id = serializers.IntegerField(allow_null=True, help_text="the message it became")
    failure_code = serializers.CharField(
        allow_null=True, help_text="failed: the send path's error code at send time"
    )
    consultation_id = serializers.IntegerField(
        allow_null=True,
        help_text="the consultation open in the conversation when it was scheduled; if it has ended "
        "when the message is due, the message fails with consultation_closed",
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
