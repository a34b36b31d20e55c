"""Shapes of the reports REST API (outputs come from ``selectors.report_data`` / ``notice_data``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import StrictSerializer

from .models import REASONS, SHARED_TEXT_MAX, TEXT_MAX, ModerationNotice, Report

BIGINT = 2**63 - 1


class ReportCreateInputSerializer(StrictSerializer):
    # The codes the service gives these rules (docs/protocol.md), not DRF's ``invalid``.
    field_codes = {
        "target": {"invalid_choice": "invalid_report_target"},
        "reason": {"invalid_choice": "invalid_reason"},
        "text": {"max_length": "report_text_too_long"},
        "shared_text": {"max_length": "report_text_too_long"},
    }

    target = serializers.ChoiceField(choices=Report.Target.choices, help_text="message or user")
    message_id = serializers.IntegerField(
        min_value=1, max_value=BIGINT, required=False, help_text="target message: the message reported"
    )
    user_id = serializers.IntegerField(
        min_value=1, max_value=BIGINT, required=False, help_text="target user: the user reported"
    )
    reason = serializers.ChoiceField(choices=Report.Reason.choices, help_text=", ".join(REASONS))
    text = serializers.CharField(
        required=False, allow_blank=True, max_length=TEXT_MAX, trim_whitespace=False, help_text="free text"
    )
    shared_text = serializers.CharField(
        required=False,
        allow_blank=False,
        max_length=SHARED_TEXT_MAX,
        trim_whitespace=False,
        help_text="end-to-end encrypted conversations only: the decrypted text the reporter chooses "
        "to share (stored marked unverified)",
    )


class ReportOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    target = serializers.ChoiceField(choices=Report.Target.choices)
    message_id = serializers.IntegerField(allow_null=True)
    conversation_id = serializers.IntegerField(allow_null=True)
    user_id = serializers.IntegerField(help_text="the user reported (a message's sender)")
    reason = serializers.ChoiceField(choices=Report.Reason.choices)
    text = serializers.CharField(allow_blank=True)
    shared_text = serializers.CharField(allow_null=True)
    unverified = serializers.BooleanField(
        help_text="true when shared_text is given: the server cannot check it"
    )
    status = serializers.ChoiceField(choices=Report.Status.choices)
    outcome = serializers.ChoiceField(
        choices=Report.Action.choices, allow_null=True, help_text="resolved: what the moderators did"
    )
    created_at = serializers.DateTimeField()
    resolved_at = serializers.DateTimeField(allow_null=True)


class NoticeOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    action = serializers.ChoiceField(choices=ModerationNotice.Action.choices)
    text = serializers.CharField()
    muted_until = serializers.DateTimeField(allow_null=True, help_text="mute: until when sending is refused")
    created_at = serializers.DateTimeField()
