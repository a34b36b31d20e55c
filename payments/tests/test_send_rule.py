"""After a consultation closes (completion + follow-up window) the patient may read, not write."""

import datetime as dt
import uuid

import pytest
from django.utils import timezone

from healthchat.errors import ApplicationError
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
