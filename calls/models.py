"""Calls: one row per call attempt and one per participant. Metadata only: SDP and ICE candidates
are relayed, never stored."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from . import validators as v


class Call(models.Model):
    class Media(models.TextChoices):
        AUDIO = "audio", "Audio"
        VIDEO = "video", "Video"

    class State(models.TextChoices):
        RINGING = "ringing", "Ringing"
        ACCEPTED = "accepted", "Accepted"
        ENDED = "ended", "Ended"
        MISSED = "missed", "Missed"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"
        BUSY = "busy", "Busy"

    conversation = models.ForeignKey("messaging.Conversation", on_delete=models.CASCADE, related_name="calls")
    # Users are never hard-deleted (erasure blanks them), so the record keeps its caller.
    caller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    media = models.CharField(max_length=8, choices=Media.choices)
    state = models.CharField(max_length=12, choices=State.choices, default=State.RINGING)
    end_reason = models.CharField(max_length=24, blank=True, default="")
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Ringing ends (missed) at this time unless answered.
    ring_expires_at = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Whole seconds from answer to end (0 for calls never answered).
    duration = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # One active call per conversation: the database decides when invites race.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(state__in=v.ACTIVE_STATES),
                name="call_one_active_per_conversation",
            ),
            models.CheckConstraint(condition=Q(media__in=v.MEDIA), name="call_media_valid"),
            models.CheckConstraint(condition=Q(state__in=v.STATES), name="call_state_valid"),
            models.CheckConstraint(
                condition=Q(end_reason="") | Q(end_reason__in=v.END_REASONS), name="call_end_reason_valid"
            ),
            models.CheckConstraint(
                condition=(Q(state__in=v.ACTIVE_STATES) & Q(ended_at__isnull=True) & Q(end_reason=""))
                | (Q(state__in=v.FINAL_STATES) & Q(ended_at__isnull=False) & ~Q(end_reason="")),
                name="call_ended_iff_final",
            ),
            models.CheckConstraint(
                condition=~Q(state="accepted") | Q(answered_at__isnull=False),
                name="call_accepted_has_answer_time",
            ),
            models.CheckConstraint(
                condition=Q(answered_at__isnull=False) | Q(duration=0), name="call_duration_only_if_answered"
            ),
        ]
        indexes = [
            # The sweep for calls whose ringing is overdue (beat).
            models.Index(fields=["ring_expires_at"], name="call_ringing_due", condition=Q(state="ringing")),
        ]

    def __str__(self) -> str:
        return f"{self.media} call {self.pk} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in v.ACTIVE_STATES


class CallParticipant(models.Model):
    class Role(models.TextChoices):
        CALLER = "caller", "Caller"
        CALLEE = "callee", "Callee"

    class State(models.TextChoices):
        RINGING = "ringing", "Ringing"
        JOINED = "joined", "Joined"
        DECLINED = "declined", "Declined"
        MISSED = "missed", "Missed"
        LEFT = "left", "Left"

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="participants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=8, choices=Role.choices)
    state = models.CharField(max_length=8, choices=State.choices)
    # The device in the call: the caller's inviting device, the callee's answering device.
    device = models.ForeignKey(
        "accounts.Device", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The socket (channel-layer channel) of that device while it is in the call; signalling
    # for this participant goes there and only there. Blank: not joined, or not connected.
    channel_name = models.CharField(max_length=200, blank=True, default="")
    # The first time one of the callee's devices reported ringing (call.ringing).
    rang_at = models.DateTimeField(null=True, blank=True)
    joined_at = models.DateTimeField(null=True, blank=True)
    left_at = models.DateTimeField(null=True, blank=True)
    # Set while the call device's socket is gone (the call ends after the grace period).
    disconnected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["call", "user"], name="call_participant_unique"),
            models.CheckConstraint(
                condition=Q(role__in=v.PARTICIPANT_ROLES), name="call_participant_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(state__in=v.PARTICIPANT_STATES), name="call_participant_state_valid"
            ),
            models.CheckConstraint(
                condition=~Q(state="joined") | Q(joined_at__isnull=False),
                name="call_participant_joined_has_time",
            ),
        ]
        indexes = [
            # A user's call history (newest first) and the busy check.
            models.Index(fields=["user", "-call"], name="call_participant_by_user"),
            models.Index(
                fields=["disconnected_at"],
                name="call_participant_dropped",
                condition=Q(disconnected_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in call {self.call_id} ({self.role}, {self.state})"
