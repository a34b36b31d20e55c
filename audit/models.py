"""The audit log: one append-only row per access to health data, sign-in or refusal.

Who (a user id, not a foreign key: the row outlives the account and never cascades), what
(a stable action code), which object (type and id), when, from where (channel, client address,
user agent) and how it ended. Never message text, tokens or phone numbers: the constraints
below keep every field to codes and ids. On PostgreSQL a trigger refuses UPDATE and DELETE
(migration ``0002_append_only``).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

USER_AGENT_MAX = 200
CODE_PATTERN = r"^[a-z0-9_.]*$"
ACTION_PATTERN = r"^[a-z_]+\.[a-z_]+$"
OBJECT_ID_PATTERN = r"^[0-9A-Za-z_-]*$"


class AuditEntry(models.Model):
    class Outcome(models.TextChoices):
        OK = "ok", "ok"
        DENIED = "denied", "denied"
        ERROR = "error", "error"

    class Channel(models.TextChoices):
        REST = "rest", "REST"
        SOCKET = "socket", "WebSocket"
        ADMIN = "admin", "admin"
        COMMAND = "command", "command"
        SYSTEM = "system", "system"

    at = models.DateTimeField(default=timezone.now)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_staff = models.BooleanField(default=False)
    action = models.CharField(max_length=48)
    object_type = models.CharField(max_length=48, blank=True, default="")
    object_id = models.CharField(max_length=64, blank=True, default="")
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.OK)
    # The error code of a refusal (``conversation_not_found``, ``token_expired``...).
    code = models.CharField(max_length=64, blank=True, default="")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=USER_AGENT_MAX, blank=True, default="")

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        constraints = [
            models.CheckConstraint(condition=Q(action__regex=ACTION_PATTERN), name="audit_action_is_a_code"),
            models.CheckConstraint(condition=Q(code__regex=CODE_PATTERN), name="audit_code_is_a_code"),
            models.CheckConstraint(
                condition=Q(object_type__regex=CODE_PATTERN), name="audit_object_type_is_a_code"
            ),
            models.CheckConstraint(
                condition=Q(object_id__regex=OBJECT_ID_PATTERN), name="audit_object_id_is_an_id"
            ),
            models.CheckConstraint(
                condition=Q(outcome__in=["ok", "denied", "error"]), name="audit_outcome_valid"
            ),
            models.CheckConstraint(
                condition=Q(channel__in=["rest", "socket", "admin", "command", "system"]),
                name="audit_channel_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["at"], name="audit_at"),
            models.Index(fields=["actor_id", "at"], name="audit_actor_at"),
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.outcome}"
