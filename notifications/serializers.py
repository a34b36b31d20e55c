"""Input and output shapes of the push REST API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import OffsetDateTimeField, StrictSerializer


class MuteInputSerializer(StrictSerializer):
    field_codes = {"until": {"naive": "invalid_mute_until"}}

    # Omitted or null: muted until unmuted. With its UTC offset.
    until = OffsetDateTimeField(required=False, allow_null=True, default=None)


class MuteOutSerializer(serializers.Serializer[Any]):
    conversation_id = serializers.IntegerField()
    muted = serializers.BooleanField()
    muted_until = serializers.DateTimeField(allow_null=True)


class PreferenceSerializer(StrictSerializer):
    previews = serializers.BooleanField()
    mentions_when_muted = serializers.BooleanField(
        required=False,
        help_text="a mention of me pushes even in a conversation I muted (default true; left out: unchanged)",
    )
