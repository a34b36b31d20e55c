"""Push policy and payloads, with firebase-admin talking to a fake FCM at the HTTP boundary."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import uuid

import pytest
from django.db import transaction
from django.test import TestCase
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Device
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from messaging import services as messaging_services
from messaging.models import Conversation, Membership, Message
from messaging.send_rules import WrittenHook, registry
from messaging.tests.factories import pair
from notifications import services
from notifications.models import PushDelivery, PushPreference

from .conftest import (
    BAD_GATEWAY,
    INVALID_PAYLOAD,
    INVALID_TOKEN,
    SENDER_ID_MISMATCH,
    UNREGISTERED,
    run_queued,
)

pytestmark = pytest.mark.django_db
_tokens = itertools.count(1)
State = PushDelivery.State


def device(user, *, token: bool = True, installation: bool = False, platform: str = "android") -> Device:
    n = next(_tokens)
    return DeviceFactory.create(
        user=user,
        fcm_token=f"token-{n}-{uuid.uuid4().hex}" if token else None,
        installation_id=f"fid-{n}-{uuid.uuid4().hex[:8]}" if installation else None,
        platform=platform,
    )


def states(ids) -> dict[int, tuple[str, str]]:
    return {
        pk: (s, r)
        for pk, s, r in PushDelivery.objects.filter(pk__in=ids).values_list("pk", "state", "reason")
    }


# --- the main path ----------------------------------------------------------------------------------
def test_offline_recipient_gets_exactly_one_push_per_device_without_the_text(
    fake_fcm, enqueued, send_message, settings
):
    patient, doctor, conversation = pair()
    doctor.display_name = "Dr. Amina"
    doctor.save()
    phone, tablet = device(patient), device(patient)
    device(doctor)  # the sender's own device: never
    message = send_message(doctor, conversation, "Your biopsy result is benign")

    assert [countdown for _, countdown in enqueued.calls] == [settings.PUSH_GRACE_SECONDS]
    assert fake_fcm.requests == []  # nothing before the grace period ends
    run_queued(enqueued)

    assert len(fake_fcm.requests) == 2
    assert fake_fcm.projects == ["demo-healthchat", "demo-healthchat"]
    assert {m["token"] for m in fake_fcm.messages} == {phone.fcm_token, tablet.fcm_token}
    assert "biopsy" not in fake_fcm.raw
    pushed = fake_fcm.to(phone.fcm_token)[0]
    key = f"conversation-{conversation.pk}"
    assert pushed["notification"] == {"title": "New message from Dr. Amina"}
    assert pushed["data"] == {
        "type": "message.new",
        "conversation_id": str(conversation.pk),
        "message_id": str(message.pk),
        "seq": str(message.seq),
        "badge": "1",
    }
    android = pushed["android"]
    assert android["collapse_key"] == key
    assert android["priority"] == "normal"
    assert android["ttl"] == f"{settings.PUSH_TTL_SECONDS}s"
    assert android["notification"] == {
        "tag": key,
        "channel_id": "messages",
        "notification_count": 1,
        "visibility": "PRIVATE",
    }
    assert pushed["apns"]["headers"]["apns-collapse-id"] == key
    assert pushed["apns"]["headers"]["apns-priority"] == "5"
    assert pushed["apns"]["payload"]["aps"]["badge"] == 1
    rows = PushDelivery.objects.filter(message=message)
    assert sorted(rows.values_list("device_id", "state")) == sorted(
        [(phone.pk, State.SENT), (tablet.pk, State.SENT)]
    )
    assert all(r.fcm_message_id.startswith("projects/demo-healthchat/messages/") for r in rows)


def test_retried_or_duplicated_task_never_sends_twice(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    send_message(doctor, conversation)
    ids = enqueued.ids
    services.push_deliver(delivery_ids=ids, ignore_due=True)
    services.push_deliver(delivery_ids=ids, ignore_due=True)  # a retry, a redelivery, beat
    from notifications import tasks

    tasks.push_deliver.apply(args=(ids,))
    assert len(fake_fcm.requests) == 1


def test_a_row_claimed_by_a_live_worker_is_left_alone_until_its_lease_runs_out(
    fake_fcm, enqueued, send_message, settings
):
    patient, doctor, conversation = pair()
    device(patient)
    send_message(doctor, conversation)
    ids = enqueued.ids
    now = timezone.now()
    PushDelivery.objects.filter(pk__in=ids).update(state=State.SENDING, claimed_at=now, attempts=1)
    assert services.push_deliver(delivery_ids=ids, ignore_due=True).sent == []
    assert fake_fcm.requests == []
    # The worker died mid-send: after the lease, the row is claimed again.
    expired = now - dt.timedelta(seconds=settings.PUSH_SEND_LEASE_SECONDS + 1)
    PushDelivery.objects.filter(pk__in=ids).update(claimed_at=expired)
    assert services.push_deliver(delivery_ids=ids, ignore_due=True).sent == ids
    assert len(fake_fcm.requests) == 1
    row = PushDelivery.objects.get(pk=ids[0])
    # Sent, and the row says FCM may have had it before: the dead worker's outcome is unknown.
    assert (row.state, row.attempts, row.reason) == (State.SENT, 2, services.LEASE_EXPIRED)


def test_the_task_waits_for_the_grace_period(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    send_message(doctor, conversation)
    report = services.push_deliver(delivery_ids=enqueued.ids)  # early (e.g. a redelivery)
    assert report.retry_in is not None
    assert 0 < report.retry_in <= 3
    assert fake_fcm.requests == []
    assert states(enqueued.ids) == {enqueued.ids[0]: (State.PENDING, "")}


# --- who gets nothing ---------------------------------------------------------------------------------
def test_recipient_who_got_it_on_the_socket_gets_no_push(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    message = send_message(doctor, conversation)
    # The app acknowledges the message.new frame within the grace period.
    messaging_services.receipt_mark(
        user=patient, conversation_id=conversation.pk, seq=message.seq, kind="delivered"
    )
    run_queued(enqueued)
    assert fake_fcm.requests == []
    assert set(states(PushDelivery.objects.values_list("pk", flat=True)).values()) == {
        (State.SKIPPED, "delivered")
    }


def test_read_on_another_device_counts_as_delivered(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    message = send_message(doctor, conversation)
    messaging_services.receipt_mark(
        user=patient, conversation_id=conversation.pk, seq=message.seq, kind="read"
    )
    run_queued(enqueued)
    assert fake_fcm.requests == []


def test_an_older_acknowledgement_does_not_cover_a_newer_message(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    first = send_message(doctor, conversation, "one")
    send_message(doctor, conversation, "two")
    messaging_services.receipt_mark(
        user=patient, conversation_id=conversation.pk, seq=first.seq, kind="delivered"
    )
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 1
    assert fake_fcm.messages[0]["data"]["seq"] == "2"
    assert fake_fcm.messages[0]["data"]["badge"] == "2"


def test_senders_devices_never_get_a_push(fake_fcm, enqueued, send_message):
    _patient, doctor, conversation = pair()
    device(doctor)
    device(doctor)
    send_message(doctor, conversation)
    assert enqueued.ids == []
    assert PushDelivery.objects.count() == 0
    assert fake_fcm.requests == []


def test_muted_conversation_gets_no_push(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    services.conversation_mute(user=patient, conversation_id=conversation.pk)
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert PushDelivery.objects.count() == 0
    assert fake_fcm.requests == []


def test_muted_during_the_grace_period_gets_no_push(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    send_message(doctor, conversation)
    services.conversation_mute(
        user=patient, conversation_id=conversation.pk, until=timezone.now() + dt.timedelta(hours=1)
    )
    run_queued(enqueued)
    assert fake_fcm.requests == []
    assert PushDelivery.objects.get().reason == "muted"


def test_an_expired_mute_no_longer_silences(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    Membership.objects.filter(conversation=conversation, user=patient).update(
        muted_until=timezone.now() - dt.timedelta(minutes=1)
    )
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 1


def test_message_deleted_within_the_grace_period_is_not_pushed(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    message = send_message(doctor, conversation)
    messaging_services.message_delete(user=doctor, message_id=message.pk)
    run_queued(enqueued)
    assert fake_fcm.requests == []
    assert PushDelivery.objects.get().reason == "deleted"


def test_member_removed_within_the_grace_period_is_not_pushed(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    send_message(doctor, conversation)
    Membership.objects.filter(conversation=conversation, user=patient).update(
        left_at=timezone.now(), left_seq=1, left_event=1
    )
    run_queued(enqueued)
    assert fake_fcm.requests == []
    assert PushDelivery.objects.get().reason == "not_member"


# --- what it says --------------------------------------------------------------------------------------
def test_previews_setting_shows_the_text(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    doctor.display_name = "Dr. Amina"
    doctor.save()
    services.preference_update(user=patient, previews=True)
    device(patient)
    send_message(doctor, conversation, "See you at 10 " + "x" * 500)
    run_queued(enqueued)
    notification = fake_fcm.messages[0]["notification"]
    assert notification["title"] == "Dr. Amina"
    assert notification["body"].startswith("See you at 10 xxx")
    assert len(notification["body"]) == services.PREVIEW_MAX_CHARS


def test_previews_default_setting(fake_fcm, enqueued, send_message, settings):
    settings.PUSH_PREVIEWS_DEFAULT = True
    patient, doctor, conversation = pair()
    other = PatientFactory()
    PushPreference.objects.create(user=other, previews=False)  # an explicit no wins
    device(patient)
    send_message(doctor, conversation, "visible")
    run_queued(enqueued)
    assert fake_fcm.messages[0]["notification"]["body"] == "visible"


def test_e2ee_conversation_never_carries_content(fake_fcm, enqueued, django_capture_on_commit_callbacks):
    patient, doctor, conversation = pair()
    services.preference_update(user=patient, previews=True)
    device(patient)
    Conversation.objects.filter(pk=conversation.pk).update(e2ee=True)
    marker = uuid.uuid4().hex
    # A message with text in an e2ee conversation (the encrypted send stores none), and the
    # push outbox written as every send writes it: the written hook, in the message's transaction.
    message = Message.objects.create(
        conversation=conversation, seq=1, sender=doctor, client_id=uuid.uuid4(), body=marker
    )
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=1, last_event=1)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        services.push_enqueue_batch([(message.pk, conversation.pk, doctor.pk)])
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 1
    assert marker not in fake_fcm.raw
    assert "body" not in fake_fcm.messages[0]["notification"]


def test_group_pushes_are_batched_with_one_badge_per_user(
    fake_fcm, enqueued, send_message, django_assert_num_queries
):
    from groups import services as group_services

    doctor = DoctorFactory(display_name="Dr. Amina")
    patients = [PatientFactory() for _ in range(4)]
    for p in patients:  # the doctor's patients: each has a conversation with them
        messaging_services.conversation_open_direct(user=p, peer_id=doctor.pk)
    group = group_services.group_create(
        creator=doctor, name="Diabetes support", member_ids=[p.pk for p in patients]
    )
    devices = [device(p) for p in patients for _ in range(2)]
    send_message(doctor, group, "meeting moved")
    assert len(enqueued.calls) == 1  # one task for the whole group
    # Claim (lock, memberships, mark sending), previews, badges, record: not one per device.
    with django_assert_num_queries(10):
        run_queued(enqueued)
    assert len(fake_fcm.requests) == len(devices) == 8
    assert "Diabetes" not in fake_fcm.raw  # no group name without previews
    assert "meeting" not in fake_fcm.raw
    expected = {
        m.user_id: m.conversation.last_seq - max(m.read_seq, m.joined_seq)
        for m in Membership.objects.filter(conversation=group).select_related("conversation")
    }
    for pushed in fake_fcm.messages:
        owner = Device.objects.get(fcm_token=pushed["token"]).user_id
        assert (
            pushed["data"]["badge"]
            == str(expected[owner])
            == str(pushed["android"]["notification"]["notification_count"])
        )
    assert min(expected[p.pk] for p in patients) >= 1


def test_fid_only_android_device_is_addressed_by_installation_id(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    d = device(patient, token=False, installation=True)
    device(patient, token=False, installation=True, platform="web")  # web needs a token
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert [m.get("fid") for m in fake_fcm.messages] == [d.installation_id]
    assert "token" not in fake_fcm.messages[0]


def test_a_device_whose_phone_signed_in_to_another_account_gets_no_push(fake_fcm, enqueued, send_message):
    """Trust finding 3: the shared phone's installation id now belongs to another account; the
    old account's row stays (keys, history) but its pushes stop."""
    patient, doctor, conversation = pair()
    old = device(patient, token=False, installation=True)
    account_services.device_register(
        user=PatientFactory(), platform="android", installation_id=old.installation_id
    )
    kept = device(patient)
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert [m.get("token") for m in fake_fcm.messages] == [kept.fcm_token]
    assert not PushDelivery.objects.filter(device=old).exists()


# --- FCM errors ----------------------------------------------------------------------------------------
def test_unregistered_token_only_device_is_removed(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    dead, alive = device(patient), device(patient)
    fake_fcm.script(dead.fcm_token, UNREGISTERED)
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 2  # not retried
    assert not Device.objects.filter(pk=dead.pk).exists()
    assert Device.objects.filter(pk=alive.pk).exists()
    assert PushDelivery.objects.get(device=alive).state == State.SENT


def test_unregistered_token_of_an_installation_is_cleared_and_the_device_kept(
    fake_fcm, enqueued, send_message
):
    patient, doctor, conversation = pair()
    dead = device(patient, installation=True)
    fake_fcm.script(dead.fcm_token, UNREGISTERED)
    send_message(doctor, conversation)
    run_queued(enqueued)
    dead.refresh_from_db()
    assert dead.fcm_token is None
    assert PushDelivery.objects.get(device=dead).reason == "UNREGISTERED"


def test_invalid_token_is_pruned(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    bad = device(patient)
    fake_fcm.script(bad.fcm_token, INVALID_TOKEN)
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 1
    assert not Device.objects.filter(pk=bad.pk).exists()


def test_invalid_argument_about_the_payload_keeps_the_token(fake_fcm, enqueued, send_message, caplog):
    patient, doctor, conversation = pair()
    d = device(patient)
    fake_fcm.script(d.fcm_token, INVALID_PAYLOAD)
    send_message(doctor, conversation)
    with caplog.at_level(logging.ERROR, logger="healthchat.push"):
        run_queued(enqueued)
    assert len(fake_fcm.requests) == 1
    assert Device.objects.filter(pk=d.pk, fcm_token=d.fcm_token).exists()
    assert PushDelivery.objects.get().state == State.FAILED
    assert "refused" in caplog.text


def test_sender_id_mismatch_fails_without_pruning_or_retrying(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    d = device(patient)
    fake_fcm.script(d.fcm_token, SENDER_ID_MISMATCH)
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 1
    assert Device.objects.filter(pk=d.pk, fcm_token=d.fcm_token).exists()
    row = PushDelivery.objects.get()
    assert (row.state, row.reason) == (State.FAILED, "SENDER_ID_MISMATCH")


def test_server_error_is_retried_then_sent_once(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    d = device(patient)
    fake_fcm.script(d.fcm_token, BAD_GATEWAY, (200, {"name": "projects/demo-healthchat/messages/ok"}))
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 2
    row = PushDelivery.objects.get()
    assert (row.state, row.attempts, row.fcm_message_id) == (
        State.SENT,
        2,
        "projects/demo-healthchat/messages/ok",
    )


def test_server_errors_are_retried_with_backoff_then_given_up_and_logged(
    fake_fcm, enqueued, send_message, settings, caplog
):
    settings.PUSH_MAX_ATTEMPTS = 3
    patient, doctor, conversation = pair()
    d = device(patient)
    fake_fcm.script(d.fcm_token, BAD_GATEWAY)
    send_message(doctor, conversation)
    ids = enqueued.ids
    first = services.push_deliver(delivery_ids=ids, ignore_due=True)
    assert first.retrying == ids
    assert first.retry_in is not None
    assert (
        settings.PUSH_RETRY_BACKOFF_SECONDS * 0.8
        <= first.retry_in
        <= settings.PUSH_RETRY_BACKOFF_SECONDS * 1.2
    )
    row = PushDelivery.objects.get()
    assert row.state == State.PENDING
    assert row.due_at > timezone.now()
    second = services.push_deliver(delivery_ids=ids)  # the backoff has not passed: nothing sent
    assert second.sent == second.retrying == []
    with caplog.at_level(logging.ERROR, logger="healthchat.push"):
        services.push_deliver(delivery_ids=ids, ignore_due=True)
        services.push_deliver(delivery_ids=ids, ignore_due=True)
        services.push_deliver(delivery_ids=ids, ignore_due=True)  # nothing left to do
    assert len(fake_fcm.requests) == 3
    row.refresh_from_db()
    assert (row.state, row.attempts, row.reason) == (State.FAILED, 3, "gave_up:UNAVAILABLE")
    assert "given up" in caplog.text
    assert Device.objects.filter(pk=d.pk).exists()


def test_eager_task_retries_until_the_attempts_run_out(fake_fcm, enqueued, send_message, settings):
    settings.PUSH_MAX_ATTEMPTS = 4
    patient, doctor, conversation = pair()
    d = device(patient)
    fake_fcm.script(d.fcm_token, BAD_GATEWAY)
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 4
    assert PushDelivery.objects.get().state == State.FAILED


# --- edits and deletes: data-only pushes to the devices that were notified --------------------------------
def test_edit_and_delete_send_a_data_push_to_notified_devices(fake_fcm, enqueued, send_message, settings):
    patient, doctor, conversation = pair()
    notified = device(patient)
    message = send_message(doctor, conversation, "first text")
    run_queued(enqueued)
    later = device(patient)  # registered after the push: it never showed the notification
    fake_fcm.requests.clear()

    _edit(doctor, message, "second text")
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 1
    pushed = fake_fcm.messages[0]
    assert pushed["token"] == notified.fcm_token != later.fcm_token
    assert "notification" not in pushed
    assert "notification" not in pushed["android"]
    assert pushed["android"]["collapse_key"] == f"message-{message.pk}"
    assert pushed["data"]["type"] == "message.updated"
    assert pushed["data"]["deleted"] == "false"
    assert pushed["data"]["message_id"] == str(message.pk)
    assert pushed["apns"]["payload"]["aps"]["content-available"] == 1
    assert "text" not in json.dumps(pushed["data"])

    fake_fcm.requests.clear()
    _delete(doctor, message)
    run_queued(enqueued)
    assert [m["data"]["deleted"] for m in fake_fcm.messages] == ["true"]
    assert PushDelivery.objects.filter(kind="message.updated").count() == 2


def test_no_update_push_for_a_message_nobody_was_notified_of(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    message = send_message(doctor, conversation)
    messaging_services.receipt_mark(
        user=patient, conversation_id=conversation.pk, seq=message.seq, kind="read"
    )
    run_queued(enqueued)
    _edit(doctor, message, "edited")
    run_queued(enqueued)
    assert fake_fcm.requests == []


def _edit(user, message, body):
    with TestCase.captureOnCommitCallbacks(execute=True):
        messaging_services.message_edit(user=user, message_id=message.pk, body=body)


def _delete(user, message):
    with TestCase.captureOnCommitCallbacks(execute=True):
        messaging_services.message_delete(user=user, message_id=message.pk)


# --- the outbox survives a lost broker ----------------------------------------------------------------
def test_broker_down_the_message_is_still_sent_and_beat_requeues_the_push(
    fake_fcm, monkeypatch, send_message, enqueued
):
    from kombu.exceptions import OperationalError

    from notifications import tasks

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    patient, doctor, conversation = pair()
    device(patient)
    monkeypatch.setattr(tasks.push_deliver, "apply_async", broker_down)
    message = send_message(doctor, conversation)  # does not raise
    row = PushDelivery.objects.get(message=message)
    assert row.state == State.PENDING

    monkeypatch.undo()
    recorder = []
    monkeypatch.setattr(
        tasks.push_deliver, "apply_async", lambda args=None, countdown=0, **kw: recorder.append(args[0])
    )
    assert services.push_requeue() == 0  # not stale yet
    PushDelivery.objects.filter(pk=row.pk).update(due_at=timezone.now() - dt.timedelta(minutes=5))
    assert services.push_requeue() == 1
    assert recorder == [[row.pk]]
    tasks.push_deliver.apply(args=(recorder[0],))
    assert len(fake_fcm.requests) == 1
    assert services.push_requeue(older_than=0) == 0  # sent rows are never re-queued


def test_a_failing_push_hook_does_not_fail_the_send(send_message, caplog):
    def broken(written):
        raise RuntimeError("database hiccup")

    hook = WrittenHook(name=services.PUSH_OUTBOX_HOOK.name, statement=broken, orm=broken)
    _patient, doctor, conversation = pair()
    with registry.replaced(hooks=[hook]), caplog.at_level(logging.ERROR, logger="healthchat.messaging"):
        message = send_message(doctor, conversation)
    assert Message.objects.filter(pk=message.pk).exists()
    assert "batch hook failed: notifications.push_outbox" in caplog.text


def test_cleanup_forgets_old_finished_rows(fake_fcm, enqueued, send_message):
    patient, doctor, conversation = pair()
    device(patient)
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert services.push_cleanup(days=1) == 0
    PushDelivery.objects.update(created_at=timezone.now() - dt.timedelta(days=2))
    assert services.push_cleanup(days=1) == 1


# --- calls ------------------------------------------------------------------------------------------------
def test_incoming_call_is_a_high_priority_data_push_and_cancel_reaches_rung_devices(
    fake_fcm, enqueued, settings, django_capture_on_commit_callbacks
):
    patient, doctor, conversation = pair()
    ringing = device(patient)
    device(doctor)
    with django_capture_on_commit_callbacks(execute=True):
        services.push_incoming_call(
            call_id="call-1", conversation_id=conversation.pk, caller_id=doctor.pk, callee_ids=[patient.pk]
        )
    assert [countdown for _, countdown in enqueued.calls] == [0]
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 1
    ring = fake_fcm.messages[0]
    assert ring["token"] == ringing.fcm_token
    assert "notification" not in ring
    assert ring["android"]["priority"] == "high"
    assert ring["android"]["ttl"] == f"{settings.PUSH_CALL_TTL_SECONDS}s"
    assert ring["android"]["collapse_key"] == "call-call-1"
    assert ring["data"] == {
        "type": "call.incoming",
        "call_id": "call-1",
        "conversation_id": str(conversation.pk),
    }

    later = device(patient)
    with django_capture_on_commit_callbacks(execute=True):
        services.push_call_cancelled(call_id="call-1")
    run_queued(enqueued)
    assert [m["token"] for m in fake_fcm.messages[1:]] == [ringing.fcm_token]
    assert fake_fcm.messages[1]["data"]["type"] == "call.cancelled"
    assert later.fcm_token not in fake_fcm.raw


def test_a_call_push_that_waited_too_long_is_dropped(
    fake_fcm, enqueued, django_capture_on_commit_callbacks, settings
):
    patient, doctor, conversation = pair()
    device(patient)
    with django_capture_on_commit_callbacks(execute=True):
        ids = services.push_incoming_call(
            call_id="c2", conversation_id=conversation.pk, caller_id=doctor.pk, callee_ids=[patient.pk]
        )
    PushDelivery.objects.filter(pk__in=ids).update(
        created_at=timezone.now() - dt.timedelta(seconds=settings.PUSH_CALL_TTL_SECONDS + 5)
    )
    run_queued(enqueued)
    assert fake_fcm.requests == []
    assert PushDelivery.objects.get().reason == "expired"


# --- the embedded default: the log, without content ---------------------------------------------------
def test_log_backend_writes_ids_but_no_content(enqueued, send_message, settings, caplog):
    settings.PUSH_BACKEND = "log"
    patient, doctor, conversation = pair()
    doctor.display_name = "Dr. Secretname"
    doctor.save()
    services.preference_update(user=patient, previews=True)
    device(patient)
    message = send_message(doctor, conversation, "private symptom text")
    with caplog.at_level(logging.INFO, logger="healthchat.push"):
        run_queued(enqueued)
    assert "push (log backend) kind=message" in caplog.text
    assert f'"message_id": "{message.pk}"' in caplog.text
    assert "symptom" not in caplog.text
    assert "Secretname" not in caplog.text
    assert PushDelivery.objects.get().state == State.SENT


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_tasks_send_once(fake_fcm, enqueued, django_capture_on_commit_callbacks):
    import threading

    from django.db import connection

    patient, doctor, conversation = pair()
    device(patient)
    device(patient)
    messaging_services.message_send(
        sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="x"
    )
    ids = enqueued.ids
    assert len(ids) == 2
    fake_fcm.delay = 0.3  # the first task is mid-send while the others try
    barrier = threading.Barrier(4)
    reports = []

    def worker():
        try:
            barrier.wait()
            reports.append(services.push_deliver(delivery_ids=ids, ignore_due=True))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_fcm.requests) == 2
    assert sorted(pk for r in reports for pk in r.sent) == sorted(ids)


def test_quota_exceeded_is_retried(fake_fcm, enqueued, send_message):
    from .conftest import fcm_code, fcm_error

    patient, doctor, conversation = pair()
    d = device(patient)
    quota = fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", fcm_code("QUOTA_EXCEEDED"))
    fake_fcm.script(d.fcm_token, quota, (200, {"name": "projects/demo-healthchat/messages/2"}))
    send_message(doctor, conversation)
    run_queued(enqueued)
    assert len(fake_fcm.requests) == 2
    assert PushDelivery.objects.get().state == State.SENT


def test_enqueue_cost_on_the_send_path(django_assert_num_queries, enqueued):
    """What message_send's on-commit hook costs: one INSERT ... SELECT finds the devices (not
    muted) and writes their rows, inside a savepoint."""
    patient, doctor, conversation = pair()
    device(patient)
    device(patient)
    message = _message(doctor, conversation)
    with django_assert_num_queries(3):  # savepoint, insert ... select ... returning, release
        ids = services.push_enqueue_message(
            message_id=message.pk,
            conversation_id=conversation.pk,
            sender_id=doctor.pk,
            recipient_ids=[patient.pk],
        )
    assert len(ids) == 2


def _message(sender, conversation) -> Message:
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=1, last_event=1)
    return Message.objects.create(conversation=conversation, seq=1, sender=sender, client_id=uuid.uuid4())


def test_group_commit_writes_the_outbox_in_the_batch_transaction(django_capture_on_commit_callbacks):
    """Socket sends are batched: the batch hook writes every message's rows in one statement,
    inside the messages' own transaction, and queues one task after the commit."""
    patient, doctor, conversation = pair()
    phone, tablet = device(patient), device(patient)
    device(doctor)  # the sender's own device never gets a push
    items = [
        messaging_services.SendRequest(
            sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=f"m{i}"
        )
        for i in range(3)
    ]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        results = messaging_services.message_send_many(requests=items)
    assert all(r.created for r in results)
    rows = PushDelivery.objects.filter(kind=PushDelivery.Kind.MESSAGE).order_by("message_id", "device_id")
    assert [(r.message_id, r.device_id) for r in rows] == [
        (m.message.pk, d.pk) for m in results for d in sorted((phone, tablet), key=lambda d: d.pk)
    ]
    assert {r.state for r in rows} == {PushDelivery.State.PENDING}
    assert callbacks  # fan-out and the single push task are queued for after the commit
