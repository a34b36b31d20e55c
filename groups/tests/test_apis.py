"""Groups REST: lifecycle, roles, limits, authorization; membership changes as system messages."""

import uuid

import pytest

from accounts.tests.factories import DoctorFactory, PatientFactory
from groups import services as group_services
from messaging import services
from messaging.models import Conversation, Membership, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def care_team():
    """A doctor (owner) with a colleague and one of their patients."""
    owner, colleague, patient = DoctorFactory(), DoctorFactory(), PatientFactory()
    services.conversation_open_direct(user=patient, peer_id=owner.pk)  # makes the patient "theirs"
    return owner, colleague, patient


def create(api, owner, **payload):
    response = api(owner).post("/api/v1/groups", payload, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_create_group_with_members_and_history(api, care_team):
    owner, colleague, patient = care_team
    group = create(api, owner, name="  Cardiac   care ", member_ids=[colleague.pk, patient.pk])
    assert group["kind"] == "group"
    assert group["name"] == "Cardiac care"
    assert group["my_role"] == "owner"
    assert {m["user_id"]: m["role"] for m in group["members"]} == {
        owner.pk: "owner",
        colleague.pk: "member",
        patient.pk: "member",
    }
    history = api(colleague).get(f"/api/v1/conversations/{group['id']}/messages").json()["results"]
    assert [(m["kind"], m["system"]["event"], m["system"]["user_id"]) for m in history] == [
        ("system", "member.added", colleague.pk),
        ("system", "member.added", patient.pk),
    ]
    # Members see history from their own join (this group does not share earlier history).
    history = api(patient).get(f"/api/v1/conversations/{group['id']}/messages").json()["results"]
    assert [(m["system"]["event"], m["system"]["user_id"]) for m in history] == [("member.added", patient.pk)]


def test_group_messages_use_the_same_send_path(api, care_team):
    owner, colleague, patient = care_team
    group = create(api, owner, name="Team", member_ids=[colleague.pk, patient.pk])
    sent = [
        services.message_send(
            sender=u, conversation_id=group["id"], client_id=uuid.uuid4(), body="hi"
        ).message
        for u in (owner, patient, colleague)
    ]
    assert [m.seq for m in sent] == [3, 4, 5]
    again = services.message_send(
        sender=owner, conversation_id=group["id"], client_id=sent[0].client_id, body="hi"
    )
    assert again.created is False
    services.receipt_mark(user=patient, conversation_id=group["id"], seq=5, kind="read")
    members = {m["user_id"]: m for m in api(owner).get(f"/api/v1/groups/{group['id']}").json()["members"]}
    assert members[patient.pk]["read_seq"] == 5


def test_add_remove_leave_and_roles(api, care_team):
    owner, colleague, patient = care_team
    group = create(api, owner, name="Team", member_ids=[colleague.pk])
    gid = group["id"]
    added = api(owner).post(f"/api/v1/groups/{gid}/members", {"user_id": patient.pk}, format="json")
    assert added.status_code == 201
    twice = api(owner).post(f"/api/v1/groups/{gid}/members", {"user_id": patient.pk}, format="json")
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "already_member"
    # A plain member may not add or remove.
    other_doctor = DoctorFactory()
    refused = api(colleague).post(
        f"/api/v1/groups/{gid}/members", {"user_id": other_doctor.pk}, format="json"
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "not_group_admin"
    # Promote the colleague; an admin still cannot remove the owner.
    promote = api(owner).patch(
        f"/api/v1/groups/{gid}/members/{colleague.pk}", {"role": "admin"}, format="json"
    )
    assert promote.status_code == 200
    cannot = api(colleague).delete(f"/api/v1/groups/{gid}/members/{owner.pk}")
    assert cannot.status_code == 403
    assert cannot.json()["error"]["code"] == "cannot_remove_member"
    removed = api(colleague).delete(f"/api/v1/groups/{gid}/members/{patient.pk}")
    assert removed.status_code == 204
    gone = api(owner).delete(f"/api/v1/groups/{gid}/members/{patient.pk}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_a_member"
    # The owner leaves: ownership passes to the admin.
    assert api(owner).post(f"/api/v1/groups/{gid}/leave").status_code == 204
    detail = api(colleague).get(f"/api/v1/groups/{gid}").json()
    assert {m["user_id"]: m["role"] for m in detail["members"]} == {colleague.pk: "owner"}
    events = [
        m.system["event"] for m in Message.objects.filter(conversation_id=gid, kind="system").order_by("seq")
    ]
    assert events == [
        "member.added",
        "member.added",
        "member.role_changed",
        "member.removed",
        "member.left",
        "member.role_changed",
    ]


def test_non_members_see_nothing(api, care_team):
    owner, colleague, _patient = care_team
    group = create(api, owner, name="Secret", member_ids=[colleague.pk])
    outsider = DoctorFactory()
    client = api(outsider)
    gid = group["id"]
    for response in (
        client.get(f"/api/v1/groups/{gid}"),
        client.patch(f"/api/v1/groups/{gid}", {"name": "mine"}, format="json"),
        client.post(f"/api/v1/groups/{gid}/members", {"user_id": outsider.pk}, format="json"),
        client.delete(f"/api/v1/groups/{gid}/members/{colleague.pk}"),
        client.post(f"/api/v1/groups/{gid}/leave"),
        client.get(f"/api/v1/conversations/{gid}/messages"),
    ):
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] in ("group_not_found", "conversation_not_found")
    assert Conversation.objects.get(pk=gid).name == "Secret"


def test_adder_may_only_add_people_they_may_contact(api):
    patient, doctor, stranger_patient = PatientFactory(), DoctorFactory(), PatientFactory()
    group = create(api, patient, name="My doctors", member_ids=[doctor.pk])
    response = api(patient).post(
        f"/api/v1/groups/{group['id']}/members", {"user_id": stranger_patient.pk}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "contact_not_allowed"
    bad_create = api(patient).post(
        "/api/v1/groups", {"name": "x", "member_ids": [stranger_patient.pk]}, format="json"
    )
    assert bad_create.status_code == 403
    assert Conversation.objects.filter(kind="group").count() == 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "bad\x00name"])
def test_bad_names_refused(api, care_team, name):
    owner, _c, _p = care_team
    response = api(owner).post("/api/v1/groups", {"name": name}, format="json")
    assert response.status_code == 400
    assert Conversation.objects.filter(kind="group").count() == 0


def test_size_limit(api, care_team, settings):
    settings.HEALTHCHAT_MAX_GROUP_SIZE = 2
    owner, colleague, patient = care_team
    group = create(api, owner, name="Small", member_ids=[colleague.pk])
    response = api(owner).post(
        f"/api/v1/groups/{group['id']}/members", {"user_id": patient.pk}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "group_full"
    too_big = api(owner).post(
        "/api/v1/groups", {"name": "Big", "member_ids": [colleague.pk, patient.pk]}, format="json"
    )
    assert too_big.status_code == 409
    assert Membership.objects.filter(conversation_id=group["id"], left_at__isnull=True).count() == 2


def test_rename_is_a_group_updated_event(api, care_team):
    owner, colleague, _p = care_team
    group = create(api, owner, name="Old", member_ids=[colleague.pk])
    refused = api(colleague).patch(f"/api/v1/groups/{group['id']}", {"name": "Mine"}, format="json")
    assert refused.status_code == 403
    renamed = api(owner).patch(f"/api/v1/groups/{group['id']}", {"name": "New"}, format="json")
    assert renamed.json()["name"] == "New"
    last = Message.objects.filter(conversation_id=group["id"]).order_by("-seq").first()
    assert last.system == {"event": "group.updated", "by": owner.pk, "name": "New"}


def test_removed_member_keeps_history_up_to_removal_only(api, care_team):
    owner, colleague, patient = care_team
    group = create(api, owner, name="Team", member_ids=[colleague.pk, patient.pk])
    gid = group["id"]
    services.message_send(sender=owner, conversation_id=gid, client_id=uuid.uuid4(), body="before")
    group_services.member_remove(actor=owner, group_id=gid, user_id=patient.pk)
    services.message_send(sender=owner, conversation_id=gid, client_id=uuid.uuid4(), body="after")
    history = api(patient).get(f"/api/v1/conversations/{gid}/messages").json()["results"]
    assert [m["body"] or m["system"]["event"] for m in history][-2:] == ["before", "member.removed"]
    assert "after" not in [m["body"] for m in history]
    with pytest.raises(Exception) as info:
        services.message_send(sender=patient, conversation_id=gid, client_id=uuid.uuid4(), body="let me in")
    assert getattr(info.value, "code", None) == "conversation_not_found"


def test_new_members_see_history_from_join_unless_group_shares_it(api, care_team):
    owner, colleague, patient = care_team
    closed = create(api, owner, name="Closed", member_ids=[colleague.pk])
    services.message_send(sender=owner, conversation_id=closed["id"], client_id=uuid.uuid4(), body="old news")
    group_services.member_add(actor=owner, group_id=closed["id"], user_id=patient.pk)
    bodies = [
        m["body"]
        for m in api(patient).get(f"/api/v1/conversations/{closed['id']}/messages").json()["results"]
    ]
    assert "old news" not in bodies
    shared = create(api, owner, name="Shared", member_ids=[colleague.pk], history_visible_to_new_members=True)
    services.message_send(sender=owner, conversation_id=shared["id"], client_id=uuid.uuid4(), body="old news")
    group_services.member_add(actor=owner, group_id=shared["id"], user_id=patient.pk)
    bodies = [
        m["body"]
        for m in api(patient).get(f"/api/v1/conversations/{shared['id']}/messages").json()["results"]
    ]
    assert "old news" in bodies


def test_staff_see_groups_in_admin(client, care_team):
    from accounts.models import User

    owner, colleague, _p = care_team
    group = group_services.group_create(creator=owner, name="Visible to staff", member_ids=[colleague.pk])
    staff = User.objects.create_superuser("+12025550199", "pw-123456789", display_name="Staff")
    client.force_login(staff)
    listing = client.get("/admin/groups/groupconversation/")
    assert listing.status_code == 200
    assert b"Visible to staff" in listing.content
    detail = client.get(f"/admin/groups/groupconversation/{group.pk}/change/")
    assert detail.status_code == 200
