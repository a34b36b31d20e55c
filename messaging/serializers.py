"""Input shapes of the messaging REST API (outputs come from ``selectors``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.validation import QuerySerializer, StrictSerializer

from .annotation_serializers import MentionEntitySerializer, PinnedOutSerializer, ReactionSummarySerializer
from .models import Attachment


class ConversationOpenInputSerializer(StrictSerializer):
    peer_id = serializers.IntegerField(min_value=1)
    e2ee = serializers.BooleanField(required=False, allow_null=True, default=None)


class HistoryQuerySerializer(QuerySerializer):
    after_seq = serializers.IntegerField(min_value=0, required=False)
    before_seq = serializers.IntegerField(min_value=1, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False, default=50)
    device_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1, required=False)


class BlockInputSerializer(StrictSerializer):
    user_id = serializers.IntegerField(min_value=1)


class MemberOutSerializer(serializers.Serializer[Any]):
    user_id = serializers.IntegerField()
    display_name = serializers.CharField()
    role = serializers.CharField()
    # None for a member in a block with the caller (either way): no receipts between them.
    delivered_seq = serializers.IntegerField(allow_null=True)
    read_seq = serializers.IntegerField(allow_null=True)


class AvatarOutSerializer(serializers.Serializer[Any]):
    attachment_id = serializers.IntegerField(
        help_text="download: GET /api/v1/attachments/{id} (image and thumbnail)"
    )
    content_type = serializers.CharField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)


class ConversationOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    e2ee = serializers.BooleanField()
    name = serializers.CharField()
    description = serializers.CharField()
    last_seq = serializers.IntegerField()
    last_message_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    unread_count = serializers.IntegerField()
    my_role = serializers.CharField()
    delivered_seq = serializers.IntegerField()
    read_seq = serializers.IntegerField()
    members = MemberOutSerializer(many=True)
    pinned = PinnedOutSerializer(
        many=True, help_text="pinned messages the caller may read, pinned first first"
    )
    avatar = AvatarOutSerializer(allow_null=True, help_text="groups: the avatar image, or null")


class MessageOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    seq = serializers.IntegerField()
    client_id = serializers.UUIDField()
    sender_id = serializers.IntegerField()
    kind = serializers.CharField()
    created_at = serializers.DateTimeField()
    body = serializers.CharField()
    attachments = serializers.ListField(child=serializers.DictField())
    reply_to = serializers.IntegerField(allow_null=True)
    edited_at = serializers.DateTimeField(allow_null=True)
    edit_count = serializers.IntegerField(
        min_value=0,
        help_text="how many times the text was edited (its versions: GET /api/v1/messages/{id}/versions); "
        "0 on a deleted message",
    )
    deleted = serializers.BooleanField()
    system = serializers.DictField(required=False)
    mentions = MentionEntitySerializer(many=True)
    reactions = ReactionSummarySerializer(many=True)
    ciphertext = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="end-to-end encrypted conversations only: this device's ciphertext (base64)",
    )


class MentionOutSerializer(serializers.Serializer[Any]):
    """An item of "mentions of me" (``GET /api/v1/mentions``)."""

    id = serializers.IntegerField(help_text="the mention's id (the list's order: newest first)")
    conversation_id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    message = MessageOutSerializer()


class MessageVersionOutSerializer(serializers.Serializer[Any]):
    version = serializers.IntegerField(help_text="1: the original text; the current one is edit_count + 1")
    body = serializers.CharField(allow_blank=True)
    written_at = serializers.DateTimeField(help_text="when this text became the message's")
    replaced_at = serializers.DateTimeField(
        allow_null=True, help_text="when an edit replaced it; null: current"
    )
    current = serializers.BooleanField()


class MessageVersionsOutSerializer(serializers.Serializer[Any]):
    message_id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    edit_count = serializers.IntegerField(min_value=0)
    deleted = serializers.BooleanField(help_text="a deleted message shows no versions (its tombstone only)")
    versions = MessageVersionOutSerializer(many=True, help_text="oldest first, the current text last")


class HistoryOutSerializer(serializers.Serializer[Any]):
    results = MessageOutSerializer(many=True)
    has_more = serializers.BooleanField()


class AttachmentOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    category = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    name = serializers.CharField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    duration = serializers.FloatField(allow_null=True)


class AttachmentUploadOutSerializer(AttachmentOutSerializer):
    state = serializers.ChoiceField(
        choices=Attachment.State.choices,
        help_text="processing: video/audio being stripped of metadata (not yet downloadable or "
        "sendable; watch for attachment.updated); ready; rejected: see rejection",
    )
    rejection = serializers.CharField(
        allow_null=True,
        help_text="rejected only: why (corrupt_media, processing_timeout, file_too_large, "
        "media_processing_unavailable)",
    )


class AttachmentLinkSerializer(AttachmentUploadOutSerializer):
    url = serializers.URLField(allow_null=True, help_text="null unless state is ready")
    expires_at = serializers.DateTimeField(allow_null=True)
    thumbnail_url = serializers.URLField(allow_null=True)
