"""Scheduled messages on the real PostgreSQL: a doctor schedules, edits and cancels while pending;
the dispatcher sends a due one exactly once through messaging's send path (every rule asked at
send time) and tells the author when it is refused."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from accounts import services as account_services
from accounts.tests.factories import DoctorFactory, PatientFactory
from groups import services as group_services
from messaging import services as messaging_services
from messaging.models import Event, Message
from messaging.tests.factories import pair
from scheduled import dispatch, services
from scheduled.models import ScheduledMessage

pytestmark = pytest.mark.django_db

URL = "/api/v1/scheduled-messages"


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, dict[str, Any]]]:
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        messaging_services.events, "publish", lambda group, event: sent.append((group, event))
    )
    return sent


def frames(published, user_id: int, kind: str) -> list[dict[str, Any]]:
    return [e["frame"] for g, e in published if g == f"user.{user_id}" and e["frame"]["type"] == kind]


def later(minutes: int = 60):
    return timezone.now() + timedelta(minutes=minutes)


def test_doctor_schedules_and_it_is_sent_once_at_its_time(api, published, django_capture_on_commit_callbacks):
    patient, doctor, conversation = pair()
    with django_capture_on_commit_callbacks(execute=True):  # the task at send_at runs eagerly: not due
        response = api(doctor).post(
            URL,
            {
                "conversation_id": conversation.pk,
                "body": "Take your second dose at 20:00",
                "send_at": later().isoformat(),
            },
            format="json",
        )
    assert response.status_code == 201, response.content
    row = response.json()
    assert (row["state"], row["body"], row["message_id"], row["failure_code"]) == (
        "pending",
        "Take your second dose at 20:00",
        None,
        None,
    )
    assert (
        frames(published, doctor.pk, "scheduled_message.updated")[-1]["data"]["scheduled_message"]["id"]
        == row["id"]
    )

    # Not due yet: the sweep sends nothing.
    assert dispatch.scheduled_dispatch_due() == {"sent": 0, "failed": 0, "skipped": 0}
    assert not Message.objects.filter(conversation=conversation).exists()

    due = timezone.now() + timedelta(hours=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.scheduled_dispatch_due(now=due) == {"sent": 1, "failed": 0, "skipped": 0}
    message = Message.objects.get(conversation=conversation)
    assert (message.sender_id, message.body, str(message.client_id)) == (
        doctor.pk,
        "Take your second dose at 20:00",
        row["client_id"],
    )
    assert Event.objects.filter(conversation=conversation, kind="message.new", message=message).count() == 1
    # As if the author sent it: the patient's devices get message.new; the author's the new state.
    assert frames(published, patient.pk, "message.new")[-1]["data"]["message"]["id"] == message.pk
    update = frames(published, doctor.pk, "scheduled_message.updated")[-1]["data"]["scheduled_message"]
    assert (update["state"], update["message_id"], update["body"]) == ("sent", message.pk, "")

    # Again (a repeated task, the next sweep): nothing more.
    assert dispatch.scheduled_dispatch(scheduled_id=row["id"], now=due) == "skipped"
    assert dispatch.scheduled_dispatch_due(now=due + timedelta(hours=1))["sent"] == 0
    assert Message.objects.filter(conversation=conversation).count() == 1
    stored = ScheduledMessage.objects.get(pk=row["id"])
    assert (stored.state, stored.body, stored.message_id) == ("sent", "", message.pk)


def test_list_edit_and_cancel_while_pending(api):
    _patient, doctor, conversation = pair()
    first = (
        api(doctor)
        .post(
            URL,
            {"conversation_id": conversation.pk, "body": "one", "send_at": later().isoformat()},
            format="json",
        )
        .json()
    )
    second = (
        api(doctor)
        .post(
            URL,
            {"conversation_id": conversation.pk, "body": "two", "send_at": later(90).isoformat()},
            format="json",
        )
        .json()
    )

    edited = api(doctor).patch(
        f"{URL}/{first['id']}", {"body": "one, edited", "send_at": later(30).isoformat()}, format="json"
    )
    assert edited.status_code == 200, edited.content
    assert edited.json()["body"] == "one, edited"
    cancelled = api(doctor).delete(f"{URL}/{second['id']}")
    assert cancelled.status_code == 200
    assert (cancelled.json()["state"], cancelled.json()["body"]) == ("cancelled", "")

    listed = api(doctor).get(URL).json()["results"]
    assert [(r["id"], r["state"]) for r in listed] == [(second["id"], "cancelled"), (first["id"], "pending")]
    pending = api(doctor).get(URL, {"state": "pending"}).json()["results"]
    assert [r["id"] for r in pending] == [first["id"]]

    # Not pending any more: no edit, no second cancel.
    again = api(doctor).patch(f"{URL}/{second['id']}", {"body": "revived"}, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "scheduled_message_not_pending")
    assert (
        api(doctor).delete(f"{URL}/{second['id']}").json()["error"]["code"] == "scheduled_message_not_pending"
    )
    # A cancelled one is never sent.
    dispatch.scheduled_dispatch_due(now=later(200))
    assert list(Message.objects.filter(conversation=conversation).values_list("body", flat=True)) == [
        "one, edited"
    ]


def test_only_the_author_sees_or_touches_it(api):
    patient, doctor, conversation = pair()
    row = (
        api(doctor)
        .post(
            URL,
            {"conversation_id": conversation.pk, "body": "private plan", "send_at": later().isoformat()},
            format="json",
        )
        .json()
    )
    for other in (patient, DoctorFactory()):
        for method, body in (("get", None), ("patch", {"body": "x"}), ("delete", None)):
            response = getattr(api(other), method)(f"{URL}/{row['id']}", body, format="json")
            assert (response.status_code, response.json()["error"]["code"]) == (
                404,
                "scheduled_message_not_found",
            )
        assert api(other).get(URL).json()["results"] == []


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("patient", 403, "scheduling_not_allowed"),
        ("not_member", 404, "conversation_not_found"),
        ("e2ee", 422, "scheduling_e2ee_unsupported"),
        ("past", 400, "invalid_send_at"),
        ("too_far", 400, "invalid_send_at"),
        ("naive", 400, "invalid_send_at"),
        ("blank", 400, "empty_message"),
        ("empty", 400, "empty_message"),
        ("control", 400, "invalid_body"),
        ("unknown_field", 400, "unknown_field"),
    ],
)
def test_refusals_at_scheduling(api, case, status, code):
    patient, doctor, conversation = pair()
    author, body = (
        doctor,
        {"conversation_id": conversation.pk, "body": "hello", "send_at": later().isoformat()},
    )
    if case == "patient":
        author = patient
    elif case == "not_member":
        author = DoctorFactory()
    elif case == "e2ee":
        other = PatientFactory()
        encrypted, _ = messaging_services.conversation_open_direct(user=other, peer_id=doctor.pk, e2ee=True)
        body["conversation_id"] = encrypted.pk
    elif case == "past":
        body["send_at"] = (timezone.now() - timedelta(minutes=1)).isoformat()
    elif case == "too_far":
        body["send_at"] = (timezone.now() + timedelta(days=400)).isoformat()
    elif case == "naive":  # within range: refused for its missing offset, not read as UTC
        body["send_at"] = later().replace(tzinfo=None).isoformat()
    elif case == "blank":
        body["body"] = "   "
    elif case == "empty":
        body["body"] = ""
    elif case == "control":
        body["body"] = "a\x07b"
    elif case == "unknown_field":
        body["reply_to"] = 1
    response = api(author).post(URL, body, format="json")
    assert response.status_code == status, response.content
    error = response.json()["error"]
    fields = [
        c["code"] if isinstance(c, dict) else c
        for items in (error.get("fields") or {}).values()
        for c in items
    ]
    assert code in {error["code"], *fields}, error
    if case != "unknown_field":  # the documented code itself, not DRF's ``invalid``
        assert error["code"] == code, error
    assert not ScheduledMessage.objects.exists()


def test_an_edit_is_refused_with_the_same_codes(api):
    _patient, doctor, conversation = pair()
    row, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="hello", send_at=later()
    )
    for change, code in [
        ({"body": ""}, "empty_message"),
        ({"send_at": later(30).replace(tzinfo=None).isoformat()}, "invalid_send_at"),
    ]:
        response = api(doctor).patch(f"{URL}/{row.pk}", change, format="json")
        assert (response.status_code, response.json()["error"]["code"]) == (400, code), change
    row.refresh_from_db()
    assert (row.body, row.state) == ("hello", "pending")


def test_idempotent_on_client_id_and_bounded(api, settings):
    _patient, doctor, conversation = pair()
    client_id = str(uuid.uuid4())
    body = {
        "conversation_id": conversation.pk,
        "body": "once",
        "send_at": later().isoformat(),
        "client_id": client_id,
    }
    first = api(doctor).post(URL, body, format="json")
    again = api(doctor).post(URL, body, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    settings.SCHEDULED_MESSAGE_MAX_PENDING = 2
    assert api(doctor).post(URL, {**body, "client_id": str(uuid.uuid4())}, format="json").status_code == 201
    over = api(doctor).post(URL, {**body, "client_id": str(uuid.uuid4())}, format="json")
    assert (over.status_code, over.json()["error"]["code"]) == (409, "too_many_scheduled")


@pytest.mark.parametrize("what", ["removed_from_group", "blocked_by_patient", "author_deactivated"])
def test_send_rules_apply_at_send_time_and_the_author_is_told(
    published, what, django_capture_on_commit_callbacks
):
    patient, doctor, conversation = pair()
    target = conversation.pk
    if what == "removed_from_group":
        owner = DoctorFactory()
        messaging_services.conversation_open_direct(user=patient, peer_id=owner.pk)
        messaging_services.conversation_open_direct(user=doctor, peer_id=owner.pk)
        group = group_services.group_create(
            creator=owner, name="Care team", member_ids=[doctor.pk, patient.pk]
        )
        target = group.pk
    row, _ = services.scheduled_create(
        author=doctor, conversation_id=target, body="see you at 8", send_at=later()
    )
    if what == "removed_from_group":
        group_services.member_remove(actor=owner, group_id=target, user_id=doctor.pk)
    elif what == "blocked_by_patient":
        messaging_services.block_user(user=patient, blocked_id=doctor.pk)
    else:
        type(doctor).objects.filter(pk=doctor.pk).update(is_active=False)

    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.scheduled_dispatch(scheduled_id=row.pk, now=later(61)) == "failed"

    row.refresh_from_db()
    expected = {
        "removed_from_group": "conversation_not_found",
        "blocked_by_patient": "blocked",
        "author_deactivated": "author_inactive",
    }[what]
    assert (row.state, row.failure_code, row.message_id) == ("failed", expected, None)
    assert row.body == "see you at 8"  # kept, so the author can see what was not sent
    assert not Message.objects.filter(conversation_id=target, kind="text").exists()
    told = frames(published, doctor.pk, "scheduled_message.updated")[-1]["data"]["scheduled_message"]
    assert (told["state"], told["failure_code"]) == ("failed", expected)
    assert not frames(published, patient.pk, "message.new")


@pytest.mark.django_db(transaction=True)
def test_concurrent_dispatchers_send_it_once():
    """Eight dispatchers at once on the same due row (threads, each its own connection)."""
    _patient, doctor, conversation = pair()
    row, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="at once", send_at=later()
    )
    due = later(61)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def one_dispatcher() -> None:
        try:
            barrier.wait()
            outcomes.append(dispatch.scheduled_dispatch(scheduled_id=row.pk, now=due))
        finally:
            connection.close()

    threads = [threading.Thread(target=one_dispatcher) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["sent"] + ["skipped"] * 7
    assert Message.objects.filter(conversation=conversation).count() == 1


def test_an_edit_after_the_send_is_refused():
    """The edit locks the row (so it would wait for a send in flight) and finds it sent."""
    _patient, doctor, conversation = pair()
    row, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="v1", send_at=later()
    )
    assert dispatch.scheduled_dispatch(scheduled_id=row.pk, now=later(61)) == "sent"
    with pytest.raises(Exception, match="sent already"):
        services.scheduled_update(author=doctor, scheduled_id=row.pk, body="v2")
    assert Message.objects.get(conversation=conversation).body == "v1"


def test_export_erasure_and_purge(settings, firebase_admin_api):
    _patient, doctor, conversation = pair()
    pending, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="p", send_at=later()
    )
    sent, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="s", send_at=later(5)
    )
    dispatch.scheduled_dispatch(scheduled_id=sent.pk, now=later(6))
    exported = account_services.user_export(user=doctor)["scheduled_messages"]
    assert [(e["id"], e["state"]) for e in exported] == [(pending.pk, "pending"), (sent.pk, "sent")]

    settings.SCHEDULED_MESSAGE_KEEP_DAYS = 30
    assert dispatch.scheduled_purge_finished(now=timezone.now() + timedelta(days=29)) == 0
    assert dispatch.scheduled_purge_finished(now=timezone.now() + timedelta(days=31)) == 1
    assert list(ScheduledMessage.objects.values_list("pk", flat=True)) == [pending.pk]

    account_services.user_delete(user=doctor, actor=doctor)
    assert not ScheduledMessage.objects.exists()


# --- Bound to the consultation it was written in (issue 24's example) -----------------------
def _consultation_between(patient, doctor):
    """A consultation requested through the real service (the development provider)."""
    from payments.tests.factories import requested

    return requested(patient, doctor)


def _end(consultation, how: str) -> None:
    """Move the consultation on: ``closed`` (completed, follow-up window over), ``in_window``
    (completed, window still open) or ``cancelled``."""
    from payments.models import Consultation

    now = timezone.now()
    if how == "cancelled":
        Consultation.objects.filter(pk=consultation.pk).update(state="cancelled", ended_at=now)
        return
    closes_at = now - timedelta(minutes=1) if how == "closed" else now + timedelta(days=3)
    Consultation.objects.filter(pk=consultation.pk).update(
        state="completed",
        accepted_at=now - timedelta(days=9),
        completed_at=closes_at - timedelta(days=7),
        closes_at=closes_at,
    )


def _pushed(monkeypatch) -> list[Any]:
    """The pushes handed to FCM (the real outbox, claim and render; only the HTTP send is caught)."""
    from notifications import fcm

    sent: list[Any] = []

    def capture(pushes):
        sent.extend(pushes)
        return [fcm.Result(fcm.Outcome.SENT, message_id=f"m{i}") for i, _ in enumerate(pushes)]

    monkeypatch.setattr(fcm, "send_batch", capture)
    return sent


def test_a_consultation_closed_meanwhile_refuses_it_and_the_author_is_told_by_event_and_push(
    api, published, monkeypatch, django_capture_on_commit_callbacks
):
    from accounts.tests.factories import DeviceFactory
    from notifications.models import PushDelivery

    patient, doctor, conversation = pair()
    consultation = _consultation_between(patient, doctor)
    assert consultation.conversation_id == conversation.pk
    DeviceFactory(user=doctor, fcm_token="doctor-phone", installation_id=None)
    pushes = _pushed(monkeypatch)
    response = api(doctor).post(
        URL,
        {
            "conversation_id": conversation.pk,
            "body": "Take your second dose at 20:00",
            "send_at": later().isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["consultation_id"] == consultation.pk
    row = ScheduledMessage.objects.get(pk=response.json()["id"])

    _end(consultation, "closed")
    # The doctor could still write there by hand (the closed rule limits patients only) ...
    assert messaging_services.send(
        messaging_services.SendRequest(
            sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="by hand"
        )
    ).created
    # ... but the message written for that consultation is not sent once it is over.
    with django_capture_on_commit_callbacks(execute=True):
        assert dispatch.scheduled_dispatch(scheduled_id=row.pk, now=later(61)) == "failed"

    row.refresh_from_db()
    assert (row.state, row.failure_code, row.message_id) == ("failed", "consultation_closed", None)
    assert row.body == "Take your second dose at 20:00"
    assert list(
        Message.objects.filter(conversation=conversation, kind="text").values_list("body", flat=True)
    ) == ["by hand"]
    told = frames(published, doctor.pk, "scheduled_message.updated")[-1]["data"]["scheduled_message"]
    assert (told["id"], told["state"], told["failure_code"], told["consultation_id"]) == (
        row.pk,
        "failed",
        "consultation_closed",
        consultation.pk,
    )
    assert not frames(published, patient.pk, "scheduled_message.updated")

    # One push to the author's phone, without the text.
    delivery = PushDelivery.objects.get(kind="scheduled.failed")
    assert (delivery.device.user_id, delivery.ref, delivery.state) == (
        doctor.pk,
        f"{row.pk}:consultation_closed",
        "sent",
    )
    [push] = pushes
    assert push.token == "doctor-phone"
    assert push.data == {
        "type": "scheduled_message.failed",
        "scheduled_message_id": str(row.pk),
        "failure_code": "consultation_closed",
    }
    assert "dose" not in f"{push.title} {push.body} {push.data}"
    # Dispatching again (a repeated task, a sweep) changes nothing and pushes nothing more.
    assert dispatch.scheduled_dispatch(scheduled_id=row.pk, now=later(62)) == "skipped"
    assert PushDelivery.objects.filter(kind="scheduled.failed").count() == 1


@pytest.mark.parametrize(
    ("how", "outcome", "code"),
    [("in_window", "sent", ""), ("cancelled", "failed", "consultation_closed"), ("open", "sent", "")],
)
def test_the_bound_consultation_decides_at_send_time(how, outcome, code):
    patient, doctor, conversation = pair()
    consultation = _consultation_between(patient, doctor)
    row, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="how are you?", send_at=later()
    )
    assert row.bindings == {"consultation": consultation.pk}
    if how != "open":
        _end(consultation, how)
    assert dispatch.scheduled_dispatch(scheduled_id=row.pk, now=later(61)) == outcome
    row.refresh_from_db()
    assert (row.state, row.failure_code) == (outcome, code)


def test_unbound_when_no_consultation_is_open_and_a_new_one_does_not_revive_a_closed_one():
    # No consultation in the conversation: nothing to bind, only the send rules apply.
    _patient, doctor, conversation = pair()
    row, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="hi", send_at=later()
    )
    assert row.bindings == {}
    assert dispatch.scheduled_dispatch(scheduled_id=row.pk, now=later(61)) == "sent"

    # Bound to the first consultation; it closes and a new one opens: still refused.
    patient, doctor, conversation = pair()
    first = _consultation_between(patient, doctor)
    row, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="for the first", send_at=later()
    )
    _end(first, "closed")
    second = _consultation_between(patient, doctor)
    assert second.pk != first.pk
    assert dispatch.scheduled_dispatch(scheduled_id=row.pk, now=later(61)) == "failed"
    row.refresh_from_db()
    assert row.failure_code == "consultation_closed"
    # One written now is bound to the new consultation.
    newer, _ = services.scheduled_create(
        author=doctor, conversation_id=conversation.pk, body="for the second", send_at=later()
    )
    assert newer.bindings == {"consultation": second.pk}
