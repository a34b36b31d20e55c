"""Push notifications: the per-user preference and the push outbox.

The outbox (``PushDelivery``) is the record of push work in PostgreSQL: one row per device per
thing to announce, written before any Celery task is queued. A task only ever sends rows it has
claimed, and records the outcome on the row, so a retried or duplicated task never sends twice
and a lost broker loses no work (beat re-queues rows that were never processed).
Rows never hold message text or titles: only ids, state and error codes.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class PushPreference(models.Model):
    """Per-user push settings. No row: the defaults (``PUSH_PREVIEWS_DEFAULT``)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="push_preference"
    )
    # Show the message text in notifications (never for end-to-end encrypted conversations).
    previews = models.BooleanField(default=False)
    # A mention of the user reaches their devices even in a conversation they muted (off: mute
    # silences mentions too).
    mentions_when_muted = models.BooleanField(default=True, db_default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"push preference of {self.user_id}"


class PushDelivery(models.Model):
    class Kind(models.TextChoices):
        MESSAGE = "message", "New message"
        MESSAGE_UPDATED = "message.updated", "Message edited or deleted (data only)"
        CALL = "call", "Incoming call"
        CALL_CANCELLED = "call.cancelled", "Call no longer ringing (data only)"
        TEST = "test", "Operator test"
        APPOINTMENT = "appointment", "Appointment reminder or notice (no medical content)"
        SCHEDULED_FAILED = "scheduled.failed", "Scheduled message not sent (no text)"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Skipped"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    device = models.ForeignKey("accounts.Device", on_delete=models.CASCADE, related_name="+")
    # Message kinds: the message (and, for updates, the conversation event of the edit/delete).
    message = models.ForeignKey(
        "messaging.Message", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    event = models.BigIntegerField(default=0)
    # Call kinds: the call id; test pushes: a random id; appointment: the reminder's key;
    # scheduled.failed: ``<scheduled message id>:<failure code>``.
    ref = models.CharField(max_length=64, blank=True, default="")
    conversation = models.ForeignKey(
        "messaging.Conversation", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    # Why a row was skipped or failed: a short code (never content). On a sent row,
    # ``lease_expired``: an earlier attempt died mid-send, so FCM may have had the push twice.
    reason = models.CharField(max_length=32, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    # Not before: the end of the grace period, or of a retry backoff.
    due_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    fcm_message_id = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "push deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "message", "event", "device"],
                condition=Q(message__isnull=False),
                name="push_delivery_unique_per_message",
            ),
            models.UniqueConstraint(
                fields=["kind", "ref", "device"],
                condition=Q(message__isnull=True),
                name="push_delivery_unique_per_ref",
            ),
            models.CheckConstraint(
                condition=Q(
                    kind__in=[
                        "message",
                        "message.updated",
                        "call",
                        "call.cancelled",
                        "test",
                        "appointment",
                        "scheduled.failed",
                    ]
                ),
                name="push_delivery_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["pending", "sending", "sent", "skipped", "failed"]),
                name="push_delivery_state_valid",
            ),
            models.CheckConstraint(
                condition=(Q(kind__in=["message", "message.updated"]) & Q(message__isnull=False))
                | (
                    Q(kind__in=["call", "call.cancelled", "test", "appointment", "scheduled.failed"])
                    & Q(message__isnull=True)
                    & ~Q(ref="")
                ),
                name="push_delivery_subject_present",
            ),
            models.CheckConstraint(
                condition=Q(state="sent", sent_at__isnull=False)
                | (~Q(state="sent") & Q(sent_at__isnull=True)),
                name="push_delivery_sent_at_iff_sent",
            ),
            models.CheckConstraint(
                condition=~Q(state="sending") | Q(claimed_at__isnull=False),
                name="push_delivery_sending_is_claimed",
            ),
        ]
        indexes = [
            # The beat task's scan for work that was never processed.
            models.Index(
                fields=["due_at"],
                name="push_delivery_open",
                condition=Q(state__in=["pending", "sending"]),
            ),
            models.Index(fields=["created_at"], name="push_delivery_created"),
        ]

    def __str__(self) -> str:
        return f"push {self.kind} to device {self.device_id} ({self.state})"
