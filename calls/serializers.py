"""Shapes of the calls REST API (for the OpenAPI schema; data is built by the selectors)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import QuerySerializer


class CallParticipantOutSerializer(serializers.Serializer[Any]):
    user_id = serializers.IntegerField()
    role = serializers.ChoiceField(choices=["caller", "callee"])
    state = serializers.ChoiceField(choices=["ringing", "joined", "declined", "missed", "left"])
    joined_at = serializers.DateTimeField(allow_null=True)
    left_at = serializers.DateTimeField(allow_null=True)


class CallOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    caller_id = serializers.IntegerField()
    media = serializers.ChoiceField(choices=["audio", "video"])
    state = serializers.CharField()
    end_reason = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    ring_expires_at = serializers.DateTimeField()
    answered_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    duration = serializers.IntegerField(help_text="Whole seconds from answer to end.")
    participants = CallParticipantOutSerializer(many=True)


class QueryBooleanField(serializers.BooleanField):
    """A boolean query parameter that may be left out (None) but never given as ``null``."""

    NULL_VALUES = {None}


class CallListQuerySerializer(QuerySerializer):
    conversation_id = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    active = QueryBooleanField(required=False, allow_null=True, default=None)


class IceServerSerializer(serializers.Serializer[Any]):
    urls = serializers.ListField(child=serializers.CharField())
    username = serializers.CharField(required=False, allow_null=True)
    credential = serializers.CharField(required=False, allow_null=True)


class TurnCredentialsSerializer(serializers.Serializer[Any]):
    username = serializers.CharField(allow_null=True, help_text='"<expiry unix time>:<user id>"')
    password = serializers.CharField(allow_null=True, help_text="base64(HMAC-SHA1(secret, username))")
    ttl = serializers.IntegerField()
    expires_at = serializers.DateTimeField()
    uris = serializers.ListField(child=serializers.CharField())
    ice_servers = IceServerSerializer(many=True)
