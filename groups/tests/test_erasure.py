"""Erasure ends group memberships the way leaving does (trust finding 8): an owner's group gets a
new owner who can manage it, inside the erasure's transaction."""

from __future__ import annotations

import pytest

from accounts import services as account_services
from accounts.tests.factories import DoctorFactory, PatientFactory
from groups import services as group_services
from messaging import services
from messaging.models import Membership, Message

pytestmark = pytest.mark.django_db


def owned_group():
    owner, admin, patient = DoctorFactory(), DoctorFactory(), PatientFactory()
    services.conversation_open_direct(user=patient, peer_id=owner.pk)
    group = group_services.group_create(creator=owner, name="Team", member_ids=[admin.pk, patient.pk])
    group_services.member_set_role(actor=owner, group_id=group.pk, user_id=admin.pk, role="admin")
    return owner, admin, patient, group


def test_an_erased_owner_leaves_and_the_group_can_still_be_managed(api, firebase_admin_api):
    owner, admin, patient, group = owned_group()
    assert api(owner).delete("/api/v1/me").status_code == 204
    detail = api(admin).get(f"/api/v1/groups/{group.pk}").json()
    assert detail["my_role"] == "owner"
    assert {m["user_id"]: m["role"] for m in detail["members"]} == {admin.pk: "owner", patient.pk: "member"}
    assert "Deleted user" not in [m["display_name"] for m in detail["members"]]
    # Recorded as a leave: member.left, then ownership handed over.
    events = list(
        Message.objects.filter(conversation=group, kind="system")
        .order_by("seq")
        .values_list("system", flat=True)
    )
    assert events[-2:] == [
        {"event": "member.left", "user_id": owner.pk},
        {"event": "member.role_changed", "user_id": admin.pk, "role": "owner", "by": owner.pk},
    ]
    renamed = api(admin).patch(f"/api/v1/groups/{group.pk}", {"name": "Team 2"}, format="json")
    assert renamed.status_code == 200, renamed.content
    assert Membership.objects.get(conversation=group, user=owner).left_at is not None


def test_every_group_membership_ends_but_direct_conversations_keep_their_history(firebase_admin_api):
    owner, _admin, patient, group = owned_group()
    other = group_services.group_create(creator=owner, name="Other", member_ids=[patient.pk])
    account_services.user_delete(user=patient, actor=patient)
    assert not Membership.objects.filter(
        user=patient, left_at__isnull=True, conversation__kind="group"
    ).exists()
    assert set(
        Membership.objects.filter(user=patient, conversation__kind="group").values_list(
            "conversation_id", flat=True
        )
    ) == {group.pk, other.pk}
    # The direct conversation stays, so the doctor keeps the (erased) history with them.
    assert (
        Membership.objects.filter(user=patient, conversation__kind="direct", left_at__isnull=True).count()
        == 1
    )


def test_the_leaves_roll_back_with_a_failed_erasure(monkeypatch, firebase_admin_api):
    owner, admin, _patient, group = owned_group()

    def fail(user):
        raise RuntimeError("erasure step failed")

    failing = account_services.erasers.replaced([*account_services.erasers.items(), ("zz_failing", fail)])
    with failing, pytest.raises(RuntimeError):
        account_services.user_delete(user=owner, actor=owner)
    assert Membership.objects.get(conversation=group, user=owner).left_at is None
    assert Membership.objects.get(conversation=group, user=owner).role == "owner"
    assert Membership.objects.get(conversation=group, user=admin).role == "admin"


def test_erasure_ends_presence_subscriptions_with_every_contact(
    monkeypatch, firebase_admin_api, django_capture_on_commit_callbacks
):
    owner, admin, patient, _group = owned_group()
    published: list[tuple[str, dict]] = []
    for module in (services.events, services.contacts):
        monkeypatch.setattr(module, "publish", lambda group, event: published.append((group, event)))
    with django_capture_on_commit_callbacks(execute=True):
        account_services.user_delete(user=patient, actor=patient)
    revoked: dict[str, set[int]] = {}
    for group, event in published:
        if event["type"] == "presence.revoke":
            revoked.setdefault(group, set()).update(event["user_ids"])
    # The direct conversation with the owner stays, yet nobody watches an erased user.
    assert revoked == {
        f"user.{patient.pk}": {owner.pk, admin.pk},
        f"user.{owner.pk}": {patient.pk},
        f"user.{admin.pk}": {patient.pk},
    }


@pytest.mark.django_db(transaction=True)
def test_erasure_while_the_user_sends_to_a_group_does_not_deadlock(monkeypatch, firebase_admin_api):
    """The erasure holds the user's row; a send of theirs that holds the group's row lock must
    not wait on it while the erasure's leave waits on the group (a deadlock: one of them fails)."""
    import threading
    import uuid

    from django.db import connection

    owner, _admin, _patient, group = owned_group()
    user_locked, outcome = threading.Event(), {}

    def pause(user):  # the first erasure step: the user's row is locked by now
        user_locked.set()
        threading.Event().wait(1.0)  # the send takes the group's lock meanwhile

    def send():
        try:
            user_locked.wait(10)
            services.message_send(sender=owner, conversation_id=group.pk, client_id=uuid.uuid4(), body="bye")
            outcome["send"] = "ok"
        except Exception as exc:  # recorded, asserted below
            outcome["send"] = repr(exc)
        finally:
            connection.close()

    sender = threading.Thread(target=send)
    with account_services.erasers.replaced([("pause", pause), *account_services.erasers.items()]):
        sender.start()
        try:
            account_services.user_delete(user=owner, actor=owner)
            outcome["erase"] = "ok"
        except Exception as exc:
            outcome["erase"] = repr(exc)
        sender.join(15)
    assert outcome == {"send": "ok", "erase": "ok"}
    assert Membership.objects.get(conversation=group, user=owner).left_at is not None
