"""Messaging: conversations (direct and group), members, messages, the per-conversation event log.

Ordering: every conversation row carries two counters, taken under its row lock inside the
writing transaction: ``last_seq`` (messages, gapless, the order clients show) and
``last_event`` (everything a member may need to replay: new messages, edits, deletions,
receipts, membership changes). Because both are assigned under the same lock that orders
the commits, no reader can see event N+1 before event N: ``sync`` is a simple range scan.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from . import validators as v


class Conversation(models.Model):
    class Kind(models.TextChoices):
        DIRECT = "direct", "Direct"
        GROUP = "group", "Group"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    # "<smaller user id>:<larger user id>" for direct conversations: one per pair.
    direct_key = models.CharField(max_length=64, null=True, blank=True, unique=True)
    e2ee = models.BooleanField(default=False)
    name = models.CharField(max_length=v.GROUP_NAME_MAX, blank=True, default="")
    description = models.TextField(max_length=v.GROUP_DESCRIPTION_MAX, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # New group members see history from their join (False) or all of it (True).
    history_visible_to_new_members = models.BooleanField(default=False)
    last_seq = models.BigIntegerField(default=0)
    last_event = models.BigIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True)
    legal_hold = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Groups: an image upload set by an admin (``groups/avatars.py``): its file and thumbnail are
    # the upload's (metadata stripped); members download it as an attachment.
    avatar = models.ForeignKey(
        "messaging.Attachment", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        permissions = [
            ("manage_legal_hold", "Can place or release a legal hold"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=v.CONVERSATION_KINDS), name="conversation_kind_valid"
            ),
            models.CheckConstraint(
                condition=(Q(kind="direct") & Q(direct_key__isnull=False))
                | (Q(kind="group") & Q(direct_key__isnull=True)),
                name="conversation_direct_key_iff_direct",
            ),
            models.CheckConstraint(
                condition=Q(kind="direct") | ~Q(name=""), name="conversation_group_has_name"
            ),
            models.CheckConstraint(condition=Q(last_seq__gte=0), name="conversation_last_seq_non_negative"),
            models.CheckConstraint(
                condition=Q(last_event__gte=F("last_seq")), name="conversation_events_cover_messages"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} conversation {self.pk}"


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    # Indexed by the ``membership_unique`` constraint, which leads with it: a single-column index
    # as well was one more entry to write for every membership row version that is not a HOT
    # update (issue 26).
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)
    # The conversation's last seq and event number when this member (last) joined.
    joined_seq = models.BigIntegerField(default=0)
    joined_event = models.BigIntegerField(default=0)
    # The member may read messages with seq > visible_after_seq: fixed when they join (0 when
    # the group shared its history then, else joined_seq). A later change of the group's
    # setting applies to members who join later, never to this row.
    visible_after_seq = models.BigIntegerField(default=0, db_default=0)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Removal: the member keeps read access up to left_seq / left_event, nothing after.
    left_at = models.DateTimeField(null=True, blank=True)
    left_seq = models.BigIntegerField(null=True, blank=True)
    left_event = models.BigIntegerField(null=True, blank=True)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    delivered_seq = models.BigIntegerField(default=0)
    read_seq = models.BigIntegerField(default=0)
    muted_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "user"], name="membership_unique"),
            models.CheckConstraint(condition=Q(role__in=v.MEMBER_ROLES), name="membership_role_valid"),
            models.CheckConstraint(
                condition=Q(read_seq__gte=0) & Q(delivered_seq__gte=0), name="membership_cursors_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(visible_after_seq__gte=0) & Q(visible_after_seq__lte=F("joined_seq")),
                name="membership_visible_after_within_join",
            ),
            models.CheckConstraint(
                condition=(Q(left_at__isnull=True) & Q(left_seq__isnull=True) & Q(left_event__isnull=True))
                | (Q(left_at__isnull=False) & Q(left_seq__isnull=False) & Q(left_event__isnull=False)),
                name="membership_left_fields_together",
            ),
        ]
        indexes = [
            models.Index(
                fields=["user", "conversation"],
                name="membership_active_by_user",
                condition=Q(left_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.conversation_id}"

    @property
    def is_active(self) -> bool:
        return self.left_at is None


class Message(models.Model):
    class Kind(models.TextChoices):
        TEXT = "text", "Text"
        SYSTEM = "system", "System"

    # No single-column indexes where a composite one leads with the column (conversation: the
    # seq constraint; sender: the client_id constraint): every send pays for each index.
    # No database foreign key to the conversation (migration 0016, issue 26): every writer
    # numbers the message from its conversation's row, locked and updated in the same
    # transaction (``last_seq``), so the conversation exists when the message commits, and
    # conversations are never deleted (Django's CASCADE still applies if one ever is).
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False, db_constraint=False
    )
    seq = models.BigIntegerField()
    # Users are never hard-deleted (erasure blanks them), so history keeps its sender.
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    client_id = models.UUIDField()
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TEXT)
    body = models.TextField(blank=True, default="")
    # System messages (member.added, group.updated, ...): structured, no free text.
    system = models.JSONField(null=True, blank=True)
    reply_to = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    # How many times the text was edited: its earlier texts are ``MessageVersion`` rows
    # (``messaging/services/edit.py``). A database default: the send statement never writes it.
    edit_count = models.PositiveIntegerField(default=0, db_default=0)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Mention entities the sender sent ([{"user_id", "offset", "length"}], checked members;
    # ``messaging/services/mentions.py``), NULL without mentions. Written by the send statement.
    mentions = models.JSONField(null=True, blank=True)
    # The reactions' summary as clients see it ([{"emoji", "count", "user_ids"}], first reacted
    # first), rewritten from ``Reaction`` rows under the conversation's lock by every change
    # (``messaging/services/reactions.py``): history and sync read it without a query.
    reactions = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_seq_unique"),
            models.UniqueConstraint(fields=["sender", "client_id"], name="message_client_id_unique"),
            models.CheckConstraint(condition=Q(seq__gte=1), name="message_seq_positive"),
            models.CheckConstraint(condition=Q(kind__in=v.MESSAGE_KINDS), name="message_kind_valid"),
            models.CheckConstraint(
                condition=Q(deleted_at__isnull=True) | Q(body=""), name="message_deleted_has_no_body"
            ),
            models.CheckConstraint(
                condition=Q(kind="system", system__isnull=False) | Q(kind="text", system__isnull=True),
                name="message_system_payload_iff_system",
            ),
        ]
        indexes = [
            # Replies only (most messages reply to nothing): for SET_NULL when a message goes.
            models.Index(fields=["reply_to"], name="message_reply_to", condition=Q(reply_to__isnull=False)),
            # Retention: the live text messages by age (tombstones leave the index).
            models.Index(
                fields=["created_at"],
                name="message_retention_due",
                condition=Q(deleted_at__isnull=True, kind="text"),
            ),
        ]

    def __str__(self) -> str:
        return f"message {self.conversation_id}#{self.seq}"


class MessageVersion(models.Model):
    """An earlier text of a message (issue 23, "Edit history"), written by the one edit path
    (``messaging.services.edit``): an edit keeps the text it replaces (``reason`` edit), an
    unsend keeps the text it erases from the message (``reason`` delete; members see the
    tombstone only, never this row). Kept as long as the message would be: retention
    (``MESSAGE_RETENTION_DAYS``) purges them with the message unless the conversation is under
    a legal hold; erasure of the sender's account deletes them.

    ``number``: 1 is the original text; the message's current text is ``edit_count + 1``.
    ``written_at``: when this text became the message's; ``edited_at``: when it was replaced
    (or erased) by ``editor``."""

    class Reason(models.TextChoices):
        EDIT = "edit", "Edited"
        DELETE = "delete", "Deleted"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="versions", db_index=False)
    number = models.PositiveIntegerField()
    body = models.TextField()
    written_at = models.DateTimeField()
    edited_at = models.DateTimeField()
    editor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=8, choices=Reason.choices, default=Reason.EDIT)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="message_version_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="message_version_number_positive"),
            models.CheckConstraint(
                condition=Q(reason__in=["edit", "delete"]), name="message_version_reason_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"version {self.number} of message {self.message_id}"


class Event(models.Model):
    """The per-conversation replay log behind ``sync``: append-only."""

    class Kind(models.TextChoices):
        MESSAGE_NEW = "message.new", "message.new"
        MESSAGE_UPDATED = "message.updated", "message.updated"
        RECEIPT = "receipt", "receipt"
        MEMBER_ADDED = "member.added", "member.added"
        MEMBER_REMOVED = "member.removed", "member.removed"
        MEMBER_LEFT = "member.left", "member.left"
        MEMBER_ROLE_CHANGED = "member.role_changed", "member.role_changed"
        GROUP_UPDATED = "group.updated", "group.updated"
        IDENTITY_CHANGED = "identity.changed", "identity.changed"
        DEVICE_ADDED = "device.added", "device.added"
        REACTION_ADDED = "reaction.added", "reaction.added"
        REACTION_REMOVED = "reaction.removed", "reaction.removed"
        MESSAGE_PINNED = "message.pinned", "message.pinned"
        MESSAGE_UNPINNED = "message.unpinned", "message.unpinned"

    # Indexed by the number constraint, which leads with it. No database foreign key (migration
    # 0016, issue 26): as a message's, an event's number is taken from its conversation's row,
    # locked and updated in the same transaction (``last_event``).
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="events", db_index=False, db_constraint=False
    )
    number = models.BigIntegerField()
    kind = models.CharField(max_length=24, choices=Kind.choices)
    # member.* / group.updated events point at their system message (which has the seq).
    # No index (no query reads events by message: sync reads them by conversation and number)
    # and no database foreign key (migration 0016, issue 26): the send statement writes a
    # message.new event from the RETURNING of its message's insert, the other writers with the
    # message they created or locked in the same transaction, and messages are never deleted
    # (retention and unsend leave tombstones).
    message = models.ForeignKey(
        Message,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    # Receipts: {"user_id", "delivered_seq"?, "read_seq"?}; identity.changed / device.added:
    # {"user_id", "device_id"}. Never message content.
    data = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "number"], name="event_number_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="event_number_positive"),
            models.CheckConstraint(condition=Q(kind__in=v.EVENT_KINDS), name="event_kind_valid"),
            models.CheckConstraint(
                condition=Q(kind__in=v.DATA_EVENT_KINDS, data__isnull=False)
                | (~Q(kind__in=v.DATA_EVENT_KINDS) & Q(message__isnull=False)),
                name="event_payload_present",
            ),
        ]

    def __str__(self) -> str:
        return f"event {self.conversation_id}#{self.number} {self.kind}"


class Block(models.Model):
    """``blocker`` does not want contact from ``blocked``: no new direct conversation, no sends."""

    blocker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    blocked = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_unique"),
            models.CheckConstraint(condition=~Q(blocker=F("blocked")), name="block_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.blocker_id} blocks {self.blocked_id}"


def _attachment_key(instance: Attachment, filename: str) -> str:
    """Storage keys carry no user-supplied text: uploader id and a random name."""
    import uuid as _uuid

    extension = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
    return f"attachments/{instance.uploader_id}/{_uuid.uuid4().hex}.{extension}"


class Attachment(models.Model):
    """A file uploaded for chat. Belongs to its uploader until attached to a message."""

    class Category(models.TextChoices):
        IMAGE = "image", "Image"
        VIDEO = "video", "Video"
        AUDIO = "audio", "Audio"
        DOCUMENT = "document", "Document"
        # Uploaded already encrypted for an end-to-end encrypted conversation: opaque bytes.
        ENCRYPTED = "encrypted", "Encrypted"

    class State(models.TextChoices):
        # Video and audio: stored as uploaded, waiting for the worker to strip its metadata;
        # never served and never attached in this state.
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        # The tool could not make a clean copy (corrupt, too long to process, no ffmpeg): the
        # uploaded bytes are deleted; ``rejection`` says why.
        REJECTED = "rejected", "Rejected"

    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="attachments"
    )
    category = models.CharField(max_length=16, choices=Category.choices)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    name = models.CharField(max_length=120)
    file = models.FileField(upload_to=_attachment_key, max_length=200)
    thumbnail = models.FileField(upload_to=_attachment_key, max_length=200, null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.READY)
    rejection = models.CharField(max_length=40, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    attached_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(size__gt=0), name="attachment_size_positive"),
            models.CheckConstraint(
                condition=Q(sha256__regex=r"^[0-9a-f]{64}$"), name="attachment_sha256_hex"
            ),
            models.CheckConstraint(
                condition=Q(category__in=v.ATTACHMENT_CATEGORIES), name="attachment_category_valid"
            ),
            models.CheckConstraint(
                condition=Q(message__isnull=True) | Q(attached_at__isnull=False),
                name="attachment_attached_has_time",
            ),
            models.CheckConstraint(condition=~Q(name=""), name="attachment_name_not_blank"),
            models.CheckConstraint(
                condition=Q(state__in=["processing", "ready", "rejected"]), name="attachment_state_valid"
            ),
            models.CheckConstraint(
                condition=Q(message__isnull=True) | Q(state="ready"), name="attachment_attached_is_ready"
            ),
        ]
        indexes = [
            models.Index(fields=["uploader", "created_at"], name="attachment_uploader_day"),
            models.Index(
                fields=["created_at"],
                name="attachment_orphans",
                condition=Q(message__isnull=True, deleted_at__isnull=True),
            ),
            models.Index(
                fields=["created_at"],
                name="attachment_retention_due",
                condition=Q(message__isnull=False, deleted_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"attachment {self.pk}"


class MessageCiphertext(models.Model):
    """One device's copy of an end-to-end encrypted message (Signal-protocol ciphertext).

    The server cannot read it; each device is handed only its own. ``Message.body`` of an
    encrypted message stays empty.
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="ciphertexts")
    device = models.ForeignKey("accounts.Device", on_delete=models.CASCADE, related_name="+")
    ciphertext = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "device"], name="message_ciphertext_unique"),
            models.CheckConstraint(
                condition=Q(ciphertext__length__gt=0), name="message_ciphertext_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"ciphertext of message {self.message_id} for device {self.device_id}"


class Reaction(models.Model):
    """One user's emoji on one message: at most one row per (message, user, emoji)."""

    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="reaction_rows", db_index=False
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user", "emoji"], name="reaction_unique"),
            models.CheckConstraint(condition=~Q(emoji=""), name="reaction_emoji_not_blank"),
        ]

    def __str__(self) -> str:
        return f"reaction of {self.user_id} on message {self.message_id}"


class Pin(models.Model):
    """A message pinned in its conversation (bounded per conversation: ``HEALTHCHAT_PINS_MAX``)."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="pins", db_index=False
    )
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="pin")
    pinned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["conversation", "created_at"], name="pin_by_conversation")]

    def __str__(self) -> str:
        return f"pin of message {self.message_id}"


class Mention(models.Model):
    """A member mentioned in a message (written with the message by the send path's hook):
    behind "mentions of me" (``GET /api/v1/mentions``), newest first by id."""

    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="mention_rows", db_index=False
    )
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+", db_index=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "user"], name="mention_unique")]
        indexes = [models.Index(fields=["user", "-id"], name="mention_of_user")]

    def __str__(self) -> str:
        return f"mention of {self.user_id} in message {self.message_id}"
