"""Reads of reports and notices: a reporter's own reports, a user's own notices, their wire shapes."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.models import User
from core.errors import NotFound

from .models import ModerationNotice, Report


def report_list(*, user: User) -> QuerySet[Report]:
    """The reports ``user`` filed (the cursor paginator orders them, newest first)."""
    return Report.objects.filter(reporter=user)


def report_get(*, user: User, report_id: int) -> Report:
    """The reporter's own; 404 for anyone else's (no hint that it exists)."""
    report = Report.objects.filter(pk=report_id, reporter=user).first()
    if report is None:
        raise NotFound("No such report.", code="report_not_found")
    return report


def report_data(report: Report) -> dict[str, Any]:
    """A report as its reporter sees it: what they filed, its status and outcome (never the
    staff's note, nor who handled it)."""
    return {
        "id": report.pk,
        "target": report.target,
        "message_id": report.message_id,
        "conversation_id": report.conversation_id,
        "user_id": report.reported_user_id,
        "reason": report.reason,
        "text": report.text,
        "shared_text": report.shared_text or None,
        "unverified": report.unverified,
        "status": report.status,
        "outcome": report.action or None,
        "created_at": report.created_at.isoformat(),
        "resolved_at": report.resolved_at.isoformat() if report.resolved_at else None,
    }


def notice_list(*, user: User) -> QuerySet[ModerationNotice]:
    return ModerationNotice.objects.filter(user=user)


def notice_data(notice: ModerationNotice) -> dict[str, Any]:
    return {
        "id": notice.pk,
        "action": notice.action,
        "text": notice.text,
        "muted_until": notice.muted_until.isoformat() if notice.muted_until else None,
        "created_at": notice.created_at.isoformat(),
    }
