"""Shapes of the ratings REST API (outputs come from ``selectors.review_data`` and
``selectors.public_review_data``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import StrictSerializer

from .models import COMMENT_MAX, REPLY_MAX, Review


class ReviewCreateInputSerializer(StrictSerializer):
    stars = serializers.IntegerField(help_text="1 to 5")
    comment = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, help_text=f"at most {COMMENT_MAX} characters"
    )


class ReviewUpdateInputSerializer(StrictSerializer):
    stars = serializers.IntegerField(required=False, help_text="1 to 5")
    comment = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)


class ReviewReplyInputSerializer(StrictSerializer):
    text = serializers.CharField(
        allow_blank=True,  # blank or spaces: the service's ``empty_reply``
        trim_whitespace=False,
        help_text=f"not blank, at most {REPLY_MAX} characters",
    )


class ReplyOutSerializer(serializers.Serializer[Any]):
    text = serializers.CharField()
    created_at = serializers.DateTimeField()


class ReviewOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    consultation_id = serializers.IntegerField()
    patient_id = serializers.IntegerField()
    doctor_id = serializers.IntegerField()
    stars = serializers.IntegerField()
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()
    edited_at = serializers.DateTimeField(allow_null=True, help_text="the patient's last change")
    editable_until = serializers.DateTimeField(help_text="the patient may change it until then")
    reply = ReplyOutSerializer(allow_null=True, help_text="the doctor's one reply")
    hidden = serializers.BooleanField(help_text="hidden by staff: not in the doctor's list or average")
    hidden_reason = serializers.ChoiceField(choices=Review.HiddenReason.choices, allow_null=True)


class PublicReviewOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    stars = serializers.IntegerField()
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()
    edited = serializers.BooleanField()
    reply = ReplyOutSerializer(allow_null=True)
