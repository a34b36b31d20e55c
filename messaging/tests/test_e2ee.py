"""End-to-end encrypted conversations: per-device ciphertexts in, each device's own copy out."""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts import keys as account_keys
from accounts.models import Device, User
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from accounts.tests.signal_keys import SignalIdentity
from core.errors import ApplicationError
from groups import services as group_services
from messaging import selectors, services
from messaging.models import Attachment, Conversation, Message, MessageCiphertext

pytestmark = pytest.mark.django_db


def keyed_device(user: User) -> Device:
    """A device of ``user`` that published its keys."""
    device: Device = DeviceFactory.create(user=user)
    account_keys.device_keys_put(user=user, **SignalIdentity().upload(device.pk, one_time=[1], kyber=[1]))
    return device


def e2ee_pair() -> tuple[User, User, Conversation]:
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=True)
    return patient, doctor, conversation


def blobs(devices: list[Device]) -> dict[str, str]:
    """A distinct random 'ciphertext' per device."""
    return {str(d.pk): base64.b64encode(os.urandom(40) + str(d.pk).encode()).decode() for d in devices}


def send(sender: User, conversation: Conversation, ciphertexts: dict[str, str], device: Device, **kw: Any):
    return services.message_send(
        sender=sender,
        conversation_id=conversation.pk,
        client_id=kw.pop("client_id", uuid.uuid4()),
        body=kw.pop("body", None),
        ciphertexts=ciphertexts,
        sender_device_id=device.pk,
        **kw,
    )


def test_direct_conversations_follow_the_setting(settings):
    settings.HEALTHCHAT_E2EE_POLICY = "required"
    patient, doctor = PatientFactory.create(), DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    assert conversation.e2ee is True


def test_ciphertext_per_device_stored_and_no_body():
    patient, doctor, conversation = e2ee_pair()
    phone, tablet = keyed_device(patient), keyed_device(patient)
    doctor_phone = keyed_device(doctor)
    DeviceFactory.create(user=doctor)  # no keys published: not a recipient device
    ciphertexts = blobs([tablet, doctor_phone])
    result = send(patient, conversation, ciphertexts, phone)
    assert result.created
    message = Message.objects.get(pk=result.message.pk)
    assert message.body == ""
    stored = {
        str(d): base64.b64encode(bytes(c)).decode()
        for d, c in MessageCiphertext.objects.filter(message=message).values_list("device_id", "ciphertext")
    }
    assert stored == ciphertexts
    assert result.data["ciphertext"] is None  # the sending device has its own plaintext
    assert result.data["body"] == ""
    again = send(patient, conversation, ciphertexts, phone, client_id=message.client_id)
    assert not again.created
    assert again.message.pk == message.pk
    assert MessageCiphertext.objects.filter(message=message).count() == 2


def test_devices_mismatch_lists_the_current_devices():
    patient, doctor, conversation = e2ee_pair()
    phone, tablet = keyed_device(patient), keyed_device(patient)
    doctor_phone = keyed_device(doctor)
    # Missing the sender's other device, and naming an unknown device.
    bad = {**blobs([doctor_phone]), "999999": "AAAA"}
    with pytest.raises(ApplicationError) as caught:
        send(patient, conversation, bad, phone)
    error = caught.value
    assert error.code == "devices_mismatch"
    assert error.status == 409
    assert error.extra["missing_devices"] == [tablet.pk]
    assert error.extra["extra_devices"] == [999999]
    assert error.extra["devices"] == sorted(
        [
            {"user_id": patient.pk, "device_ids": [phone.pk, tablet.pk]},
            {"user_id": doctor.pk, "device_ids": [doctor_phone.pk]},
        ],
        key=lambda d: d["user_id"],
    )
    # Including the sending device itself is an extra device too.
    with pytest.raises(ApplicationError) as caught:
        send(patient, conversation, blobs([phone, tablet, doctor_phone]), phone)
    assert caught.value.extra["extra_devices"] == [phone.pk]
    assert Message.objects.filter(conversation=conversation).count() == 0  # nothing stored
    conversation.refresh_from_db()
    assert conversation.last_seq == 0  # no seq used up


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"body": "hello", "ciphertexts": None}, "e2ee_required"),
        ({"body": "hello"}, "invalid_ciphertext"),
        ({"ciphertexts": {}}, "invalid_ciphertext"),
        ({"ciphertexts": {"abc": "AAAA"}}, "invalid_ciphertext"),
        ({"ciphertexts": {"1": "not base64!"}}, "invalid_ciphertext"),
        ({"sender_device_id": None}, "device_required"),
    ],
)
def test_refused_sends(kwargs, code):
    patient, doctor, conversation = e2ee_pair()
    phone = keyed_device(patient)
    target = keyed_device(doctor)
    args: dict[str, Any] = {
        "sender": patient,
        "conversation_id": conversation.pk,
        "client_id": uuid.uuid4(),
        "body": None,
        "ciphertexts": blobs([target]),
        "sender_device_id": phone.pk,
    }
    args.update(kwargs)
    with pytest.raises(ApplicationError) as caught:
        services.message_send(**args)
    assert caught.value.code == code
    assert not Message.objects.filter(conversation=conversation).exists()


def test_ciphertexts_refused_in_a_plaintext_conversation():
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=False)
    phone = keyed_device(patient)
    with pytest.raises(ApplicationError) as caught:
        send(patient, conversation, blobs([keyed_device(doctor)]), phone)
    assert caught.value.code == "e2ee_not_enabled"


def test_plaintext_send_costs_no_extra_query():
    """The encryption work stays off the plaintext hot path: the send is still the lock +
    allocate statement and the one CTE (plus the savepoint pair and the payments app's own
    send hook), and never touches the key directory or the ciphertext table."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()
    conversation, _ = services.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=False)
    keyed_device(patient)
    keyed_device(doctor)
    from messaging.send_rules import registry

    # Without the written hooks: the push outbox (in the message's transaction since issue 20)
    # reads accounts_device for push, not for encryption; its cost is counted in
    # messaging/tests/test_services.py::test_message_send_query_count.
    with registry.replaced(hooks=[]), CaptureQueriesContext(connection) as queries:
        services.message_send(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="hi"
        )
    sql = [q["sql"] for q in queries.captured_queries]
    assert len(sql) <= 5, sql
    assert not [q for q in sql if "ciphertext" in q or "deviceidentity" in q or "accounts_device" in q]
    # the conversation's lock and the one send statement (the batch writers' statements)
    assert sum(1 for q in sql if "FOR UPDATE" in q or q.lstrip().startswith("WITH")) == 2


def test_history_and_sync_give_each_device_its_own_copy(make_token):
    patient, doctor, conversation = e2ee_pair()
    phone = keyed_device(patient)
    doctor_phone, doctor_tablet = keyed_device(doctor), keyed_device(doctor)
    ciphertexts = blobs([doctor_phone, doctor_tablet])
    message = send(patient, conversation, ciphertexts, phone).message
    services.message_send(
        sender=doctor,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body=None,
        ciphertexts=blobs([phone, doctor_tablet]),
        sender_device_id=doctor_phone.pk,
    )
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number)}"
    )
    url = f"/api/v1/conversations/{conversation.pk}/messages"
    by_param = client.get(f"{url}?device_id={doctor_tablet.pk}").json()["results"]
    assert by_param[0]["id"] == message.pk
    assert by_param[0]["ciphertext"] == ciphertexts[str(doctor_tablet.pk)]
    assert by_param[0]["body"] == ""
    by_header = client.get(url, HTTP_X_DEVICE_ID=str(doctor_phone.pk)).json()["results"]
    assert by_header[0]["ciphertext"] == ciphertexts[str(doctor_phone.pk)]
    assert by_header[1]["ciphertext"] is None  # the doctor_phone sent it: no copy for itself
    assert client.get(url).json()["results"][0]["ciphertext"] is None  # no device named
    # Another user's device id gets nothing of theirs.
    assert client.get(f"{url}?device_id={phone.pk}").json()["results"][1]["ciphertext"] is None

    frames, _cursor, _more = selectors.sync_events(user=doctor, cursor=None, device_id=doctor_tablet.pk)
    news = [f for f in frames if f["type"] == "message.new"]
    assert news[0]["data"]["message"]["ciphertext"] == ciphertexts[str(doctor_tablet.pk)]
    frames, _cursor, _more = selectors.sync_events(user=doctor, cursor=None)
    assert all(f["data"]["message"]["ciphertext"] is None for f in frames if f["type"] == "message.new")

    # Unsend: the copies go, the seq stays.
    services.message_delete(user=patient, message_id=message.pk)
    assert not MessageCiphertext.objects.filter(message=message).exists()
    gone = client.get(f"{url}?device_id={doctor_tablet.pk}").json()["results"][0]
    assert gone["deleted"] is True
    assert gone["ciphertext"] is None


def test_group_fan_out_is_per_device():
    owner: User = PatientFactory.create()
    members = [DoctorFactory.create(), DoctorFactory.create()]
    group = group_services.group_create(
        creator=owner, name="Care team", member_ids=[m.pk for m in members], e2ee=True
    )
    sender_device = keyed_device(owner)
    devices = [keyed_device(m) for m in members] + [keyed_device(members[0])]
    with pytest.raises(ApplicationError) as caught:
        send(owner, group, blobs(devices[:2]), sender_device)
    assert caught.value.extra["missing_devices"] == [devices[2].pk]
    result = send(owner, group, blobs(devices), sender_device)
    assert MessageCiphertext.objects.filter(message=result.message).count() == 3


# --- Encrypted attachments ------------------------------------------------------------------
@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def upload(client: APIClient, data: bytes, name: str, encrypted: str | None) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    form: dict[str, Any] = {"file": SimpleUploadedFile(name, data)}
    if encrypted is not None:
        form["encrypted"] = encrypted
    return client.post("/api/v1/attachments", form, format="multipart")


def test_encrypted_uploads_are_opaque_and_only_for_e2ee_conversations(
    media, make_token, django_capture_on_commit_callbacks
):
    patient, doctor, conversation = e2ee_pair()
    phone = keyed_device(patient)
    target = keyed_device(doctor)
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)}"
    )
    # A JPEG header inside: still not sniffed, re-encoded or thumbnailed.
    blob = b"\xff\xd8\xff\xe0" + os.urandom(3000)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client, blob, "HIV test results.jpg", "true")
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["category"] == "encrypted"
    assert data["content_type"] == "application/octet-stream"
    assert data["name"] == "encrypted.bin"  # the real name travels inside the message
    stored = Attachment.objects.get(pk=data["id"])
    assert not stored.thumbnail
    with stored.file.open("rb") as fh:
        assert fh.read() == blob
    plain = upload(client, b"Blood pressure 120/80\n", "notes.txt", None).json()
    with pytest.raises(ApplicationError) as caught:
        send(patient, conversation, blobs([target]), phone, attachment_ids=[plain["id"]])
    assert caught.value.code == "attachment_not_encrypted"
    result = send(patient, conversation, blobs([target]), phone, attachment_ids=[data["id"]])
    assert result.data["attachments"][0]["category"] == "encrypted"
    # ... and an encrypted upload cannot go to a plaintext conversation.
    other: User = DoctorFactory.create()
    plain_conversation, _ = services.conversation_open_direct(user=patient, peer_id=other.pk, e2ee=False)
    second = upload(client, os.urandom(100), "x", "1").json()
    with pytest.raises(ApplicationError) as caught:
        services.message_send(
            sender=patient,
            conversation_id=plain_conversation.pk,
            client_id=uuid.uuid4(),
            body="see attached",
            attachment_ids=[second["id"]],
        )
    assert caught.value.code == "attachment_encrypted"
    assert upload(client, b"abc", "x", "maybe").status_code == 400


def test_key_changes_are_logged_in_every_conversation_of_the_owner_and_replayed_by_sync():
    """Trust finding 12: ``device.added`` and ``identity.changed`` are event-log entries of each
    of the owner's active conversations (direct and group); ``sync`` replays them to members,
    not to someone who left before."""
    patient, doctor, direct = e2ee_pair()
    member, leaver = PatientFactory.create(), DoctorFactory.create()
    group = group_services.group_create(
        creator=member, name="Ward", member_ids=[doctor.pk, leaver.pk], e2ee=True
    )
    group_services.member_leave(user=leaver, group_id=group.pk)
    cursors = {u.pk: selectors.sync_events(user=u, cursor=None)[1] for u in (patient, member, leaver)}

    phone = keyed_device(doctor)  # first keys: device.added
    second = SignalIdentity()
    account_keys.device_keys_put(user=doctor, **second.upload(phone.pk))  # identity.changed

    expected = [("device.added", phone.pk), ("identity.changed", phone.pk)]
    for user, conversation in ((patient, direct), (member, group)):
        frames, _cursor, _more = selectors.sync_events(user=user, cursor=cursors[user.pk])
        logged = [
            (f["type"], f["data"]["device_id"])
            for f in frames
            if f["type"] in ("device.added", "identity.changed")
            and f["data"] == {"conversation_id": conversation.pk, "user_id": doctor.pk, "device_id": phone.pk}
        ]
        assert logged == expected
    frames, _cursor, _more = selectors.sync_events(user=leaver, cursor=cursors[leaver.pk])
    assert not [f for f in frames if f["type"] in ("device.added", "identity.changed")]
    # A refill with the same identity key is not logged.
    before = selectors.sync_events(user=patient, cursor=cursors[patient.pk])[1]
    account_keys.device_keys_put(
        user=doctor, **second.upload(phone.pk, one_time=range(50, 53), kyber=[], full=False)
    )
    assert selectors.sync_events(user=patient, cursor=before)[0] == []
