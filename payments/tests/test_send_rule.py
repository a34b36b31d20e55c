"""After a consultation closes (completion + follow-up window) the patient may read, not write."""

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from core.errors import ApplicationError
from messaging import services as messaging
from payments.models import Consultation
from payments.tests.factories import completed, people, requested

pytestmark = pytest.mark.django_db


def send(user, conversation_id):
    return messaging.message_send(
        sender=user, conversation_id=conversation_id, client_id=uuid.uuid4(), body="hi"
    )


def test_read_only_for_the_patient_after_the_follow_up_window(stripe_fake):
    patient, doctor = people()
    consultation = completed(patient, doctor, stripe_fake)
    conversation_id = consultation.conversation_id
    assert send(patient, conversation_id).created  # inside the follow-up window
    Consultation.objects.filter(pk=consultation.pk).update(closes_at=timezone.now() - dt.timedelta(minutes=1))
    with pytest.raises(ApplicationError) as info:
        send(patient, conversation_id)
    assert info.value.code == "consultation_closed"
    assert info.value.status == 403
    assert send(doctor, conversation_id).created  # the doctor may still write
    requested(patient, doctor)  # a new consultation opens the conversation again
    assert send(patient, conversation_id).created


def test_conversations_without_consultations_are_not_affected():
    from messaging.tests.factories import pair

    patient, _doctor, conversation = pair()
    assert send(patient, conversation.pk).created


def test_group_commit_asks_the_rule_once_for_the_whole_batch(stripe_fake, django_assert_max_num_queries):
    patient, doctor = people()
    consultation = completed(patient, doctor, stripe_fake)
    conversation_id = consultation.conversation_id
    Consultation.objects.filter(pk=consultation.pk).update(closes_at=timezone.now() - dt.timedelta(minutes=1))
    from messaging.tests.factories import pair

    other_patient, _other_doctor, other_conversation = pair()
    items = [
        messaging.SendRequest(
            sender=patient, conversation_id=conversation_id, client_id=uuid.uuid4(), body="no"
        ),
        messaging.SendRequest(
            sender=doctor, conversation_id=conversation_id, client_id=uuid.uuid4(), body="yes"
        ),
        messaging.SendRequest(
            sender=other_patient,
            conversation_id=other_conversation.pk,
            client_id=uuid.uuid4(),
            body="yes",
        ),
        messaging.SendRequest(
            sender=patient, conversation_id=conversation_id, client_id=uuid.uuid4(), body="no"
        ),
    ]
    with django_assert_max_num_queries(8):
        results = messaging.message_send_many(requests=items)
    assert [getattr(r, "code", None) for r in results] == [
        "consultation_closed",
        None,
        None,
        "consultation_closed",
    ]
    assert results[1].created
    assert results[2].created


def test_a_refusal_on_the_one_round_trip_path_redoes_the_batch(stripe_fake, monkeypatch):
    """Once the process knows a conversation's kind, its batch is locked, written and checked
    by the rule in one round trip; a send the rule refuses was written already, so the batch
    is undone and redone send by send: the refused send is not stored, the others are, gapless."""
    from messaging.models import Message

    patient, doctor = people()
    consultation = completed(patient, doctor, stripe_fake)
    conversation_id = consultation.conversation_id
    messaging.known_kinds.pop(conversation_id, None)
    first = messaging.message_send_many(
        requests=[
            messaging.SendRequest(
                sender=doctor, conversation_id=conversation_id, client_id=uuid.uuid4(), body="1"
            )
        ]
    )
    assert first[0].created
    assert conversation_id in messaging.known_kinds  # remembered from the locks' answer
    Consultation.objects.filter(pk=consultation.pk).update(closes_at=timezone.now() - dt.timedelta(minutes=1))
    paths: list[str] = []
    known, one_by_one = messaging.send_batch._write_known_batch, messaging.send_batch._write_one_by_one
    monkeypatch.setattr(
        messaging.send_batch, "_write_known_batch", lambda *a, **k: paths.append("known") or known(*a, **k)
    )
    monkeypatch.setattr(
        messaging.send_batch, "_write_one_by_one", lambda *a: paths.append("redo") or one_by_one(*a)
    )
    results = messaging.message_send_many(
        requests=[
            messaging.SendRequest(
                sender=patient, conversation_id=conversation_id, client_id=uuid.uuid4(), body="no"
            ),
            messaging.SendRequest(
                sender=doctor, conversation_id=conversation_id, client_id=uuid.uuid4(), body="2"
            ),
        ]
    )
    assert paths == ["known", "redo"]
    assert getattr(results[0], "code", None) == "consultation_closed"
    assert results[1].data["seq"] == first[0].data["seq"] + 1
    stored = Message.objects.filter(conversation_id=conversation_id, sender=doctor).order_by("seq")
    assert [m.body for m in stored] == ["1", "2"]
    assert not Message.objects.filter(conversation_id=conversation_id, body="no").exists()
