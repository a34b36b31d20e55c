"""Retention and legal hold: old messages become tombstones (and their files go), recent ones and
held conversations stay, runs are batched and idempotent, ``sync`` tells clients."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from accounts.actors import Operator
from accounts.models import User
from audit import actions
from audit.models import AuditEntry
from messaging import selectors, services, tasks
from messaging.models import Attachment, Conversation, Event, Message
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db

OLD = timezone.now() - timedelta(days=400)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def retention(settings):
    settings.MESSAGE_RETENTION_DAYS = 365
    settings.ATTACHMENT_RETENTION_DAYS = 0
    return settings


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 300), (0, 120, 0)).save(out, format="PNG")
    return out.getvalue()


def send(
    user: User, conversation: Conversation, body: str = "text", *, files: int = 0, old: bool = False
) -> Message:
    ids = []
    for _ in range(files):
        attachment = services.attachment_upload(
            uploader=user, upload=SimpleUploadedFile("x.png", png(), content_type="image/png"), name="x.png"
        )
        services.attachment_make_thumbnail(attachment_id=attachment.pk)
        ids.append(attachment.pk)
    message = services.message_send(
        sender=user, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body, attachment_ids=ids
    ).message
    if old:
        Message.objects.filter(pk=message.pk).update(created_at=OLD)
        Attachment.objects.filter(message_id=message.pk).update(created_at=OLD)
    return message


def stored_names(message: Message) -> list[str]:
    names: list[str] = []
    for a in Attachment.objects.filter(message_id=message.pk):
        names.append(str(a.file.name))
        if a.thumbnail:
            names.append(str(a.thumbnail.name))
    return names


def test_old_messages_become_tombstones_recent_and_held_stay(retention, django_capture_on_commit_callbacks):
    patient, doctor, conversation = pair()
    _p2, _d2, held = pair()
    services.conversation_set_legal_hold(conversation_id=held.pk, hold=True, actor=Operator(command="test"))
    old = send(patient, conversation, "old and private", files=1, old=True)
    old_reply = send(doctor, conversation, "old reply", old=True)
    recent = send(patient, conversation, "recent", files=1)
    held_old = send(_p2, held, "held evidence", files=1, old=True)
    old_files, recent_files, held_files = stored_names(old), stored_names(recent), stored_names(held_old)
    assert len(old_files) == 2  # file and thumbnail
    assert all(default_storage.exists(n) for n in old_files + recent_files + held_files)
    last_event = Conversation.objects.get(pk=conversation.pk).last_event

    with django_capture_on_commit_callbacks(execute=True):
        counts = services.retention_purge()

    assert (counts.messages, counts.attachments) == (2, 1)
    for message in (old, old_reply):
        message.refresh_from_db()
        assert message.body == ""
        assert message.deleted_at is not None
        assert message.kind == "text"
    assert Message.objects.get(pk=old.pk).seq == old.seq
    assert not any(default_storage.exists(n) for n in old_files)
    assert not Attachment.objects.filter(message_id=old.pk).exists()  # files and rows
    recent.refresh_from_db()
    held_old.refresh_from_db()
    assert (recent.body, recent.deleted_at) == ("recent", None)
    assert (held_old.body, held_old.deleted_at) == ("held evidence", None)
    assert all(default_storage.exists(n) for n in recent_files + held_files)
    # One message.updated event per erased message, after the conversation's last event.
    events = list(Event.objects.filter(conversation=conversation, number__gt=last_event).order_by("number"))
    assert [(e.kind, e.message_id) for e in events] == [
        ("message.updated", old.pk),
        ("message.updated", old_reply.pk),
    ]
    assert Conversation.objects.get(pk=conversation.pk).last_event == last_event + 2
    assert not Event.objects.filter(conversation=held, kind="message.updated").exists()


def test_sync_shows_the_tombstones(retention):
    patient, doctor, conversation = pair()
    old = send(patient, conversation, "old", old=True)
    _frames, cursor, _more = selectors.sync_events(user=doctor, cursor=None)
    services.retention_purge()
    frames, _cursor, more = selectors.sync_events(user=doctor, cursor=cursor)
    assert more is False
    assert [f["type"] for f in frames] == ["message.updated"]
    message = frames[0]["data"]["message"]
    assert (message["id"], message["seq"], message["deleted"], message["body"]) == (old.pk, old.seq, True, "")
    history, _ = selectors.message_history(
        user=doctor, conversation_id=conversation.pk, after_seq=None, before_seq=None, limit=50
    )
    assert [(m.pk, m.body, m.deleted_at is not None) for m in history] == [(old.pk, "", True)]


def test_second_run_is_a_no_op_and_the_audit_log_is_kept(retention):
    patient, _doctor, conversation = pair()
    for _ in range(3):
        send(patient, conversation, old=True)
    AuditEntry.objects.create(action=actions.HISTORY_READ, channel="rest", at=OLD)
    first = services.retention_purge()
    events = Event.objects.count()
    second = services.retention_purge()
    assert (first.messages, second.messages, second.attachments) == (3, 0, 0)
    assert Event.objects.count() == events
    assert AuditEntry.objects.filter(at=OLD).count() == 1  # never purged
    assert AuditEntry.objects.filter(action=actions.RETENTION_PURGE).count() == 1  # the first run only


def test_dry_run_changes_nothing_and_predicts_the_run(retention, capsys):
    retention.ATTACHMENT_RETENTION_DAYS = 30
    patient, _doctor, conversation = pair()
    send(patient, conversation, old=True, files=2)
    kept_text = send(patient, conversation, "files expire first", files=1)
    Attachment.objects.filter(message_id=kept_text.pk).update(created_at=timezone.now() - timedelta(days=40))
    send(patient, conversation, "new")
    snapshot = list(Message.objects.order_by("pk").values_list("pk", "body", "deleted_at"))
    files = Attachment.objects.count()
    call_command("purge_expired", "--dry-run")
    out = capsys.readouterr().out
    assert "1 messages and 3 attachments due" in out
    assert list(Message.objects.order_by("pk").values_list("pk", "body", "deleted_at")) == snapshot
    assert Attachment.objects.count() == files
    call_command("purge_expired")
    assert "erased 1 messages and 3 attachments" in capsys.readouterr().out
    kept_text.refresh_from_db()
    assert kept_text.body == "files expire first"
    assert not Attachment.objects.filter(message_id=kept_text.pk).exists()


def test_attachment_retention_alone_keeps_the_text_and_tells_clients(
    settings, django_capture_on_commit_callbacks
):
    settings.MESSAGE_RETENTION_DAYS = 0
    settings.ATTACHMENT_RETENTION_DAYS = 30
    patient, doctor, conversation = pair()
    message = send(patient, conversation, "see attached", files=1, old=True)
    names = stored_names(message)
    _f, cursor, _m = selectors.sync_events(user=doctor, cursor=None)
    with django_capture_on_commit_callbacks(execute=True):
        counts = services.retention_purge()
    assert (counts.messages, counts.attachments) == (0, 1)
    message.refresh_from_db()
    assert (message.body, message.deleted_at) == ("see attached", None)
    frames, _c, _m = selectors.sync_events(user=doctor, cursor=cursor)
    assert [
        (f["type"], f["data"]["message"]["attachments"], f["data"]["message"]["body"]) for f in frames
    ] == [("message.updated", [], "see attached")]
    assert len(names) == 2
    assert not any(default_storage.exists(n) for n in names)
    assert not Attachment.objects.filter(message_id=message.pk).exists()


def test_batches_are_separate_short_transactions(retention):
    from django.db import connection

    patient, _doctor, conversation = pair()
    for _ in range(5):
        send(patient, conversation, old=True)
    with CaptureQueriesContext(connection) as queries:
        counts = services.retention_purge(batch_size=2)
    assert counts.messages == 5
    # Inside the test's transaction each batch's atomic block is a savepoint: 3 batches.
    assert sum(1 for q in queries.captured_queries if q["sql"].startswith("SAVEPOINT")) == 3


def test_retention_off_by_default_erases_nothing(settings):
    settings.MESSAGE_RETENTION_DAYS = 0
    settings.ATTACHMENT_RETENTION_DAYS = 0
    patient, _doctor, conversation = pair()
    message = send(patient, conversation, "kept", files=1, old=True)
    assert services.retention_purge() == services.RetentionCounts(0, 0)
    assert services.retention_due() == services.RetentionCounts(0, 0)
    message.refresh_from_db()
    assert message.body == "kept"


def test_beat_runs_the_task(retention):
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["messaging-retention-purge"]
    assert entry["task"] == "messaging.tasks.retention_purge"
    patient, _doctor, conversation = pair()
    send(patient, conversation, old=True)
    assert tasks.retention_purge.delay().get() == {"messages": 1, "attachments": 0}


def test_legal_hold_service_records_who_and_when_once():
    staff = User.objects.create_superuser(phone_number="+12025550998", password="a-long-passphrase-1")
    _p, _d, conversation = pair()
    for _ in range(2):
        services.conversation_set_legal_hold(conversation_id=conversation.pk, hold=True, actor=staff)
    rows = list(AuditEntry.objects.filter(object_type="conversation", object_id=str(conversation.pk)))
    assert [(r.action, r.actor_id, r.actor_staff, r.channel) for r in rows] == [
        (actions.LEGAL_HOLD_SET, staff.pk, True, "system")
    ]
    assert timezone.now() - rows[0].at < timedelta(minutes=1)
    with pytest.raises(Exception, match="No such conversation"):
        services.conversation_set_legal_hold(conversation_id=10**12, hold=True, actor=staff)
