"""``sync`` for many sockets at once (a reconnect storm): each answer is exactly its own."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory
from audit import actions
from audit.client import Client
from audit.models import AuditEntry
from core import batcher
from core.errors import ApplicationError
from groups import services as group_services
from messaging import handlers, selectors, services
from messaging.models import Conversation
from messaging.tests.factories import pair
from messaging.tests.test_e2ee import blobs, e2ee_pair, keyed_device, send

pytestmark = pytest.mark.django_db


def say(user: User, conversation: Conversation, text: str) -> Any:
    return services.message_send(
        sender=user, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=text
    )


def world() -> dict[str, Any]:
    """Direct, group (with a member removed part-way) and end-to-end encrypted conversations,
    with edits, receipts and cursors taken part-way through."""
    patient, doctor, direct = pair()
    other_patient, _other_doctor, other_direct = pair()
    owner: User = PatientFactory.create()
    member: User = DoctorFactory.create()
    removed: User = DoctorFactory.create()
    group = group_services.group_create(
        creator=owner, name="Care team", member_ids=[member.pk, removed.pk, doctor.pk]
    )
    e2ee_patient, e2ee_doctor, encrypted = e2ee_pair()
    patient_phone, doctor_phone, doctor_tablet = (
        keyed_device(e2ee_patient),
        keyed_device(e2ee_doctor),
        keyed_device(e2ee_doctor),
    )
    users = [patient, doctor, other_patient, owner, member, removed, e2ee_patient, e2ee_doctor]
    early = {u.pk: selectors.sync_events(user=u, cursor=None)[1] for u in users}
    for i in range(3):
        first = say(patient, direct, f"a{i}").message
        say(doctor, direct, f"b{i}")
        say(other_patient, other_direct, f"c{i}")
        say(owner, group, f"g{i}")
        send(e2ee_patient, encrypted, blobs([doctor_phone, doctor_tablet]), patient_phone)
    services.message_edit(user=patient, message_id=first.pk, body="edited")
    services.receipt_mark(user=patient, conversation_id=direct.pk, seq=6, kind="read")
    middle = {u.pk: selectors.sync_events(user=u, cursor=early[u.pk])[1] for u in users}
    group_services.member_remove(actor=owner, group_id=group.pk, user_id=removed.pk)
    say(member, group, "after the removal")
    say(patient, direct, "late")
    return {
        "users": users,
        "early": early,
        "middle": middle,
        "devices": {e2ee_doctor.pk: [doctor_phone.pk, doctor_tablet.pk], e2ee_patient.pk: [patient_phone.pk]},
    }


def requests_of(w: dict[str, Any]) -> list[selectors.SyncRequest]:
    requests = []
    for user in w["users"]:
        for cursor in (None, w["early"][user.pk], w["middle"][user.pk]):
            requests.append(selectors.SyncRequest(user=user, cursor=cursor))
            for device_id in w["devices"].get(user.pk, []):
                requests.append(selectors.SyncRequest(user=user, cursor=cursor, device_id=device_id))
    return requests


def alone(request: selectors.SyncRequest) -> Any:
    try:
        return selectors.sync_events(user=request.user, cursor=request.cursor, device_id=request.device_id)
    except ApplicationError as exc:
        return exc


def test_each_caller_gets_what_its_own_sync_would_give():
    w = world()
    requests = requests_of(w)
    requests.insert(3, selectors.SyncRequest(user=w["users"][0], cursor="not-a-cursor"))
    expected = [alone(r) for r in requests]
    answers = selectors.sync_events_many(requests)
    assert len(answers) == len(requests)
    for request, want, got in zip(requests, expected, answers, strict=True):
        if isinstance(want, ApplicationError):
            assert isinstance(got, ApplicationError)
            assert got.code == want.code == "invalid_cursor"
            continue
        assert got == want, (request.user.pk, request.cursor, request.device_id)
    # Not vacuous: there were events to replay, encrypted copies, and an empty answer.
    frames = [f for a in answers if not isinstance(a, ApplicationError) for f in a[0]]
    assert {"message.new", "message.updated", "receipt", "member.removed"} <= {f["type"] for f in frames}
    assert any(f["data"].get("message", {}).get("ciphertext") for f in frames)
    assert any(not a[0] for a in answers if not isinstance(a, ApplicationError))


def test_a_removed_member_gets_nothing_after_its_removal_and_others_keep_their_own():
    w = world()
    removed = w["users"][5]
    member = w["users"][4]
    got = selectors.sync_events_many(
        [
            selectors.SyncRequest(user=removed, cursor=w["middle"][removed.pk]),
            selectors.SyncRequest(user=member, cursor=w["middle"][member.pk]),
        ]
    )
    removed_frames, member_frames = got[0][0], got[1][0]
    assert [f["type"] for f in removed_frames] == ["member.removed"]
    assert [f["type"] for f in member_frames] == ["member.removed", "message.new"]


def test_callers_missing_more_than_a_batch_are_cut_the_same_way(monkeypatch):
    w = world()
    monkeypatch.setattr(selectors.sync, "SYNC_BATCH", 3)  # read there
    requests = requests_of(w)
    expected = [alone(r) for r in requests]
    answers = selectors.sync_events_many(requests)
    assert answers == expected
    assert any(a[2] for a in answers)  # some were cut (more to come)
    assert not all(a[2] for a in answers)  # and some answered in the shared queries


def test_the_queries_do_not_grow_with_the_callers():
    w = world()
    requests = requests_of(w)
    with CaptureQueriesContext(connection) as few:
        selectors.sync_events_many(requests[:2])
    with CaptureQueriesContext(connection) as many:
        selectors.sync_events_many(requests)
    assert len(requests) > 20
    # memberships, events, attachments (prefetch), ciphertexts
    assert len(many.captured_queries) <= 4
    assert len(few.captured_queries) <= len(many.captured_queries)


def test_every_served_sync_is_one_audit_entry_and_a_refused_one_none():
    w = world()
    patient, doctor = w["users"][0], w["users"][1]
    client = Client(AuditEntry.Channel.SOCKET, ip="10.0.0.7", user_agent="app/1.0")
    before = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    items = [
        handlers._Sync(selectors.SyncRequest(user=patient, cursor=None), client),
        handlers._Sync(selectors.SyncRequest(user=doctor, cursor="bad"), client),
        handlers._Sync(selectors.SyncRequest(user=doctor, cursor=w["early"][doctor.pk]), client),
    ]
    answers = handlers._sync_audited(items)
    assert isinstance(answers[1], ApplicationError)
    rows = list(AuditEntry.objects.filter(id__gt=before).order_by("id"))
    assert [(r.action, r.actor_id, r.outcome, r.channel, r.ip, r.user_agent) for r in rows] == [
        (actions.HISTORY_SYNC, patient.pk, "ok", "socket", "10.0.0.7", "app/1.0"),
        (actions.HISTORY_SYNC, doctor.pk, "ok", "socket", "10.0.0.7", "app/1.0"),
    ]


@pytest.mark.django_db(transaction=True)  # the batch runs in a worker thread's connection
def test_syncs_arriving_together_share_a_hop_and_each_gets_its_own():
    """Through the batcher as the socket handler uses it: concurrent callers, few batches."""
    w = world()
    requests = requests_of(w)
    expected = [alone(r) for r in requests]
    client = Client(AuditEntry.Channel.SOCKET)

    async def storm() -> tuple[list[Any], int]:
        b = batcher.for_loop(handlers._sync_audited)
        got = await asyncio.gather(*(b.submit(handlers._Sync(r, client)) for r in requests))
        return list(got), b.batches

    answers, batches = async_to_sync(storm)()
    assert answers == expected
    assert batches < len(requests) / 4
