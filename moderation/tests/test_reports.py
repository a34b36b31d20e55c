"""Reports and moderation (issue 23) on real PostgreSQL: members file reports (idempotent, access
checked, clear codes), follow their own; staff services check their permission, write the audit
log and tell the reporter; mute refuses sends on every writer and edits (``sender_muted``);
deactivation closes the account; export and erasure cover the tables."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.db import transaction
from django.utils import timezone

from accounts.actors import Operator
from accounts.models import User
from accounts.tests.factories import PatientFactory
from audit import actions
from audit.models import AuditEntry
from conftest import unique_phone
from core.errors import ApplicationError
from messaging import batching, services
from messaging.models import Conversation, MessageVersion
from messaging.tests.factories import pair, send_item, send_together
from moderation import services as moderation
from moderation.models import ModerationNotice, Report, UserMute

pytestmark = pytest.mark.django_db


def staff_with(*perms: str) -> User:
    user: User = User.objects.create_user(
        unique_phone(), "pw-for-tests-only", is_staff=True, display_name="Clerk"
    )
    for perm in perms:
        app_label, codename = perm.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return User.objects.get(pk=user.pk)  # no cached permissions


def send(user: User, conversation: Conversation, body: str) -> int:
    result = services.message_send(
        sender=user, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body
    )
    return int(result.message.pk)


def report_of(reporter: User, **fields: Any) -> Report:
    report, _ = moderation.report_create(reporter=reporter, **fields)
    return report


# --- Filing -------------------------------------------------------------------------------------------
def test_a_member_reports_a_message_once_and_follows_it(client_for) -> None:
    patient, doctor, conversation = pair()
    message_id = send(doctor, conversation, "rude words")
    api = client_for(patient)
    body = {"target": "message", "message_id": message_id, "reason": "harassment", "text": "He was rude"}
    first = api.post("/api/v1/reports", body, format="json")
    assert first.status_code == 201, first.content
    report = first.json()
    assert report["target"] == "message"
    assert (report["message_id"], report["conversation_id"], report["user_id"]) == (
        message_id,
        conversation.pk,
        doctor.pk,
    )
    assert (report["status"], report["outcome"], report["unverified"]) == ("open", None, False)
    # The same report again (another reason even): the first one answers, nothing new.
    again = api.post("/api/v1/reports", {**body, "reason": "spam"}, format="json")
    assert again.status_code == 200
    assert again.json() == report
    assert Report.objects.count() == 1
    listed = api.get("/api/v1/reports").json()
    assert [r["id"] for r in listed["results"]] == [report["id"]]
    assert api.get(f"/api/v1/reports/{report['id']}").json() == report
    # Nobody else sees it.
    other = client_for(PatientFactory.create())
    assert other.get(f"/api/v1/reports/{report['id']}").json()["error"]["code"] == "report_not_found"
    assert other.get("/api/v1/reports").json()["results"] == []


def test_a_member_reports_a_user_they_share_a_conversation_with() -> None:
    patient, doctor, _conversation = pair()
    report = report_of(patient, target="user", user_id=doctor.pk, reason="privacy")
    assert (report.target, report.reported_user_id, report.message_id) == ("user", doctor.pk, None)
    again, created = moderation.report_create(
        reporter=patient, target="user", user_id=doctor.pk, reason="other"
    )
    assert (again.pk, created) == (report.pk, False)
    stranger = PatientFactory.create()
    with pytest.raises(ApplicationError) as refused:
        moderation.report_create(reporter=patient, target="user", user_id=stranger.pk, reason="spam")
    assert (refused.value.code, refused.value.status) == ("user_not_found", 404)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"reason": "boring"}, "invalid_reason", "reason"),
        ({"target": "conversation"}, "invalid_report_target", "target"),
        ({"text": "x" * 2001}, "report_text_too_long", "text"),
        ({"shared_text": "x" * 4001}, "report_text_too_long", "shared_text"),
        ({"reason": 5}, "invalid", "reason"),  # a wrong JSON type stays ``invalid``
    ],
)
def test_rest_refusals_carry_the_documented_code(client_for, change, code, field) -> None:
    """Over REST the same codes as the service (docs/protocol.md, the OpenAPI): the serializer's
    own refusals of these fields are not DRF's generic ``invalid``."""
    patient, doctor, _conversation = pair()
    body = {"target": "user", "user_id": doctor.pk, "reason": "spam", **change}
    answer = client_for(patient).post("/api/v1/reports", body, format="json")
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert (error["code"], list(error["fields"])) == (code, [field])
    assert not Report.objects.exists()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("own message", "cannot_report_self"),
        ("self", "cannot_report_self"),
        ("not a member", "message_not_found"),
        ("missing message", "message_not_found"),
        ("shared text in plaintext", "shared_text_not_allowed"),
        ("shared text on a user", "shared_text_not_allowed"),
        ("both targets", "invalid_report_target"),
        ("no target id", "invalid_report_target"),
        ("bad reason", "invalid_reason"),
        ("long text", "report_text_too_long"),
        ("system message", "message_not_reportable"),
    ],
)
def test_bad_reports_are_refused_with_a_code(case: str, code: str) -> None:
    patient, doctor, conversation = pair()
    theirs = send(doctor, conversation, "hello")
    mine = send(patient, conversation, "hi")
    outsider = PatientFactory.create()
    cases: dict[str, dict[str, Any]] = {
        "own message": {"target": "message", "message_id": mine},
        "self": {"target": "user", "user_id": patient.pk},
        "not a member": {"target": "message", "message_id": theirs, "reporter": outsider},
        "missing message": {"target": "message", "message_id": theirs + 10_000},
        "shared text in plaintext": {"target": "message", "message_id": theirs, "shared_text": "x"},
        "shared text on a user": {"target": "user", "user_id": doctor.pk, "shared_text": "x"},
        "both targets": {"target": "message", "message_id": theirs, "user_id": doctor.pk},
        "no target id": {"target": "user"},
        "bad reason": {"target": "user", "user_id": doctor.pk, "reason": "boring"},
        "long text": {"target": "user", "user_id": doctor.pk, "text": "x" * 2001},
        "system message": {"target": "message", "message_id": 0},
    }
    kwargs = cases[case]
    if case == "system message":
        from groups import services as group_services

        group = group_services.group_create(creator=doctor, name="Ward", member_ids=[patient.pk])
        kwargs["message_id"] = group.messages.get(kind="system").pk
    reporter = kwargs.pop("reporter", patient)
    kwargs.setdefault("reason", "spam")
    with pytest.raises(ApplicationError) as refused:
        moderation.report_create(reporter=reporter, **kwargs)
    assert refused.value.code == code
    assert not Report.objects.exists()


def test_rest_validation_is_a_400_with_a_code(client_for) -> None:
    patient, doctor, _conversation = pair()
    api = client_for(patient)
    bad = api.post(
        "/api/v1/reports", {"target": "user", "user_id": doctor.pk, "reason": "boring"}, format="json"
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"]
    unknown = api.post(
        "/api/v1/reports", {"target": "user", "user_id": doctor.pk, "reason": "spam", "x": 1}, format="json"
    )
    assert unknown.status_code == 400
    self_report = api.post(
        "/api/v1/reports", {"target": "user", "user_id": patient.pk, "reason": "spam"}, format="json"
    )
    assert self_report.json()["error"]["code"] == "cannot_report_self"


def test_encrypted_conversation_reports_carry_the_shared_text_unverified(client_for) -> None:
    patient, doctor, conversation = pair()
    message_id = send(doctor, conversation, "sent before encryption was on")  # any message of it
    Conversation.objects.filter(pk=conversation.pk).update(e2ee=True)
    response = client_for(patient).post(
        "/api/v1/reports",
        {"target": "message", "message_id": message_id, "reason": "abuse", "shared_text": "what I decrypted"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert (response.json()["shared_text"], response.json()["unverified"]) == ("what I decrypted", True)
    row = Report.objects.get()
    assert (row.shared_text, row.unverified) == ("what I decrypted", True)


# --- Staff: permission, audit, outcome -----------------------------------------------------------
def test_each_staff_action_needs_its_permission_not_only_is_staff() -> None:
    patient, doctor, _conversation = pair()
    report = report_of(patient, target="user", user_id=doctor.pk, reason="abuse")
    plain_staff = staff_with()
    superuser_ish = staff_with("accounts.deactivate_account")  # may deactivate, not moderate
    for service in (
        moderation.report_assign,
        moderation.report_warn,
        moderation.report_mute,
        moderation.report_dismiss,
    ):
        for actor in (plain_staff, superuser_ish, patient):
            with pytest.raises(ApplicationError) as refused:
                service(report_id=report.pk, actor=actor)
            assert (refused.value.code, refused.value.status) == ("permission_denied", 403)
    moderator = staff_with("moderation.moderate_reports")
    with pytest.raises(ApplicationError) as refused:
        moderation.report_deactivate(report_id=report.pk, actor=moderator)
    assert refused.value.code == "permission_denied"
    report.refresh_from_db()
    assert (report.status, report.action) == ("open", "")
    assert not AuditEntry.objects.filter(action__startswith="report.").exists()


def test_assign_then_warn_audits_and_tells_both_users(
    django_capture_on_commit_callbacks, monkeypatch
) -> None:
    sent: list[tuple[list[int], dict[str, Any]]] = []
    monkeypatch.setattr(
        "messaging.services.events.fan_out",
        lambda *, user_ids, frame, exclude_channel=None: sent.append((user_ids, frame)),
    )
    patient, doctor, conversation = pair()
    report = report_of(
        patient, target="message", message_id=send(doctor, conversation, "rude"), reason="abuse"
    )
    moderator = staff_with("moderation.moderate_reports")
    with django_capture_on_commit_callbacks(execute=True):
        moderation.report_assign(report_id=report.pk, actor=moderator)
    report.refresh_from_db()
    assert (report.status, report.assignee_id) == ("in_review", moderator.pk)
    with django_capture_on_commit_callbacks(execute=True):
        moderation.report_warn(report_id=report.pk, actor=moderator, note="first warning")
    report.refresh_from_db()
    assert (report.status, report.action, report.resolved_by_id) == ("resolved", "warn", moderator.pk)
    assert report.resolved_at is not None
    entries = list(
        AuditEntry.objects.filter(object_type="report", object_id=str(report.pk))
        .order_by("id")
        .values_list("action", "code", "actor_id")
    )
    assert entries == [("report.assign", "", moderator.pk), ("report.resolve", "warn", moderator.pk)]
    notice = ModerationNotice.objects.get(user=doctor)
    assert (notice.action, notice.report_id, notice.muted_until) == ("warn", report.pk, None)
    kinds = [(ids, frame["type"]) for ids, frame in sent]
    assert kinds == [
        ([patient.pk], "report.updated"),
        ([doctor.pk], "moderation.notice"),
        ([patient.pk], "report.updated"),
    ]
    assert sent[-1][1]["data"]["report"]["outcome"] == "warn"
    assert sent[-1][1]["data"]["report"]["status"] == "resolved"
    # Resolved is final.
    with pytest.raises(ApplicationError) as again:
        moderation.report_dismiss(report_id=report.pk, actor=moderator)
    assert (again.value.code, again.value.status) == ("report_resolved", 409)


def test_dismiss_changes_nothing_for_the_reported_user(client_for) -> None:
    patient, doctor, _conversation = pair()
    report = report_of(patient, target="user", user_id=doctor.pk, reason="other")
    moderation.report_dismiss(report_id=report.pk, actor=staff_with("moderation.moderate_reports"))
    assert not ModerationNotice.objects.exists()
    assert not UserMute.objects.exists()
    mine = client_for(patient).get(f"/api/v1/reports/{report.pk}").json()
    assert (mine["status"], mine["outcome"]) == ("resolved", "dismiss")


# --- Mute: the send check on every writer, and edits ----------------------------------------------
def _muted_pair(hours: int = 2) -> tuple[User, User, Conversation, int]:
    patient, doctor, conversation = pair()
    earlier = send(doctor, conversation, "before the mute")
    report = report_of(patient, target="user", user_id=doctor.pk, reason="harassment")
    moderation.report_mute(report_id=report.pk, actor=staff_with("moderation.moderate_reports"), hours=hours)
    return patient, doctor, conversation, earlier


def test_mute_sets_until_and_tells_the_user(client_for) -> None:
    _patient, doctor, _conversation, _earlier = _muted_pair(hours=3)
    mute = UserMute.objects.get(user=doctor)
    assert abs((mute.until - timezone.now()).total_seconds() - 3 * 3600) < 60
    notices = client_for(doctor).get("/api/v1/moderation/notices").json()["results"]
    assert [(n["action"], n["muted_until"]) for n in notices] == [("mute", mute.until.isoformat())]
    with pytest.raises(ApplicationError) as refused:
        moderation.mute_hours(0)
    assert refused.value.code == "invalid_mute_hours"


@pytest.mark.django_db(transaction=True)
async def test_a_muted_sender_is_refused_on_every_writer_and_the_patient_still_sends() -> None:
    patient, doctor, conversation, _earlier = await sync_to_async(_muted_pair)()
    # The event loop's batch writer (a batch with an accepted send of the patient's).
    batcher = batching.SendBatcher()
    try:
        loop = await send_together(
            batcher, [send_item(doctor, conversation.pk, "a"), send_item(patient, conversation.pk, "b")]
        )
    finally:
        await batcher.loop_writer.close()
    assert isinstance(loop[0], ApplicationError)
    assert loop[0].code == "sender_muted"
    assert loop[1].data["seq"] == 2
    # The worker thread's batch writer and the single send.
    thread = await sync_to_async(services.message_send_many)(
        requests=[send_item(doctor, conversation.pk, "c")]
    )
    assert [getattr(r, "code", r) for r in thread] == ["sender_muted"]
    with pytest.raises(ApplicationError) as single:
        await sync_to_async(services.send)(send_item(doctor, conversation.pk, "d"))
    assert (single.value.code, single.value.status) == ("sender_muted", 403)

    def orm_writer() -> str:
        try:
            with transaction.atomic():
                services.write_message_orm(
                    sender=doctor, conversation_id=conversation.pk, cid=uuid.uuid4(), text="e", reply_to=None
                )
        except ApplicationError as exc:
            return exc.code
        return "written"

    assert await sync_to_async(orm_writer)() == "sender_muted"


def test_a_muted_user_cannot_edit_and_may_again_once_the_mute_ends() -> None:
    _patient, doctor, _conversation, earlier = _muted_pair()
    with pytest.raises(ApplicationError) as refused:
        services.message_edit(user=doctor, message_id=earlier, body="abuse, edited in")
    assert refused.value.code == "sender_muted"
    assert not MessageVersion.objects.exists()
    UserMute.objects.filter(user=doctor).update(until=timezone.now())
    services.message_edit(user=doctor, message_id=earlier, body="fine now")
    assert MessageVersion.objects.count() == 1


def test_a_longer_running_mute_is_kept() -> None:
    patient, doctor, _conversation = pair()
    moderator = staff_with("moderation.moderate_reports")
    first = report_of(patient, target="user", user_id=doctor.pk, reason="abuse")
    moderation.report_mute(report_id=first.pk, actor=moderator, hours=48)
    until = UserMute.objects.get(user=doctor).until
    _p2, _d2, _conversation2 = pair()
    services.conversation_open_direct(user=_p2, peer_id=doctor.pk)
    second = report_of(_p2, target="user", user_id=doctor.pk, reason="spam")
    moderation.report_mute(report_id=second.pk, actor=moderator, hours=1)
    assert UserMute.objects.get(user=doctor).until == until


# --- Deactivate -----------------------------------------------------------------------------------
def test_deactivate_needs_the_account_permission_and_closes_the_account(client_for) -> None:
    patient, doctor, _conversation = pair()
    report = report_of(patient, target="user", user_id=doctor.pk, reason="abuse")
    deactivator = staff_with("accounts.deactivate_account")
    moderation.report_deactivate(report_id=report.pk, actor=deactivator)
    doctor.refresh_from_db()
    assert doctor.is_active is False
    report.refresh_from_db()
    assert (report.status, report.action) == ("resolved", "deactivate")
    assert AuditEntry.objects.filter(action=actions.USER_DEACTIVATE, object_id=str(doctor.pk)).exists()
    refused = client_for(doctor).get("/api/v1/moderation/notices")
    assert refused.json()["error"]["code"] == "user_inactive"


def test_an_operator_may_resolve_from_a_command() -> None:
    patient, doctor, _conversation = pair()
    report = report_of(patient, target="user", user_id=doctor.pk, reason="abuse")
    moderation.report_dismiss(report_id=report.pk, actor=Operator(command="test"))
    entry = AuditEntry.objects.get(action=actions.REPORT_RESOLVE)
    assert (entry.channel, entry.actor_id) == ("command", None)


# --- Export and erasure ---------------------------------------------------------------------------
def test_export_and_erasure_cover_reports_and_notices(client_for, firebase_admin_api) -> None:
    patient, doctor, conversation = pair()
    report = report_of(
        patient, target="message", message_id=send(doctor, conversation, "x"), reason="spam", text="my words"
    )
    moderation.report_warn(report_id=report.pk, actor=staff_with("moderation.moderate_reports"))
    exported = client_for(patient).get("/api/v1/me/export").json()["moderation"]
    assert [r["id"] for r in exported["reports_filed"]] == [report.pk]
    assert exported["reports_filed"][0]["text"] == "my words"
    warned = client_for(doctor).get("/api/v1/me/export").json()["moderation"]
    assert [n["action"] for n in warned["notices"]] == ["warn"]
    assert warned["reports_filed"] == []

    assert client_for(patient).delete("/api/v1/me").status_code == 204
    report.refresh_from_db()
    assert (report.reporter_id, report.text, report.shared_text) == (None, "", "")  # kept, anonymous
    assert client_for(doctor).delete("/api/v1/me").status_code == 204
    assert not ModerationNotice.objects.exists()
    assert Report.objects.filter(pk=report.pk).exists()  # the staff's record stays


def test_users_never_see_reports_about_them(client_for) -> None:
    patient, doctor, _conversation = pair()
    report_of(patient, target="user", user_id=doctor.pk, reason="abuse")
    assert client_for(doctor).get("/api/v1/reports").json()["results"] == []
