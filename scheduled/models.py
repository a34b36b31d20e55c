"""Scheduled messages: a message a doctor writes now for the send path to send at ``send_at``.

The row is the outbox: the dispatcher (Celery: a task at ``send_at`` and a beat sweep) claims a
due ``pending`` row with ``SELECT ... FOR UPDATE SKIP LOCKED`` and, in the same transaction,
sends it through messaging's one send path (as the author, with the row's ``client_id``) and
marks it ``sent`` (or ``failed`` with the refusal's code). A worker killed mid-send rolls the
whole transaction back: the row is ``pending`` again and the next sweep sends it, once.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ScheduledMessage(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey("messaging.Conversation", on_delete=models.CASCADE, related_name="+")
    # The client_id of the message it becomes: the send is idempotent on it.
    client_id = models.UUIDField()
    # Blanked once it is sent (the message holds the text) or cancelled.
    body = models.TextField(blank=True, default="")
    send_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    message = models.ForeignKey(
        "messaging.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # What it was written in, ``{deferred rule: id}`` (``messaging.send_rules.DeferredRule``;
    # ``consultation``: the consultation open in the conversation then): refused when it is due
    # if that is over (``consultation_closed``).
    bindings = models.JSONField(default=dict, blank=True)
    # Why it was not sent: the send path's error code (``consultation_closed``, ...).
    failure_code = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["author", "client_id"], name="scheduled_client_id_unique"),
            models.CheckConstraint(
                condition=Q(state__in=["pending", "sent", "failed", "cancelled"]),
                name="scheduled_state_valid",
            ),
            models.CheckConstraint(
                condition=~Q(state="pending") | (~Q(body="") & Q(finished_at__isnull=True)),
                name="scheduled_pending_has_body",
            ),
            models.CheckConstraint(
                condition=Q(state="pending") | Q(finished_at__isnull=False),
                name="scheduled_finished_has_time",
            ),
            models.CheckConstraint(
                condition=~Q(state="sent") | Q(body=""), name="scheduled_sent_keeps_no_copy"
            ),
        ]
        indexes = [
            # The dispatcher's sweep: the due pending rows by time.
            models.Index(fields=["send_at"], name="scheduled_due", condition=Q(state="pending")),
            models.Index(fields=["author", "-id"], name="scheduled_by_author"),
            models.Index(fields=["finished_at"], name="scheduled_finished", condition=~Q(state="pending")),
        ]

    def __str__(self) -> str:
        return f"scheduled message {self.pk} ({self.state})"
