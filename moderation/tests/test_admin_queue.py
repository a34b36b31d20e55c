"""The moderation queue in the Django admin, driven as staff would: a staff user without the
permissions sees nothing or cannot act; with them, filters the queue, reads a report (the
reported message's kept texts included; the page view audited), takes it and resolves it."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from accounts.models import User
from audit import actions
from audit.models import AuditEntry
from conftest import unique_phone
from messaging import services
from messaging.tests.factories import pair
from moderation import services as moderation
from moderation.models import ModerationNotice, Report, UserMute

pytestmark = pytest.mark.django_db

QUEUE = "/admin/moderation/report/"


def browser(*perms: str) -> tuple[Client, User]:
    user: User = User.objects.create_user(
        unique_phone(), "pw-for-tests-only", is_staff=True, display_name="Clerk"
    )
    for perm in perms:
        app_label, codename = perm.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client, user


def reported_message() -> tuple[Report, int]:
    patient, doctor, conversation = pair()
    message_id = services.message_send(
        sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="first words"
    ).message.pk
    services.message_edit(user=doctor, message_id=message_id, body="second words")
    report, _ = moderation.report_create(
        reporter=patient, target="message", message_id=message_id, reason="harassment", text="see the edit"
    )
    services.message_delete(user=doctor, message_id=message_id)
    return report, message_id


def test_staff_without_the_view_permission_cannot_open_the_queue() -> None:
    reported_message()
    client, _user = browser()
    assert client.get(QUEUE).status_code == 403


def test_the_queue_filters_and_a_report_shows_the_kept_texts() -> None:
    report, _message_id = reported_message()
    patient, doctor, _conversation = pair()
    other, _ = moderation.report_create(reporter=patient, target="user", user_id=doctor.pk, reason="spam")
    client, viewer = browser("moderation.view_report")
    page = client.get(QUEUE, {"status__exact": "open", "reason__exact": "harassment"})
    assert page.status_code == 200
    shown = {row.pk for row in page.context["cl"].result_list}
    assert shown == {report.pk}
    assert {r.pk for r in client.get(QUEUE, {"reason__exact": "spam"}).context["cl"].result_list} == {
        other.pk
    }
    detail = client.get(reverse("admin:moderation_report_change", args=[report.pk]))
    assert detail.status_code == 200
    html = detail.content.decode()
    # The message was edited, then unsent: members see a tombstone; staff see the texts kept.
    assert "first words" in html
    assert "second words" in html
    assert "(deleted)" in html
    assert AuditEntry.objects.filter(
        action=actions.ADMIN_VIEW,
        actor_id=viewer.pk,
        object_type="moderation.report",
        object_id=str(report.pk),
    ).exists()
    # View-only: no action is offered.
    assert "resolve_warn" not in page.content.decode()


def test_a_moderator_takes_and_mutes_through_the_admin_and_the_assignee_filter_finds_it() -> None:
    report, _message_id = reported_message()
    client, moderator = browser("moderation.view_report", "moderation.moderate_reports")
    taken = client.post(QUEUE, {"action": "assign_to_me", "_selected_action": [report.pk]})
    assert taken.status_code == 302
    mine = client.get(QUEUE, {"assignee__id__exact": moderator.pk})
    assert [r.pk for r in mine.context["cl"].result_list] == [report.pk]
    muted = client.post(QUEUE, {"action": "resolve_mute", "_selected_action": [report.pk]})
    assert muted.status_code == 302
    report.refresh_from_db()
    assert (report.status, report.action, report.assignee_id) == ("resolved", "mute", moderator.pk)
    assert UserMute.objects.filter(user_id=report.reported_user_id).exists()
    assert ModerationNotice.objects.filter(user_id=report.reported_user_id, action="mute").exists()
    # Deactivation is not theirs: not offered, and a forged POST changes nothing.
    assert "resolve_deactivate" not in client.get(QUEUE).content.decode()
    other, _ = reported_message()
    client.post(QUEUE, {"action": "resolve_deactivate", "_selected_action": [other.pk]})
    other.refresh_from_db()
    assert other.status == "open"
    assert User.objects.get(pk=other.reported_user_id).is_active is True


def test_nothing_is_added_changed_or_deleted_in_the_queue() -> None:
    report, _message_id = reported_message()
    client, _user = browser(
        "moderation.view_report",
        "moderation.moderate_reports",
        "moderation.change_report",
        "moderation.delete_report",
    )
    assert client.get(reverse("admin:moderation_report_add")).status_code == 403
    assert (
        client.post(reverse("admin:moderation_report_delete", args=[report.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert Report.objects.filter(pk=report.pk).exists()
