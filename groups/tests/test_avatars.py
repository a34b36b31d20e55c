"""Group avatars: set, replaced and removed by the group's owner or admins; shown in the group's
and the conversation list's data; downloaded by members only, metadata-free (exiftool judges);
a group change in history and sync; never a message attachment; kept by the orphan purge."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.tests.factories import DoctorFactory, PatientFactory
from groups import avatars
from groups import services as group_services
from messaging import services
from messaging.models import Attachment, Conversation, Event, Message
from messaging.tests import media_corpus as mc

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def world():
    owner, admin, member, outsider = DoctorFactory(), PatientFactory(), PatientFactory(), PatientFactory()
    for patient in (admin, member, outsider):
        services.conversation_open_direct(user=patient, peer_id=owner.pk)
    group = group_services.group_create(creator=owner, name="Care circle", member_ids=[admin.pk, member.pk])
    group_services.member_set_role(actor=owner, group_id=group.pk, user_id=admin.pk, role="admin")
    return owner, admin, member, outsider, group


def upload(api, user, sample: mc.Sample | None = None) -> dict[str, Any]:
    sample = sample or mc.jpeg()
    response = api(user).post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile(sample.name, sample.data, content_type="application/octet-stream")},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return response.json()


def download(api, user, attachment_id: int, which: str = "url") -> tuple[int, bytes]:
    link = api(user).get(f"/api/v1/attachments/{attachment_id}")
    if link.status_code != 200:
        return link.status_code, b""
    parts = urlsplit(link.json()[which])
    response = api(user).get(f"{parts.path}?{parts.query}")
    return response.status_code, b"".join(response.streaming_content) if response.status_code == 200 else b""


def test_an_admin_sets_it_members_see_and_download_it_metadata_free(api, django_capture_on_commit_callbacks):
    owner, admin, member, outsider, group = world()
    image = upload(api, admin)

    with django_capture_on_commit_callbacks(execute=True):
        response = api(admin).put(
            f"/api/v1/groups/{group.pk}/avatar", {"attachment_id": image["id"]}, format="json"
        )

    assert response.status_code == 200, response.content
    avatar = response.json()["avatar"]
    assert avatar == {"attachment_id": image["id"], "content_type": "image/jpeg", "width": 64, "height": 48}
    # Shown in the conversation data (list and detail) for every member.
    for user in (owner, member):
        listed = {c["id"]: c for c in api(user).get("/api/v1/conversations").json()["results"]}
        assert listed[group.pk]["avatar"] == avatar
        assert api(user).get(f"/api/v1/conversations/{group.pk}").json()["avatar"] == avatar
        assert api(user).get(f"/api/v1/groups/{group.pk}").json()["avatar"] == avatar
        status, data = download(api, user, image["id"])
        assert status == 200
        assert mc.metadata_problems(data, "jpg") == []  # exiftool judges: no GPS, author, comment...
        status, thumb = download(api, user, image["id"], "thumbnail_url")
        assert status == 200
        assert thumb[:2] == b"\xff\xd8"
    # Not to anyone else.
    assert download(api, outsider, image["id"])[0] == 404
    # A group change, in history and the replay log, for every member.
    system = Message.objects.filter(conversation=group, kind="system").order_by("-seq").first()
    assert system is not None
    assert system.system == {"event": "group.updated", "by": admin.pk, "avatar": "set"}
    assert Event.objects.filter(conversation=group, kind="group.updated", message=system).exists()


def test_replace_and_remove_delete_the_former_image(api, django_capture_on_commit_callbacks):
    owner, _admin, member, _outsider, group = world()
    first, second = upload(api, owner), upload(api, owner, mc.png())
    with django_capture_on_commit_callbacks(execute=True):
        avatars.group_avatar_set(actor=owner, group_id=group.pk, attachment_id=first["id"])
    old_names = [Attachment.objects.get(pk=first["id"]).file.name]

    with django_capture_on_commit_callbacks(execute=True):
        replaced = api(owner).put(
            f"/api/v1/groups/{group.pk}/avatar", {"attachment_id": second["id"]}, format="json"
        )
    assert replaced.json()["avatar"]["attachment_id"] == second["id"]
    assert not Attachment.objects.filter(pk=first["id"]).exists()
    assert not any(default_storage.exists(n) for n in old_names)
    assert download(api, member, first["id"])[0] == 404

    with django_capture_on_commit_callbacks(execute=True):
        removed = api(owner).delete(f"/api/v1/groups/{group.pk}/avatar")
    assert removed.status_code == 204
    assert api(member).get(f"/api/v1/groups/{group.pk}").json()["avatar"] is None
    assert not Attachment.objects.filter(pk=second["id"]).exists()
    last = Message.objects.filter(conversation=group, kind="system").order_by("-seq").first()
    assert last is not None
    assert last.system == {"event": "group.updated", "by": owner.pk, "avatar": "removed"}
    # Removing when there is none changes nothing and records nothing.
    seq = Conversation.objects.get(pk=group.pk).last_seq
    assert api(owner).delete(f"/api/v1/groups/{group.pk}/avatar").status_code == 204
    assert Conversation.objects.get(pk=group.pk).last_seq == seq


@pytest.mark.parametrize(
    ("who", "what", "status", "code"),
    [
        ("member", "own_image", 403, "not_group_admin"),
        ("outsider", "own_image", 404, "group_not_found"),
        ("admin", "someone_elses_image", 404, "attachment_not_found"),
        ("admin", "missing", 404, "attachment_not_found"),
        ("admin", "a_pdf", 422, "avatar_not_an_image"),
        ("admin", "an_encrypted_upload", 422, "avatar_not_an_image"),
        ("admin", "a_sent_image", 404, "attachment_not_found"),
    ],
)
def test_who_may_set_what(api, who, what, status, code):
    owner, admin, member, outsider, group = world()
    actor = {"admin": admin, "member": member, "outsider": outsider}[who]
    if what == "own_image":
        attachment_id = upload(api, actor)["id"]
    elif what == "someone_elses_image":
        attachment_id = upload(api, owner)["id"]
    elif what == "missing":
        attachment_id = 9_000_000_000_000
    elif what == "a_pdf":
        attachment_id = upload(api, actor, mc.pdf())["id"]
    elif what == "an_encrypted_upload":
        response = api(actor).post(
            "/api/v1/attachments",
            {
                "file": SimpleUploadedFile("x.bin", b"\x00opaque", content_type="application/octet-stream"),
                "encrypted": "true",
            },
            format="multipart",
        )
        attachment_id = response.json()["id"]
    else:
        attachment_id = upload(api, actor)["id"]
        services.message_send(
            sender=actor,
            conversation_id=group.pk,
            client_id=uuid.uuid4(),
            body="look",
            attachment_ids=[attachment_id],
        )
    response = api(actor).put(
        f"/api/v1/groups/{group.pk}/avatar", {"attachment_id": attachment_id}, format="json"
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert Conversation.objects.get(pk=group.pk).avatar_id is None
    if who == "member":
        removal = api(actor).delete(f"/api/v1/groups/{group.pk}/avatar")
        assert (removal.status_code, removal.json()["error"]["code"]) == (403, "not_group_admin")


def test_an_avatar_is_never_a_message_attachment_and_outlives_the_orphan_purge(api):
    owner, _admin, member, _outsider, group = world()
    image = upload(api, owner)
    avatars.group_avatar_set(actor=owner, group_id=group.pk, attachment_id=image["id"])
    with pytest.raises(Exception, match="sent once"):
        services.message_send(
            sender=owner,
            conversation_id=group.pk,
            client_id=uuid.uuid4(),
            body="x",
            attachment_ids=[image["id"]],
        )
    assert services.attachments_purge_orphans(older_than_hours=-1) == 0
    assert Attachment.objects.filter(pk=image["id"]).exists()
    # A removed member loses access at once.
    group_services.member_remove(actor=owner, group_id=group.pk, user_id=member.pk)
    assert download(api, member, image["id"])[0] == 404
