"""Reactions, mentions and pins (issue 24): services, the send path's check on every writer,
sync, REST, push past a mute, erasure, retention and export."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from django.db import close_old_connections

from accounts import services as account_services
from accounts.models import User
from accounts.tests.factories import DeviceFactory, PatientFactory
from core.errors import ApplicationError
from groups import services as group_services
from messaging import annotation_selectors, batching, selectors, services
from messaging.models import Event, Membership, Mention, Message, Pin, Reaction
from messaging.send_rules import SendContext
from messaging.services import mentions as mention_services
from messaging.tests.factories import pair, send_together
from notifications import services as push_services
from notifications.models import PushDelivery, PushPreference

pytestmark = pytest.mark.django_db


def _send(sender: User, conversation_id: int, body: str, **kw: Any) -> Message:
    return services.message_send(
        sender=sender, conversation_id=conversation_id, client_id=uuid.uuid4(), body=body, **kw
    ).message


def _sync_frames(user: User) -> list[dict[str, Any]]:
    frames, _cursor, _more = selectors.sync_events(user=user, cursor=None)
    return frames


def _group(owner: User, *members: User) -> int:
    for member in members:
        services.conversation_open_direct(user=member, peer_id=owner.pk)
    return group_services.group_create(
        creator=owner, name="Care circle", member_ids=[m.pk for m in members]
    ).pk


# --- Reactions ----------------------------------------------------------------------------------
def test_reaction_add_remove_counts_who_history_and_sync() -> None:
    patient, doctor, conversation = pair()
    message = _send(doctor, conversation.pk, "Take two a day")
    first = services.reaction_add(user=patient, message_id=message.pk, emoji="👍")
    assert first.changed
    assert first.reactions == [{"emoji": "👍", "count": 1, "user_ids": [patient.pk]}]
    again = services.reaction_add(user=patient, message_id=message.pk, emoji="👍")
    assert not again.changed
    assert again.reactions == first.reactions
    services.reaction_add(user=doctor, message_id=message.pk, emoji="👍")
    services.reaction_add(user=doctor, message_id=message.pk, emoji="🙏")
    rows, _more = selectors.message_history(
        user=patient, conversation_id=conversation.pk, after_seq=None, before_seq=None, limit=10
    )
    assert selectors.message_data(rows[-1])["reactions"] == [
        {"emoji": "👍", "count": 2, "user_ids": [patient.pk, doctor.pk]},
        {"emoji": "🙏", "count": 1, "user_ids": [doctor.pk]},
    ]
    removed = services.reaction_remove(user=doctor, message_id=message.pk, emoji="👍")
    assert removed.changed
    assert removed.reactions[0] == {"emoji": "👍", "count": 1, "user_ids": [patient.pk]}
    assert not services.reaction_remove(user=doctor, message_id=message.pk, emoji="👍").changed
    assert Reaction.objects.filter(message=message).count() == 2
    # Replayed by sync, in log order, with the summary after each change.
    kinds = [
        (f["type"], f["data"].get("emoji")) for f in _sync_frames(patient) if f["type"].startswith("reaction")
    ]
    assert kinds == [
        ("reaction.added", "👍"),
        ("reaction.added", "👍"),
        ("reaction.added", "🙏"),
        ("reaction.removed", "👍"),
    ]
    last = next(f for f in _sync_frames(doctor) if f["type"] == "reaction.removed")
    assert last["data"]["reactions"] == removed.reactions
    assert isinstance(last["event"], int)


@pytest.mark.parametrize("emoji", ["", "x", "👍👍", "🤡", "❤"])
def test_reaction_outside_the_set_is_refused(emoji: str) -> None:
    patient, doctor, conversation = pair()
    message = _send(doctor, conversation.pk, "hello")
    with pytest.raises(ApplicationError) as refused:
        services.reaction_add(user=patient, message_id=message.pk, emoji=emoji)
    assert refused.value.code == "invalid_reaction"
    assert not Reaction.objects.exists()


def test_reactions_only_by_members_who_may_read_the_message() -> None:
    patient, doctor, conversation = pair()
    message = _send(doctor, conversation.pk, "private")
    outsider = PatientFactory.create()
    with pytest.raises(ApplicationError) as refused:
        services.reaction_add(user=outsider, message_id=message.pk, emoji="👍")
    assert refused.value.code == "message_not_found"
    # A group member who joined without the history cannot react to what came before.
    early = _send(doctor, (gid := _group(doctor, patient)), "before you joined")
    late = PatientFactory.create()
    services.conversation_open_direct(user=late, peer_id=doctor.pk)
    group_services.member_add(actor=doctor, group_id=gid, user_id=late.pk)
    with pytest.raises(ApplicationError) as hidden:
        services.reaction_add(user=late, message_id=early.pk, emoji="👍")
    assert hidden.value.code == "message_not_found"
    services.reaction_add(user=patient, message_id=early.pk, emoji="👍")
    # ... nor does sync tell them of reactions on it.
    assert not [f for f in _sync_frames(late) if f["type"] == "reaction.added"]


def test_reaction_refused_in_encrypted_conversation_and_on_deleted_message(settings: Any) -> None:
    patient, doctor, conversation = pair()
    message = _send(doctor, conversation.pk, "unsend me")
    services.reaction_add(user=patient, message_id=message.pk, emoji="👍")
    services.message_pin(user=patient, message_id=message.pk)
    services.message_delete(user=doctor, message_id=message.pk)
    assert not Reaction.objects.exists()
    assert not Pin.objects.exists()
    message.refresh_from_db()
    assert message.reactions is None
    with pytest.raises(ApplicationError) as refused:
        services.reaction_add(user=patient, message_id=message.pk, emoji="👍")
    assert refused.value.code == "message_deleted"
    conversation.e2ee = True
    conversation.save(update_fields=["e2ee"])
    other = Message.objects.create(conversation=conversation, seq=99, sender=doctor, client_id=uuid.uuid4())
    with pytest.raises(ApplicationError) as encrypted:
        services.reaction_add(user=patient, message_id=other.pk, emoji="👍")
    assert encrypted.value.code == "e2ee_reaction"


@pytest.mark.django_db(transaction=True)
def test_concurrent_adds_of_the_same_reaction_make_one_row_and_all_succeed() -> None:
    patient, doctor, conversation = pair()
    message = _send(doctor, conversation.pk, "react at once")
    callers = 12
    barrier = threading.Barrier(callers)
    outcomes: list[Any] = []

    def add() -> None:
        try:
            barrier.wait()
            outcomes.append(services.reaction_add(user=patient, message_id=message.pk, emoji="🎉"))
        except Exception as exc:  # recorded: the test fails on any
            outcomes.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=add) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == callers
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    assert sum(o.changed for o in outcomes) == 1  # one made it; the others found it there
    assert all(o.reactions == [{"emoji": "🎉", "count": 1, "user_ids": [patient.pk]}] for o in outcomes)
    assert Reaction.objects.filter(message=message).count() == 1
    assert Event.objects.filter(conversation=conversation, kind="reaction.added").count() == 1


def test_reaction_unique_constraint_holds_without_the_service() -> None:
    from django.db import IntegrityError, transaction

    patient, doctor, conversation = pair()
    message = _send(doctor, conversation.pk, "x")
    Reaction.objects.create(message=message, user=patient, emoji="👍")
    with pytest.raises(IntegrityError), transaction.atomic():
        Reaction.objects.create(message=message, user=patient, emoji="👍")


# --- Pins -----------------------------------------------------------------------------------------
def test_pins_direct_both_members_group_admins_bounded_and_in_conversation_data(settings: Any) -> None:
    settings.HEALTHCHAT_PINS_MAX = 2
    patient, doctor, conversation = pair()
    m1, m2, m3 = (_send(doctor, conversation.pk, f"m{i}") for i in range(3))
    assert services.message_pin(user=patient, message_id=m1.pk).changed
    assert not services.message_pin(user=doctor, message_id=m1.pk).changed  # already pinned
    services.message_pin(user=doctor, message_id=m2.pk)
    with pytest.raises(ApplicationError) as full:
        services.message_pin(user=patient, message_id=m3.pk)
    assert (full.value.code, full.value.status) == ("pins_full", 409)
    membership = selectors.membership_get(user=patient, conversation_id=conversation.pk)
    pinned = annotation_selectors.pinned_lists([membership])[conversation.pk]
    assert [(p["message_id"], p["pinned_by"]) for p in pinned] == [(m1.pk, patient.pk), (m2.pk, doctor.pk)]
    assert services.message_unpin(user=doctor, message_id=m1.pk).changed
    services.message_pin(user=patient, message_id=m3.pk)
    kinds = [f["type"] for f in _sync_frames(doctor) if "pinned" in f["type"]]
    assert kinds == ["message.pinned", "message.pinned", "message.unpinned", "message.pinned"]
    # In a group, only the owner and admins.
    gid = _group(doctor, patient)
    g = _send(patient, gid, "group message")
    with pytest.raises(ApplicationError) as refused:
        services.message_pin(user=patient, message_id=g.pk)
    assert (refused.value.code, refused.value.status) == ("not_group_admin", 403)
    assert services.message_pin(user=doctor, message_id=g.pk).changed


def test_rest_pin_react_and_conversation_pinned(client_for: Any) -> None:
    patient, doctor, conversation = pair()
    message = _send(doctor, conversation.pk, "rest")
    client = client_for(patient)
    put = client.put(f"/api/v1/messages/{message.pk}/pin")
    assert put.status_code == 200
    assert put.json()["pinned"] is True
    detail = client.get(f"/api/v1/conversations/{conversation.pk}").json()
    assert [p["message_id"] for p in detail["pinned"]] == [message.pk]
    listed = client.get("/api/v1/conversations").json()["results"][0]
    assert [p["message_id"] for p in listed["pinned"]] == [message.pk]
    added = client.post(f"/api/v1/messages/{message.pk}/reactions", {"emoji": "❤️"}, format="json")
    assert added.status_code == 200
    assert added.json()["reactions"][0]["count"] == 1
    bad = client.post(f"/api/v1/messages/{message.pk}/reactions", {"emoji": "nope"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_reaction"
    gone = client.delete(f"/api/v1/messages/{message.pk}/reactions/%E2%9D%A4%EF%B8%8F")
    assert gone.status_code == 200
    assert gone.json()["reactions"] == []
    history = client.get(f"/api/v1/conversations/{conversation.pk}/messages").json()["results"]
    assert history[-1]["reactions"] == []
    assert history[-1]["mentions"] == []
    assert client.delete(f"/api/v1/messages/{message.pk}/pin").json()["changed"] is True


# --- Mentions ---------------------------------------------------------------------------------------
def test_mentions_single_send_stored_listed_and_in_message_data() -> None:
    patient, doctor, conversation = pair()
    sent = services.message_send(
        sender=patient,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body="@Dana is this normal?",
        mentions=[{"user_id": doctor.pk, "offset": 0, "length": 5}],
    )
    assert sent.data["mentions"] == [{"user_id": doctor.pk, "offset": 0, "length": 5}]
    assert list(Mention.objects.values_list("user_id", "message_id")) == [(doctor.pk, sent.message.pk)]
    [mention] = annotation_selectors.mention_list(user=doctor)
    assert selectors.message_data(mention.message)["mentions"] == sent.data["mentions"]
    assert not annotation_selectors.mention_list(user=patient).exists()  # a self-mention is no row
    frame = [f for f in _sync_frames(doctor) if f["type"] == "message.new"][-1]
    assert frame["data"]["message"]["mentions"] == sent.data["mentions"]


@pytest.mark.parametrize(
    ("mentions", "code"),
    [
        ([{"user_id": 1, "offset": 0, "length": 50}], "invalid_mentions"),  # past the body
        ([{"user_id": 1, "offset": -1, "length": 1}], "invalid_mentions"),
        ([{"user_id": 1, "offset": 0}], "invalid_mentions"),
        ([{"user_id": "1", "offset": 0, "length": 1}], "invalid_mentions"),
        ("not a list", "invalid_mentions"),
    ],
)
def test_malformed_mentions_are_refused_before_any_write(mentions: Any, code: str) -> None:
    patient, _doctor, conversation = pair()
    with pytest.raises(ApplicationError) as refused:
        services.message_send(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body="hi",
            mentions=mentions,
        )
    assert refused.value.code == code
    assert not Message.objects.filter(conversation=conversation).exists()


def test_mentions_with_ciphertexts_are_refused() -> None:
    patient, doctor, conversation = pair()
    with pytest.raises(ApplicationError) as refused:
        services.SendRequest(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            ciphertexts={"1": "AA=="},
            mentions=[{"user_id": doctor.pk, "offset": 0, "length": 1}],
        )
    assert refused.value.code == "e2ee_mention"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("loop_writer", [True, False])
def test_mention_of_a_non_member_is_refused_by_both_batch_writers(settings: Any, loop_writer: bool) -> None:
    """Both writers of the batched send (the loop's and the thread's) ask the same check."""
    settings.HEALTHCHAT_LOOP_WRITER = loop_writer
    patient, doctor, conversation = pair()
    outsider = PatientFactory.create()

    def item(mentioned: User, body: str) -> services.SendRequest:
        return services.SendRequest(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body=body,
            mentions=[{"user_id": mentioned.pk, "offset": 0, "length": 4}],
        )

    async def run() -> list[Any]:
        batcher = batching.SendBatcher()
        try:
            return await send_together(
                batcher, [item(doctor, "Dana ok"), item(outsider, "Olly no"), item(doctor, "Dana 2")]
            )
        finally:
            await batcher.loop_writer.close()

    ok, refused, ok2 = asyncio.run(run())
    assert isinstance(refused, ApplicationError), refused
    assert refused.code == "mention_not_member"
    assert ok.data["mentions"][0]["user_id"] == doctor.pk
    assert ok2.data["seq"] == ok.data["seq"] + 1
    assert sorted(Mention.objects.values_list("user_id", flat=True)) == [doctor.pk, doctor.pk]
    assert Message.objects.filter(conversation=conversation).count() == 2


def test_mention_check_orm_form_agrees() -> None:
    patient, doctor, conversation = pair()
    outsider = PatientFactory.create()

    def ctx(mentioned: User) -> SendContext:
        return SendContext(
            sender_id=patient.pk,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            reply_to=None,
            encrypted=False,
            conversation=conversation,
            membership=None,
            mentions=({"user_id": mentioned.pk, "offset": 0, "length": 1},),
        )

    check = mention_services.MENTIONS_ARE_MEMBERS
    assert check.orm(ctx(doctor)) is True
    assert check.orm(ctx(outsider)) is False


def test_mentions_of_me_rest_cursor_pagination(client_for: Any) -> None:
    patient, doctor, conversation = pair()
    for i in range(5):
        _send(
            patient, conversation.pk, f"Dana {i}", mentions=[{"user_id": doctor.pk, "offset": 0, "length": 4}]
        )
    client = client_for(doctor)
    first = client.get("/api/v1/mentions?limit=2").json()
    assert [r["message"]["body"] for r in first["results"]] == ["Dana 4", "Dana 3"]
    second = client.get(first["next"]).json()
    assert [r["message"]["body"] for r in second["results"]] == ["Dana 2", "Dana 1"]
    # A deleted message leaves the list.
    services.message_delete(user=patient, message_id=Message.objects.get(body="Dana 4").pk)
    assert client.get("/api/v1/mentions?limit=1").json()["results"][0]["message"]["body"] == "Dana 3"


def test_mention_pushes_through_a_mute_unless_the_preference_says_no(settings: Any) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    patient, doctor, conversation = pair()
    DeviceFactory.create(user=doctor)
    Membership.objects.filter(conversation=conversation, user=doctor).update(
        muted_until=push_services.MUTED_FOREVER
    )
    plain = _send(patient, conversation.pk, "no mention")
    mentioned = _send(
        patient, conversation.pk, "Dana look", mentions=[{"user_id": doctor.pk, "offset": 0, "length": 4}]
    )
    rows = PushDelivery.objects.filter(kind="message")
    assert not rows.filter(message=plain).exists()  # muted
    assert rows.filter(message=mentioned).count() == 1  # a mention passes the mute
    # Decided again at delivery time: the mention still passes; a plain message would not.
    row = rows.get(message=mentioned)
    memberships = {
        (conversation.pk, doctor.pk): Membership.objects.get(conversation=conversation, user=doctor)
    }
    from django.utils import timezone

    row = PushDelivery.objects.select_related("device", "message").get(pk=row.pk)
    assert push_services._refusal(row, memberships, timezone.now(), set()) != "muted"
    assert push_services._refusal(row, memberships, timezone.now(), {doctor.pk}) == "muted"
    # Preference off: a mute silences mentions too.
    PushPreference.objects.create(user=doctor, mentions_when_muted=False)
    quiet = _send(
        patient, conversation.pk, "Dana again", mentions=[{"user_id": doctor.pk, "offset": 0, "length": 4}]
    )
    assert not rows.filter(message=quiet).exists()


# --- Erasure, retention, export ----------------------------------------------------------------------
def test_erasure_removes_reactions_mentions_and_pinner(firebase_admin_api: Any) -> None:
    patient, doctor, conversation = pair()
    doc_msg = _send(doctor, conversation.pk, "doctor's")
    services.reaction_add(user=patient, message_id=doc_msg.pk, emoji="👍")
    services.reaction_add(user=doctor, message_id=doc_msg.pk, emoji="🙏")
    services.message_pin(user=patient, message_id=doc_msg.pk)
    mine = _send(
        patient, conversation.pk, "Dana hi", mentions=[{"user_id": doctor.pk, "offset": 0, "length": 4}]
    )
    services.reaction_add(user=doctor, message_id=mine.pk, emoji="👍")
    _send(doctor, conversation.pk, "Pat see", mentions=[{"user_id": patient.pk, "offset": 0, "length": 3}])
    exported = account_services.user_export(user=patient)
    assert [r["emoji"] for r in exported["reactions"]] == ["👍"]
    assert len(exported["mentions"]) == 1
    assert len(exported["pins"]) == 1
    account_services.user_delete(user=patient, actor=patient)
    assert not Reaction.objects.filter(user=patient).exists()
    assert not Reaction.objects.filter(message=mine).exists()  # their message lost its content
    doc_msg.refresh_from_db()
    mine.refresh_from_db()
    assert doc_msg.reactions == [{"emoji": "🙏", "count": 1, "user_ids": [doctor.pk]}]
    assert mine.mentions is None
    assert mine.reactions is None
    assert not Mention.objects.exists()
    assert Pin.objects.get(message=doc_msg).pinned_by_id is None


def test_retention_removes_reactions_mentions_and_pins(settings: Any) -> None:
    import datetime as dt

    from django.utils import timezone

    patient, doctor, conversation = pair()
    old = _send(
        patient, conversation.pk, "Dana old", mentions=[{"user_id": doctor.pk, "offset": 0, "length": 4}]
    )
    services.reaction_add(user=doctor, message_id=old.pk, emoji="👍")
    services.message_pin(user=doctor, message_id=old.pk)
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=400))
    settings.MESSAGE_RETENTION_DAYS = 365
    services.retention_purge()
    old.refresh_from_db()
    assert old.deleted_at is not None
    assert old.reactions is None
    assert old.mentions is None
    assert not Reaction.objects.exists()
    assert not Mention.objects.exists()
    assert not Pin.objects.exists()
