"""Messaging REST: conversations, history (keyset on seq), blocks; authorization and query counts."""

import uuid

import pytest

from accounts.actors import Operator
from accounts.models import DoctorProfile
from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging import services
from messaging.models import Conversation, Membership
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db


def send(user, conversation, n=1, prefix="m"):
    return [
        services.message_send(
            sender=user, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=f"{prefix}{i}"
        ).message
        for i in range(n)
    ]


def test_patient_opens_direct_conversation_with_verified_doctor_idempotently(api):
    patient, doctor = PatientFactory(), DoctorFactory()
    first = api(patient).post("/api/v1/conversations", {"peer_id": doctor.pk}, format="json")
    assert first.status_code == 201, first.content
    again = api(patient).post("/api/v1/conversations", {"peer_id": doctor.pk}, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    from_doctor = api(doctor).post("/api/v1/conversations", {"peer_id": patient.pk}, format="json")
    assert from_doctor.status_code == 200
    assert from_doctor.json()["id"] == first.json()["id"]
    assert Conversation.objects.count() == 1
    body = first.json()
    assert body["kind"] == "direct"
    assert {m["user_id"] for m in body["members"]} == {patient.pk, doctor.pk}


@pytest.mark.parametrize(
    ("setup", "status", "code"),
    [
        ("unverified_doctor", 403, "contact_not_allowed"),
        ("patient_to_patient", 403, "contact_not_allowed"),
        ("doctor_to_new_patient", 403, "contact_not_allowed"),
        ("blocked", 403, "blocked"),
        ("self", 400, "cannot_contact_self"),
        ("missing", 404, "user_not_found"),
    ],
)
def test_who_may_open_a_conversation(api, setup, status, code):
    patient = PatientFactory()
    caller, peer_id = patient, None
    if setup == "unverified_doctor":
        peer_id = DoctorFactory(
            profile__verification_status=DoctorProfile.Verification.PENDING, profile__verified_at=None
        ).pk
    elif setup == "patient_to_patient":
        peer_id = PatientFactory().pk
    elif setup == "doctor_to_new_patient":
        caller, peer_id = DoctorFactory(), patient.pk
    elif setup == "blocked":
        doctor = DoctorFactory()
        services.block_user(user=doctor, blocked_id=patient.pk)
        peer_id = doctor.pk
    elif setup == "self":
        peer_id = patient.pk
    else:
        peer_id = 999_999_999
    response = api(caller).post("/api/v1/conversations", {"peer_id": peer_id}, format="json")
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert Conversation.objects.count() == 0


def test_unknown_fields_and_bad_peer_refused(api):
    patient = PatientFactory()
    response = api(patient).post("/api/v1/conversations", {"peer_id": "abc", "admin": True}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["admin"][0]["code"] == "unknown_field"


def test_non_member_gets_404_everywhere(api):
    _patient, _doctor, conversation = pair()
    send(_patient, conversation, 2)
    stranger = PatientFactory()
    client = api(stranger)
    for url in (
        f"/api/v1/conversations/{conversation.pk}",
        f"/api/v1/conversations/{conversation.pk}/messages",
    ):
        response = client.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "conversation_not_found"


def test_conversation_list_unread_counts_without_n_plus_one(api, django_assert_num_queries):
    patient = PatientFactory()
    conversations = []
    for i in range(3):
        doctor = DoctorFactory()
        conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk)
        send(doctor, conversation, i + 1)
        conversations.append(conversation)
    client = api(patient)
    # auth (user lookup) + page + members + pinned messages + the audit entry: constant however
    # many conversations
    with django_assert_num_queries(5):
        response = client.get("/api/v1/conversations")
    assert response.status_code == 200
    unread = {c["id"]: c["unread_count"] for c in response.json()["results"]}
    assert unread == {conversations[0].pk: 1, conversations[1].pk: 2, conversations[2].pk: 3}
    services.receipt_mark(user=patient, conversation_id=conversations[2].pk, seq=3, kind="read")
    response = client.get("/api/v1/conversations")
    unread = {c["id"]: c["unread_count"] for c in response.json()["results"]}
    assert unread[conversations[2].pk] == 0


def test_history_keyset_pagination(api):
    patient, doctor, conversation = pair()
    send(patient, conversation, 25)
    client = api(doctor)
    latest = client.get(f"/api/v1/conversations/{conversation.pk}/messages?limit=10").json()
    assert [m["seq"] for m in latest["results"]] == list(range(16, 26))
    assert latest["has_more"] is True
    older = client.get(f"/api/v1/conversations/{conversation.pk}/messages?before_seq=16&limit=10").json()
    assert [m["seq"] for m in older["results"]] == list(range(6, 16))
    newer = client.get(f"/api/v1/conversations/{conversation.pk}/messages?after_seq=20&limit=10").json()
    assert [m["seq"] for m in newer["results"]] == list(range(21, 26))
    assert newer["has_more"] is False
    bad = client.get(f"/api/v1/conversations/{conversation.pk}/messages?limit=100000")
    assert bad.status_code == 400


@pytest.mark.parametrize("limit", [5, 50, 200])
def test_history_query_count_is_constant(api, django_assert_num_queries, limit):
    patient, doctor, conversation = pair()
    send(patient, conversation, 60)
    client = api(doctor)
    with django_assert_num_queries(5):  # auth + membership + page + its attachments + audit entry
        response = client.get(f"/api/v1/conversations/{conversation.pk}/messages?limit={limit}")
    assert len(response.json()["results"]) == min(limit, 60)


def test_block_stops_sending_and_unblock_restores(api):
    patient, doctor, conversation = pair()
    assert api(doctor).post("/api/v1/blocks", {"user_id": patient.pk}, format="json").status_code == 204
    with pytest.raises(Exception) as info:
        send(patient, conversation)
    assert getattr(info.value, "code", None) == "blocked"
    assert api(doctor).delete(f"/api/v1/blocks/{patient.pk}").status_code == 204
    assert len(send(patient, conversation)) == 1


def test_deleted_user_messages_stay_with_content_erased(api, firebase_admin_api):
    patient, doctor, conversation = pair()
    send(patient, conversation, 2, prefix="private ")
    from accounts import services as account_services

    account_services.user_delete(user=patient, actor=Operator(command="test"))
    history = api(doctor).get(f"/api/v1/conversations/{conversation.pk}/messages").json()["results"]
    assert [m["seq"] for m in history] == [1, 2]
    assert all(m["body"] == "" and m["deleted"] for m in history)
    members = api(doctor).get(f"/api/v1/conversations/{conversation.pk}").json()["members"]
    assert {"Deleted user"} <= {m["display_name"] for m in members}
    assert Membership.objects.filter(conversation=conversation).count() == 2
    assert any(url.endswith("accounts:delete") for url, _ in firebase_admin_api)
