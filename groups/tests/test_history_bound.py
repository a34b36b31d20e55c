"""What a member may read is fixed when they join (trust finding 5): a later change of the group's
``history_visible_to_new_members`` applies to members who join later, never to those already in
(or removed). Every read path keeps the bound: history, sync, live edits, attachments."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from accounts.tests.factories import DoctorFactory, PatientFactory
from groups import services as group_services
from messaging import selectors, services
from messaging.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, dict[str, Any]]]:
    """Live events messaging publishes (after commit), in order."""
    sent: list[tuple[str, dict[str, Any]]] = []
    for module in (services.events, services.contacts):
        monkeypatch.setattr(module, "publish", lambda group, event: sent.append((group, event)))
    return sent


def closed_group():
    """A group that hides history from new members; the owner's first post; then P2 joins."""
    owner, p1, p2 = DoctorFactory(), PatientFactory(), PatientFactory()
    for patient in (p1, p2):
        services.conversation_open_direct(user=patient, peer_id=owner.pk)
    group = group_services.group_create(creator=owner, name="Closed", member_ids=[p1.pk])
    services.message_send(sender=p1, conversation_id=group.pk, client_id=uuid.uuid4(), body="pre-join secret")
    group_services.member_add(actor=owner, group_id=group.pk, user_id=p2.pk)
    return owner, p1, p2, group


def bodies(api, user, group_id) -> list[str]:
    response = api(user).get(f"/api/v1/conversations/{group_id}/messages")
    assert response.status_code == 200, response.content
    return [m["body"] for m in response.json()["results"]]


def share_history(api, owner, group_id) -> None:
    response = api(owner).patch(
        f"/api/v1/groups/{group_id}", {"history_visible_to_new_members": True}, format="json"
    )
    assert response.status_code == 200, response.content


def test_removed_member_does_not_regain_pre_join_history(api):
    owner, _p1, p2, group = closed_group()
    assert "pre-join secret" not in bodies(api, p2, group.pk)
    group_services.member_remove(actor=owner, group_id=group.pk, user_id=p2.pk)
    share_history(api, owner, group.pk)
    assert "pre-join secret" not in bodies(api, p2, group.pk)


def test_a_member_keeps_their_bound_and_later_joiners_get_the_new_setting(api):
    owner, p1, p2, group = closed_group()
    share_history(api, owner, group.pk)
    assert "pre-join secret" not in bodies(api, p2, group.pk)
    late = PatientFactory()
    services.conversation_open_direct(user=late, peer_id=owner.pk)
    group_services.member_add(actor=owner, group_id=group.pk, user_id=late.pk)
    assert "pre-join secret" in bodies(api, late, group.pk)
    rows = dict(Membership.objects.filter(conversation=group).values_list("user_id", "visible_after_seq"))
    # p2 joined after member.added p1 (seq 1) and the post (seq 2), while history was hidden.
    assert rows == {owner.pk: 0, p1.pk: 0, p2.pk: 2, late.pk: 0}


def test_attachments_before_the_bound_stay_out_of_reach(api):
    owner, p1, p2, group = closed_group()
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, format="PNG")
    uploaded = (
        api(owner)
        .post(
            "/api/v1/attachments", {"file": SimpleUploadedFile("x.png", out.getvalue())}, format="multipart"
        )
        .json()
    )
    # Sent before a second patient joins: p2 (already in) may fetch it, the newcomer may not.
    services.message_send(
        sender=owner,
        conversation_id=group.pk,
        client_id=uuid.uuid4(),
        body=None,
        attachment_ids=[uploaded["id"]],
    )
    newcomer = PatientFactory()
    services.conversation_open_direct(user=newcomer, peer_id=owner.pk)
    group_services.member_add(actor=owner, group_id=group.pk, user_id=newcomer.pk)
    assert api(p2).get(f"/api/v1/attachments/{uploaded['id']}").status_code == 200
    share_history(api, owner, group.pk)
    assert api(newcomer).get(f"/api/v1/attachments/{uploaded['id']}").status_code == 404
    assert api(p1).get(f"/api/v1/attachments/{uploaded['id']}").status_code == 200


def test_edits_of_messages_before_the_bound_reach_neither_sync_nor_live(
    published, django_capture_on_commit_callbacks
):
    _owner, p1, p2, group = closed_group()
    _frames, cursor, _more = selectors.sync_events(user=p2, cursor=None)
    original = selectors.message_history(
        user=p1, conversation_id=group.pk, after_seq=None, before_seq=None, limit=50
    )[0]
    secret = next(m for m in original if m.body == "pre-join secret")
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.message_edit(user=p1, message_id=secret.pk, body="edited pre-join secret")
    live = [(g, e["frame"]) for g, e in published if e.get("type") == "client.event"]
    assert f"user.{p1.pk}" in [g for g, _f in live]
    assert f"user.{p2.pk}" not in [g for g, _f in live], "the edit went live to a member who cannot see it"
    frames, _cursor, _more = selectors.sync_events(user=p2, cursor=cursor)
    assert "pre-join secret" not in str(frames)
    services.message_delete(user=p1, message_id=secret.pk)
    frames, _cursor, _more = selectors.sync_events(user=p2, cursor=cursor)
    assert [f for f in frames if f["type"] == "message.updated"] == []


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_what_members_can_see_today():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    # Found by name, whatever number it is given when merged.
    (key,) = [
        k for k in executor.loader.graph.nodes if k[0] == "messaging" and k[1].endswith("_visible_after_seq")
    ]
    before, after = (
        [p.key for p in executor.loader.graph.node_map[key].parents if p.key[0] == "messaging"],
        [key],
    )
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        conversation_model, membership_model = (
            apps.get_model("messaging", "Conversation"),
            apps.get_model("messaging", "Membership"),
        )
        owner, joiner = DoctorFactory(), PatientFactory()
        rows = {}
        for shared in (False, True):
            group = conversation_model.objects.create(
                kind="group", name="G", history_visible_to_new_members=shared, last_seq=7, last_event=9
            )
            membership_model.objects.create(conversation=group, user_id=owner.pk, role="owner")
            rows[shared] = membership_model.objects.create(
                conversation=group, user_id=joiner.pk, role="member", joined_seq=5, joined_event=6
            ).pk
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        bounds = dict(Membership.objects.filter(user=joiner).values_list("pk", "visible_after_seq"))
        assert bounds == {rows[False]: 5, rows[True]: 0}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
