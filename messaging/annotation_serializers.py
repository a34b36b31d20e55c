"""REST shapes of reactions, mentions and pins (issue 24): inputs, and the output pieces the
conversation and message shapes (``serializers``) carry."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import StrictSerializer


class ReactionInputSerializer(StrictSerializer):
    emoji = serializers.CharField(
        max_length=16, help_text="one of the supported reactions (docs/protocol.md)"
    )


class MentionEntitySerializer(serializers.Serializer[Any]):
    user_id = serializers.IntegerField()
    offset = serializers.IntegerField(min_value=0)
    length = serializers.IntegerField(min_value=1)


class ReactionSummarySerializer(serializers.Serializer[Any]):
    emoji = serializers.CharField()
    count = serializers.IntegerField(min_value=1)
    user_ids = serializers.ListField(child=serializers.IntegerField())


class PinnedOutSerializer(serializers.Serializer[Any]):
    message_id = serializers.IntegerField()
    seq = serializers.IntegerField()
    pinned_by = serializers.IntegerField(
        allow_null=True, help_text="null once the pinner's account is erased"
    )
    pinned_at = serializers.DateTimeField()


class ReactionChangeOutSerializer(serializers.Serializer[Any]):
    conversation_id = serializers.IntegerField()
    message_id = serializers.IntegerField()
    seq = serializers.IntegerField()
    user_id = serializers.IntegerField()
    emoji = serializers.CharField()
    reactions = ReactionSummarySerializer(many=True)
    changed = serializers.BooleanField(help_text="false: it was already so (idempotent)")


class PinChangeOutSerializer(serializers.Serializer[Any]):
    conversation_id = serializers.IntegerField()
    message_id = serializers.IntegerField()
    seq = serializers.IntegerField()
    user_id = serializers.IntegerField()
    pinned = serializers.BooleanField()
    changed = serializers.BooleanField(help_text="false: it was already so (idempotent)")
