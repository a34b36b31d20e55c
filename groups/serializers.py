"""Input shapes of the groups API (rules live in messaging/validators.py and groups/services.py)."""

from __future__ import annotations

from rest_framework import serializers

from core.validation import StrictSerializer, drf
from messaging import validators as mv


class GroupCreateInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, validators=[drf(mv.validate_group_name)])
    description = serializers.CharField(
        max_length=2000,
        required=False,
        allow_blank=True,
        default="",
        validators=[drf(mv.validate_group_description)],
    )
    member_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=1000
    )
    history_visible_to_new_members = serializers.BooleanField(required=False, default=False)
    e2ee = serializers.BooleanField(required=False, default=False)


class GroupUpdateInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False, validators=[drf(mv.validate_group_name)])
    description = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, validators=[drf(mv.validate_group_description)]
    )
    history_visible_to_new_members = serializers.BooleanField(required=False)


class MemberAddInputSerializer(StrictSerializer):
    user_id = serializers.IntegerField(min_value=1)


class MemberRoleInputSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=mv.MEMBER_ROLES)


class AvatarSetInputSerializer(StrictSerializer):
    attachment_id = serializers.IntegerField(
        min_value=1,
        max_value=2**63 - 1,
        help_text="your own image upload (POST /api/v1/attachments), not sent",
    )
