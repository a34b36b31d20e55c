"""Reports and moderation: the one place each action is taken (issue 23).

Members: ``report_create`` (a message of a conversation they may read, or a user they share a
conversation with; a repeat answers the first report). Staff (the admin's queue, or any future
API): ``report_assign`` and one service per resolution — ``report_dismiss``, ``report_warn``,
``report_mute``, ``report_deactivate``. Each checks its Django permission (``accounts.actors.
require_permission``: ``moderation.moderate_reports``; deactivation ``accounts.deactivate_account``),
changes the report in one transaction with its audit entry, and after the commit tells the
reporter (``report.updated``) and, for warn and mute, the reported user (``moderation.notice``).

What the actions do:
- warn: a notice to the user (``moderation.notice`` frame, ``GET /api/v1/moderation/notices``);
- mute: the user cannot send nor edit messages for ``MODERATION_MUTE_HOURS`` hours (or the hours
  given): the send check ``sender_muted`` (``send_checks.py``); a notice with ``muted_until``;
- deactivate: the account is deactivated (``accounts.services.user_set_active``: tokens refused,
  sockets closed at once);
- dismiss: nothing happens to anyone; the reporter is told.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.actors import Actor, acting_user, require_permission
from accounts.models import User
from audit import actions as audited
from audit import services as audit
from audit.client import COMMAND, SYSTEM, Client
from core.errors import ApplicationError, NotFound
from messaging import selectors as messaging_selectors
from messaging.models import Message
from messaging.services import fan_out_on_commit

from . import selectors
from .models import REASONS, SHARED_TEXT_MAX, TEXT_MAX, ModerationNotice, Report, UserMute

logger = logging.getLogger("healthchat.moderation")

MODERATE = "moderation.moderate_reports"
DEACTIVATE = "accounts.deactivate_account"
MUTE_HOURS_MAX = 24 * 30

NOTICE_TEXTS = {
    ModerationNotice.Action.WARN: "A moderator reviewed a report about your messages. "
    "Please follow the rules of the service; further reports may lead to a mute or deactivation.",
    ModerationNotice.Action.MUTE: "A moderator muted your account: you cannot send or edit messages "
    "until the time shown.",
    ModerationNotice.Action.DEACTIVATE: "A moderator deactivated your account.",
}


# --- Members: filing a report -------------------------------------------------------------------
def _clean(
    *,
    target: str,
    reason: str,
    message_id: int | None,
    user_id: int | None,
    text: str,
    shared_text: str | None,
) -> tuple[str, str | None]:
    if target not in (Report.Target.MESSAGE, Report.Target.USER):
        raise ApplicationError(
            "invalid_report_target",
            "target is message or user.",
            fields={"target": ["invalid_report_target"]},
        )
    if target == Report.Target.MESSAGE and (message_id is None or user_id is not None):
        raise ApplicationError(
            "invalid_report_target",
            "A message report names message_id (only).",
            fields={"message_id": ["invalid_report_target"]},
        )
    if target == Report.Target.USER and (user_id is None or message_id is not None):
        raise ApplicationError(
            "invalid_report_target",
            "A user report names user_id (only).",
            fields={"user_id": ["invalid_report_target"]},
        )
    if reason not in REASONS:
        raise ApplicationError(
            "invalid_reason", f"reason is one of {', '.join(REASONS)}.", fields={"reason": ["invalid_reason"]}
        )
    text = (text or "").strip()
    if len(text) > TEXT_MAX:
        raise ApplicationError(
            "report_text_too_long",
            f"text is at most {TEXT_MAX} characters.",
            fields={"text": ["report_text_too_long"]},
        )
    if shared_text is not None:
        shared_text = shared_text.strip() or None
    if shared_text is not None and len(shared_text) > SHARED_TEXT_MAX:
        raise ApplicationError(
            "report_text_too_long",
            f"shared_text is at most {SHARED_TEXT_MAX} characters.",
            fields={"shared_text": ["report_text_too_long"]},
        )
    return text, shared_text


def report_create(
    *,
    reporter: User,
    target: str,
    reason: str,
    message_id: int | None = None,
    user_id: int | None = None,
    text: str = "",
    shared_text: str | None = None,
) -> tuple[Report, bool]:
    """File a report (``created`` False: the reporter had reported this target already, and that
    report is the answer, unchanged). A message: one the reporter may read in history, not their
    own, not a system message; ``shared_text`` only for an end-to-end encrypted conversation (the
    decrypted text the reporter chooses to share, stored ``unverified``). A user: one the reporter
    shares a conversation with, not themselves. Others: 404, as for what does not exist."""
    text, shared_text = _clean(
        target=target,
        reason=reason,
        message_id=message_id,
        user_id=user_id,
        text=text,
        shared_text=shared_text,
    )
    conversation_id: int | None = None
    msg: Message | None = None
    if target == Report.Target.MESSAGE:
        assert message_id is not None
        msg = messaging_selectors.message_readable(user=reporter, message_id=message_id)
        if msg.kind != Message.Kind.TEXT:
            raise ApplicationError(
                "message_not_reportable",
                "System messages cannot be reported.",
                fields={"message_id": ["message_not_reportable"]},
            )
        if msg.sender_id == reporter.pk:
            raise ApplicationError(
                "cannot_report_self",
                "You cannot report your own message.",
                fields={"message_id": ["cannot_report_self"]},
            )
        if shared_text is not None and not msg.conversation.e2ee:
            raise ApplicationError(
                "shared_text_not_allowed",
                "shared_text is for end-to-end encrypted conversations only (the server has this text).",
                fields={"shared_text": ["shared_text_not_allowed"]},
            )
        existing = Report.objects.filter(reporter=reporter, target=target, message_id=msg.pk).first()
        reported_id, conversation_id = msg.sender_id, msg.conversation_id
    else:
        assert user_id is not None
        if user_id == reporter.pk:
            raise ApplicationError(
                "cannot_report_self",
                "You cannot report yourself.",
                fields={"user_id": ["cannot_report_self"]},
            )
        if shared_text is not None:
            raise ApplicationError(
                "shared_text_not_allowed",
                "shared_text is for message reports only.",
                fields={"shared_text": ["shared_text_not_allowed"]},
            )
        if not messaging_selectors.shares_conversation(user_id=reporter.pk, other_id=user_id):
            raise NotFound("No such user.", code="user_not_found")
        existing = Report.objects.filter(reporter=reporter, target=target, reported_user_id=user_id).first()
        reported_id = user_id
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            report = Report.objects.create(
                reporter=reporter,
                target=target,
                message=msg,
                conversation_id=conversation_id,
                reported_user_id=reported_id,
                reason=reason,
                text=text,
                shared_text=shared_text or "",
                unverified=shared_text is not None,
            )
    except IntegrityError:  # the same report, filed at the same moment: that one answers
        if msg is not None:
            return Report.objects.get(reporter=reporter, target=target, message_id=msg.pk), False
        return Report.objects.get(reporter=reporter, target=target, reported_user_id=reported_id), False
    logger.info("report %s filed (%s, %s)", report.pk, target, reason)
    return report, True


# --- Staff: the queue -----------------------------------------------------------------------------
def _client(actor: Actor, client: Client | None) -> Client:
    if client is not None:
        return client
    return COMMAND if acting_user(actor) is None else SYSTEM


def _locked_open(report_id: int) -> Report:
    report = Report.objects.select_for_update().filter(pk=report_id).first()
    if report is None:
        raise NotFound("No such report.", code="report_not_found")
    if report.status == Report.Status.RESOLVED:
        raise ApplicationError("report_resolved", "This report is resolved already.", status=409)
    return report


def _tell_reporter(report: Report) -> None:
    if report.reporter_id is not None:
        fan_out_on_commit(
            user_ids=[report.reporter_id],
            frame={"type": "report.updated", "data": {"report": selectors.report_data(report)}},
        )


def report_assign(*, report_id: int, actor: Actor, client: Client | None = None) -> Report:
    """Take a report (the acting staff member becomes its assignee; status ``in_review``)."""
    require_permission(actor, MODERATE)
    with transaction.atomic():
        report = _locked_open(report_id)
        report.assignee = acting_user(actor)
        report.status = Report.Status.IN_REVIEW
        report.save(update_fields=["assignee", "status", "updated_at"])
        audit.record(
            audited.REPORT_ASSIGN,
            actor=acting_user(actor),
            object_type="report",
            object_id=report.pk,
            client=_client(actor, client),
        )
        _tell_reporter(report)
    return report


def _resolve(report: Report, *, actor: Actor, action: str, note: str, client: Client | None) -> Report:
    """The report resolved with ``action`` (the caller holds its row lock), audited; the
    reporter told after the commit."""
    if len(note) > TEXT_MAX:
        raise ApplicationError(
            "report_text_too_long",
            f"note is at most {TEXT_MAX} characters.",
            fields={"note": ["report_text_too_long"]},
        )
    report.status = Report.Status.RESOLVED
    report.action = action
    report.resolution_note = note
    report.resolved_by = acting_user(actor)
    report.resolved_at = timezone.now()
    if report.assignee_id is None:
        report.assignee = acting_user(actor)
    report.save()
    audit.record(
        audited.REPORT_RESOLVE,
        actor=acting_user(actor),
        object_type="report",
        object_id=report.pk,
        code=action,
        client=_client(actor, client),
    )
    _tell_reporter(report)
    return report


def _notify(report: Report, *, actor: Actor, action: str, until: datetime | None = None) -> ModerationNotice:
    notice = ModerationNotice.objects.create(
        user_id=report.reported_user_id,
        action=action,
        report=report,
        text=NOTICE_TEXTS[ModerationNotice.Action(action)],
        muted_until=until,
        created_by=acting_user(actor),
    )
    fan_out_on_commit(
        user_ids=[report.reported_user_id],
        frame={"type": "moderation.notice", "data": {"notice": selectors.notice_data(notice)}},
    )
    return notice


def report_dismiss(*, report_id: int, actor: Actor, note: str = "", client: Client | None = None) -> Report:
    """No action against anyone; the reporter learns the report was reviewed (``dismiss``)."""
    require_permission(actor, MODERATE)
    with transaction.atomic():
        report = _locked_open(report_id)
        return _resolve(report, actor=actor, action=Report.Action.DISMISS, note=note, client=client)


def report_warn(*, report_id: int, actor: Actor, note: str = "", client: Client | None = None) -> Report:
    """A warning notice to the reported user."""
    require_permission(actor, MODERATE)
    with transaction.atomic():
        report = _locked_open(report_id)
        _notify(report, actor=actor, action=ModerationNotice.Action.WARN)
        return _resolve(report, actor=actor, action=Report.Action.WARN, note=note, client=client)


def mute_hours(hours: int | None) -> int:
    value = int(settings.MODERATION_MUTE_HOURS) if hours is None else hours
    if not 1 <= value <= MUTE_HOURS_MAX:
        raise ApplicationError(
            "invalid_mute_hours",
            f"A mute lasts 1 to {MUTE_HOURS_MAX} hours.",
            fields={"hours": ["invalid_mute_hours"]},
        )
    return value


def report_mute(
    *, report_id: int, actor: Actor, hours: int | None = None, note: str = "", client: Client | None = None
) -> Report:
    """The reported user cannot send nor edit messages for ``hours`` (``MODERATION_MUTE_HOURS``
    by default; a mute already running longer is kept), and is told until when."""
    require_permission(actor, MODERATE)
    length = mute_hours(hours)
    with transaction.atomic():
        report = _locked_open(report_id)
        until = timezone.now() + timedelta(hours=length)
        mute = UserMute.objects.select_for_update().filter(user_id=report.reported_user_id).first()
        if mute is None:
            mute = UserMute.objects.create(user_id=report.reported_user_id, until=until)
        elif mute.until < until:
            mute.until = until
            mute.save(update_fields=["until", "updated_at"])
        _notify(report, actor=actor, action=ModerationNotice.Action.MUTE, until=mute.until)
        return _resolve(report, actor=actor, action=Report.Action.MUTE, note=note, client=client)


def report_deactivate(
    *, report_id: int, actor: Actor, note: str = "", client: Client | None = None
) -> Report:
    """Deactivate the reported account (``accounts.deactivate_account``): its tokens are refused
    and its sockets closed at once (``user_inactive``)."""
    require_permission(actor, DEACTIVATE)
    with transaction.atomic():
        report = _locked_open(report_id)
        reported = User.objects.get(pk=report.reported_user_id)
        account_services.user_set_active(user=reported, active=False, actor=actor)
        audit.record(
            audited.USER_DEACTIVATE,
            actor=acting_user(actor),
            object_type="user",
            object_id=reported.pk,
            client=_client(actor, client),
        )
        ModerationNotice.objects.create(
            user=reported,
            action=ModerationNotice.Action.DEACTIVATE,
            report=report,
            text=NOTICE_TEXTS[ModerationNotice.Action.DEACTIVATE],
            created_by=acting_user(actor),
        )
        return _resolve(report, actor=actor, action=Report.Action.DEACTIVATE, note=note, client=client)


RESOLUTIONS: dict[str, Callable[..., Report]] = {
    Report.Action.WARN: report_warn,
    Report.Action.MUTE: report_mute,
    Report.Action.DEACTIVATE: report_deactivate,
    Report.Action.DISMISS: report_dismiss,
}


# --- The account holder's rights ---------------------------------------------------------------
def export_user_moderation(user: User) -> dict[str, Any]:
    """Reports the user filed and notices they were given (the export's ``moderation``)."""
    return {
        "reports_filed": [
            selectors.report_data(r) for r in Report.objects.filter(reporter=user).order_by("id")
        ],
        "notices": [
            selectors.notice_data(n) for n in ModerationNotice.objects.filter(user=user).order_by("id")
        ],
    }


def erase_user_moderation(user: User) -> None:
    """Reports the user filed stay for the record without their words or their name (reporter
    and texts erased); their notices and mute go. Reports ABOUT them stay (the staff's record;
    the reporters' data)."""
    Report.objects.filter(reporter=user).update(reporter=None, text="", shared_text="", unverified=False)
    ModerationNotice.objects.filter(user=user).delete()
    UserMute.objects.filter(user=user).delete()
