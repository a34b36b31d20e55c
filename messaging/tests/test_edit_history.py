"""Edit history (issue 23): the one edit path keeps each replaced text as a version, members see
``edit_count`` on the message (history, sync, events) and read the versions with their times;
an unsend leaves a tombstone for members and keeps the text (never shown to them) until
retention purges it, unless the conversation is under a legal hold; export and erasure cover
the versions. On real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.actors import Operator
from accounts.models import User
from accounts.tests.factories import PatientFactory
from audit import actions
from audit.models import AuditEntry
from core.errors import ApplicationError
from groups import services as group_services
from messaging import selectors, services
from messaging.models import Conversation, Message, MessageVersion
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db

OLD = timezone.now() - timedelta(days=400)


def send(user: User, conversation: Conversation, body: str) -> Message:
    return services.message_send(
        sender=user, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body
    ).message


def test_an_edit_keeps_the_replaced_text_as_a_version_with_its_times() -> None:
    patient, doctor, conversation = pair()
    message = send(patient, conversation, "I take 5 mg")
    services.message_edit(user=patient, message_id=message.pk, body="I take 50 mg")
    edited = services.message_edit(user=patient, message_id=message.pk, body="I take 15 mg")

    message.refresh_from_db()
    assert (message.body, message.edit_count) == ("I take 15 mg", 2)
    assert edited.edit_count == 2
    rows = list(MessageVersion.objects.filter(message=message).order_by("number"))
    assert [(v.number, v.body, v.reason, v.editor_id) for v in rows] == [
        (1, "I take 5 mg", "edit", patient.pk),
        (2, "I take 50 mg", "edit", patient.pk),
    ]
    # Each text's life: written when the previous one was replaced.
    assert rows[0].written_at == message.created_at
    assert rows[1].written_at == rows[0].edited_at
    assert rows[1].edited_at == message.edited_at

    data = selectors.message_versions_data(user=doctor, message_id=message.pk)
    assert data["edit_count"] == 2
    assert data["deleted"] is False
    assert [(v["version"], v["body"], v["current"]) for v in data["versions"]] == [
        (1, "I take 5 mg", False),
        (2, "I take 50 mg", False),
        (3, "I take 15 mg", True),
    ]
    assert data["versions"][0]["replaced_at"] == data["versions"][1]["written_at"]
    assert data["versions"][-1]["replaced_at"] is None
    assert data["versions"][-1]["written_at"] == message.edited_at.isoformat()


def test_the_wire_shape_carries_the_count_in_history_sync_and_the_event() -> None:
    patient, doctor, conversation = pair()
    _frames, cursor, _more = selectors.sync_events(user=doctor, cursor=None)
    message = send(patient, conversation, "first")
    assert selectors.message_data(message)["edit_count"] == 0
    services.message_edit(user=patient, message_id=message.pk, body="second")

    history, _ = selectors.message_history_data(
        user=doctor, conversation_id=conversation.pk, after_seq=None, before_seq=None, limit=50
    )
    assert [(m["body"], m["edit_count"]) for m in history] == [("second", 1)]
    assert history[0]["edited_at"] is not None
    frames, _cursor, _more = selectors.sync_events(user=doctor, cursor=cursor)
    updated = [f for f in frames if f["type"] == "message.updated"]
    assert [f["data"]["message"]["edit_count"] for f in updated] == [1]
    news = [f for f in frames if f["type"] == "message.new"]
    assert news[0]["data"]["message"]["edit_count"] == 1  # replayed as it is now


def test_history_costs_no_query_more_with_edited_messages() -> None:
    patient, doctor, conversation = pair()
    plain = [send(patient, conversation, f"m{i}") for i in range(3)]

    def page_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            selectors.message_history_data(
                user=doctor, conversation_id=conversation.pk, after_seq=None, before_seq=None, limit=50
            )
        return len(ctx.captured_queries)

    before = page_queries()
    for message in plain:
        services.message_edit(user=patient, message_id=message.pk, body="edited")
    assert page_queries() == before


def test_unsend_leaves_a_tombstone_for_members_and_keeps_the_text() -> None:
    patient, doctor, conversation = pair()
    message = send(patient, conversation, "draft")
    services.message_edit(user=patient, message_id=message.pk, body="my address is 1 Main St")
    services.message_delete(user=patient, message_id=message.pk)

    message.refresh_from_db()
    assert message.body == ""
    assert message.deleted_at is not None
    kept = list(
        MessageVersion.objects.filter(message=message)
        .order_by("number")
        .values_list("number", "body", "reason")
    )
    assert kept == [(1, "draft", "edit"), (2, "my address is 1 Main St", "delete")]
    wire = selectors.message_data(message)
    assert (wire["deleted"], wire["body"], wire["edit_count"]) == (True, "", 0)
    data = selectors.message_versions_data(user=doctor, message_id=message.pk)
    assert (data["deleted"], data["versions"], data["edit_count"]) == (True, [], 0)
    with pytest.raises(ApplicationError) as again:
        services.message_edit(user=patient, message_id=message.pk, body="x")
    assert again.value.code == "message_deleted"


def test_versions_are_for_members_who_may_read_the_message() -> None:
    patient, doctor, _conversation = pair()
    group = group_services.group_create(creator=doctor, name="Ward", member_ids=[patient.pk])
    message = send(doctor, group, "before you joined")
    services.message_edit(user=doctor, message_id=message.pk, body="edited before you joined")
    newcomer = PatientFactory.create()
    services.conversation_open_direct(user=newcomer, peer_id=doctor.pk)
    group_services.member_add(actor=doctor, group_id=group.pk, user_id=newcomer.pk)
    outsider = PatientFactory.create()
    for user in (newcomer, outsider):  # history not shared with new members; never a member
        with pytest.raises(ApplicationError) as refused:
            selectors.message_versions_data(user=user, message_id=message.pk)
        assert refused.value.code == "message_not_found"
    with pytest.raises(ApplicationError) as missing:
        selectors.message_versions_data(user=patient, message_id=message.pk + 10_000)
    assert missing.value.code == "message_not_found"
    assert len(selectors.message_versions_data(user=patient, message_id=message.pk)["versions"]) == 2


def test_encrypted_conversations_still_refuse_edits() -> None:
    patient, _doctor, conversation = pair()
    message = send(patient, conversation, "plain before encryption")
    Conversation.objects.filter(pk=conversation.pk).update(e2ee=True)
    with pytest.raises(ApplicationError) as refused:
        services.message_edit(user=patient, message_id=message.pk, body="x")
    assert refused.value.code == "e2ee_required"
    assert not MessageVersion.objects.exists()


def test_rest_versions_endpoint_and_its_audit_entry(client_for) -> None:
    patient, doctor, conversation = pair()
    message = send(patient, conversation, "one")
    services.message_edit(user=patient, message_id=message.pk, body="two")
    response = client_for(doctor).get(f"/api/v1/messages/{message.pk}/versions")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["message_id"] == message.pk
    assert body["conversation_id"] == conversation.pk
    assert [v["body"] for v in body["versions"]] == ["one", "two"]
    assert AuditEntry.objects.filter(
        action=actions.MESSAGE_VERSIONS_READ, actor_id=doctor.pk, object_id=str(message.pk)
    ).exists()
    stranger = PatientFactory.create()
    refused = client_for(stranger).get(f"/api/v1/messages/{message.pk}/versions")
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "message_not_found"
    history = client_for(doctor).get(f"/api/v1/conversations/{conversation.pk}/messages")
    assert history.json()["results"][0]["edit_count"] == 1


def test_retention_purges_kept_texts_except_under_legal_hold(settings) -> None:
    settings.MESSAGE_RETENTION_DAYS = 365
    settings.ATTACHMENT_RETENTION_DAYS = 0
    patient, _doctor, conversation = pair()
    held_patient, _held_doctor, held = pair()
    services.conversation_set_legal_hold(conversation_id=held.pk, hold=True, actor=Operator(command="test"))
    edited_old = send(patient, conversation, "old v1")
    services.message_edit(user=patient, message_id=edited_old.pk, body="old v2")
    unsent_old = send(patient, conversation, "old unsent")
    services.message_delete(user=patient, message_id=unsent_old.pk)
    unsent_recent = send(patient, conversation, "recent unsent")
    services.message_delete(user=patient, message_id=unsent_recent.pk)
    held_old = send(held_patient, held, "held v1")
    services.message_edit(user=held_patient, message_id=held_old.pk, body="held v2")
    services.message_delete(user=held_patient, message_id=held_old.pk)
    Message.objects.filter(pk__in=[edited_old.pk, unsent_old.pk, held_old.pk]).update(created_at=OLD)

    due = services.retention_due()
    assert (due.messages, due.versions) == (1, 2)
    counts = services.retention_purge()
    assert (counts.messages, counts.versions) == (1, 2)  # the tombstoned message's, the unsent one's

    assert not MessageVersion.objects.filter(message_id__in=[edited_old.pk, unsent_old.pk]).exists()
    assert list(MessageVersion.objects.filter(message=unsent_recent).values_list("body", flat=True)) == [
        "recent unsent"
    ]
    assert MessageVersion.objects.filter(message=held_old).count() == 2  # held: kept
    assert services.retention_purge() == services.RetentionCounts(0, 0, 0)  # nothing left to do
    # Once the hold is released, the next run erases them.
    services.conversation_set_legal_hold(conversation_id=held.pk, hold=False, actor=Operator(command="test"))
    assert services.retention_purge().versions == 2


def test_export_and_erasure_cover_the_versions(client_for, firebase_admin_api) -> None:
    patient, doctor, conversation = pair()
    message = send(patient, conversation, "v1")
    services.message_edit(user=patient, message_id=message.pk, body="v2")
    gone = send(patient, conversation, "unsent")
    services.message_delete(user=patient, message_id=gone.pk)
    doctors = send(doctor, conversation, "doctor v1")
    services.message_edit(user=doctor, message_id=doctors.pk, body="doctor v2")

    exported = client_for(patient).get("/api/v1/me/export").json()
    versions = exported["messaging"]["message_versions"]
    assert [(v["message_id"], v["body"], v["reason"]) for v in versions] == [
        (message.pk, "v1", "edit"),
        (gone.pk, "unsent", "delete"),
    ]
    assert client_for(patient).delete("/api/v1/me").status_code == 204
    assert not MessageVersion.objects.filter(message__sender=patient).exists()
    assert MessageVersion.objects.filter(message=doctors).count() == 1  # not the patient's
