"""Reports and moderation (issue 23): members report a message or a user; staff work the queue
(Django admin) and resolve each report with an action; what the actions did to an account.

- ``Report``: one per reporter and target (a repeat answers the same row). ``shared_text``: for
  an end-to-end encrypted conversation, the decrypted text the reporter chose to share; the
  server cannot check it against the ciphertexts, so the report says ``unverified``.
- ``ModerationNotice``: what staff did to a user (warn, mute, deactivate), shown to that user
  (``GET /api/v1/moderation/notices``, ``moderation.notice`` frame).
- ``UserMute``: a user who may not send (nor edit) until ``until``: the send check
  ``moderation.sender_not_muted`` (``send_checks.py``) reads it by primary key in the send
  statement.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

REASONS = ("spam", "abuse", "harassment", "inappropriate", "privacy", "other")
TEXT_MAX = 2000
SHARED_TEXT_MAX = 4000


class Report(models.Model):
    class Target(models.TextChoices):
        MESSAGE = "message", "Message"
        USER = "user", "User"

    class Reason(models.TextChoices):
        SPAM = "spam", "Spam"
        ABUSE = "abuse", "Abuse"
        HARASSMENT = "harassment", "Harassment"
        INAPPROPRIATE = "inappropriate", "Inappropriate content"
        PRIVACY = "privacy", "Privacy violation"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        IN_REVIEW = "in_review", "In review"
        RESOLVED = "resolved", "Resolved"

    class Action(models.TextChoices):
        WARN = "warn", "Warn"
        MUTE = "mute", "Mute"
        DEACTIVATE = "deactivate", "Deactivate"
        DISMISS = "dismiss", "Dismiss"

    # NULL once the reporter's account is erased (the report stays for the record, text erased).
    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    target = models.CharField(max_length=8, choices=Target.choices)
    message = models.ForeignKey(
        "messaging.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    conversation = models.ForeignKey(
        "messaging.Conversation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The user reported (a message's sender for a message report). Users are never hard-deleted.
    reported_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    text = models.TextField(max_length=TEXT_MAX, blank=True, default="")
    shared_text = models.TextField(max_length=SHARED_TEXT_MAX, blank=True, default="")
    unverified = models.BooleanField(default=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=12, choices=Action.choices, blank=True, default="")
    resolution_note = models.TextField(max_length=TEXT_MAX, blank=True, default="")
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [
            ("moderate_reports", "Can assign reports and resolve them (warn, mute, dismiss)"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(target__in=["message", "user"]), name="report_target_valid"),
            models.CheckConstraint(condition=Q(reason__in=REASONS), name="report_reason_valid"),
            models.CheckConstraint(
                condition=Q(status__in=["open", "in_review", "resolved"]), name="report_status_valid"
            ),
            models.CheckConstraint(
                condition=(Q(status="resolved") & ~Q(action="") & Q(resolved_at__isnull=False))
                | (~Q(status="resolved") & Q(action="") & Q(resolved_at__isnull=True)),
                name="report_resolved_iff_action",
            ),
            models.CheckConstraint(
                condition=Q(unverified=False) | ~Q(shared_text=""), name="report_unverified_has_text"
            ),
            # One report per reporter and target: a repeat answers the first.
            models.UniqueConstraint(
                fields=["reporter", "message"],
                condition=Q(target="message"),
                name="report_once_per_message",
            ),
            models.UniqueConstraint(
                fields=["reporter", "reported_user"],
                condition=Q(target="user"),
                name="report_once_per_user",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="report_queue"),
            models.Index(fields=["reporter", "-id"], name="report_by_reporter"),
        ]

    def __str__(self) -> str:
        return f"report {self.pk} ({self.target}, {self.reason})"


class ModerationNotice(models.Model):
    """What staff did to ``user``'s account because of a report (or not: ``report`` null)."""

    class Action(models.TextChoices):
        WARN = "warn", "Warning"
        MUTE = "mute", "Muted"
        DEACTIVATE = "deactivate", "Deactivated"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=12, choices=Action.choices)
    report = models.ForeignKey(
        Report, on_delete=models.SET_NULL, null=True, blank=True, related_name="notices"
    )
    # Shown to the user: the staff member's words, or the default text of the action.
    text = models.TextField(max_length=TEXT_MAX)
    muted_until = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=["warn", "mute", "deactivate"]), name="notice_action_valid"
            ),
            models.CheckConstraint(
                condition=Q(action="mute", muted_until__isnull=False)
                | (~Q(action="mute") & Q(muted_until__isnull=True)),
                name="notice_mute_has_until",
            ),
        ]
        indexes = [models.Index(fields=["user", "-id"], name="notice_by_user")]

    def __str__(self) -> str:
        return f"{self.action} notice to {self.user_id}"


class UserMute(models.Model):
    """``user`` may not send messages (nor edit them) before ``until`` (a later mute extends it)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    until = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user_id} muted until {self.until:%Y-%m-%d %H:%M}"
