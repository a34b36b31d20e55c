"""File sharing: type from bytes, limits, EXIF stripping, access rules, signed links, cleanup."""

import io
import uuid
import zipfile

import pikepdf
import pytest
from django.core.files.storage import default_storage
from PIL import Image
from rest_framework.test import APIClient

from accounts.tests.factories import PatientFactory
from core.errors import ApplicationError
from groups import services as group_services
from messaging import services
from messaging.models import Attachment
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def jpeg_with_exif() -> bytes:
    img = Image.new("RGB", (640, 480), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x010E] = "taken at the patient's home"  # ImageDescription
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (51.0, 30.0, 0.0)
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (32, 32), (0, 0, 255, 128)).save(out, format="PNG")
    return out.getvalue()


def docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def pdf() -> bytes:
    document = pikepdf.new()
    document.add_blank_page()
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def upload(client, data: bytes, name: str, content_type: str = "application/octet-stream"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile(name, data, content_type=content_type)},
        format="multipart",
    )


def test_image_upload_strips_exif_and_records_sha256(api, django_capture_on_commit_callbacks):
    import hashlib

    patient = PatientFactory()
    raw = jpeg_with_exif()
    assert b"SecretCam" in raw
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(api(patient), raw, "../../etc/pass\x00wd.png", "text/html")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["category"] == "image"
    assert body["content_type"] == "image/jpeg"  # from the bytes, not the name or header
    assert body["sha256"] != hashlib.sha256(raw).hexdigest()  # the digest of what is stored:
    assert body["name"] == "passwd.jpg"  # no path, no control characters, the real extension
    assert (body["width"], body["height"]) == (640, 480)
    attachment = Attachment.objects.get(pk=body["id"])
    stored = attachment.file.read()
    assert body["sha256"] == hashlib.sha256(stored).hexdigest()  # what a recipient downloads
    assert b"SecretCam" not in stored
    assert b"patient's home" not in stored
    assert not Image.open(io.BytesIO(stored)).getexif()
    assert "etc" not in attachment.file.name
    assert "pass" not in attachment.file.name
    assert attachment.thumbnail  # made by the Celery task after commit


@pytest.mark.parametrize(
    ("data", "name", "status", "code"),
    [
        (b"<html><script>alert(1)</script></html>", "cat.jpg", 415, "unsupported_file_type"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script/></svg>',
            "logo.png",
            415,
            "unsupported_file_type",
        ),
        (
            b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" * 8,
            "report.pdf",
            415,
            "unsupported_file_type",
        ),
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64, "photo.jpg", 415, "unsupported_file_type"),
        (b"", "empty.txt", 400, "empty_file"),
        (jpeg_with_exif()[:300], "cut.jpg", 422, "corrupt_image"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_stored(api, media, data, name, status, code):
    patient = PatientFactory()
    response = upload(api(patient), data, name)
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert Attachment.objects.count() == 0
    assert not any(p.is_file() for p in media.rglob("*")) if media.exists() else True


def test_pixel_bomb_is_refused(api, monkeypatch):
    from messaging import filetypes

    monkeypatch.setattr(filetypes, "MAX_IMAGE_PIXELS", 10_000)
    out = io.BytesIO()
    Image.new("L", (200, 200)).save(out, format="PNG")
    response = upload(api(PatientFactory()), out.getvalue(), "bomb.png")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "image_too_large"
    assert Attachment.objects.count() == 0


def test_per_category_size_limit_and_daily_quota(api, settings):
    patient = PatientFactory()
    settings.ATTACHMENT_MAX_BYTES = {**settings.ATTACHMENT_MAX_BYTES, "document": 10}
    response = upload(api(patient), b"hello, this text is longer than ten bytes", "notes.txt")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    settings.ATTACHMENT_MAX_BYTES = {**settings.ATTACHMENT_MAX_BYTES, "document": 10_000}
    settings.ATTACHMENT_DAILY_QUOTA_BYTES = 60
    assert upload(api(patient), b"x" * 40, "a.txt").status_code == 201
    over = upload(api(patient), b"y" * 40, "b.txt")
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "quota_exceeded"
    # The 40 bytes uploaded just now leave the 24-hour window in about a day.
    retry_after = int(over["Retry-After"])
    assert over.json()["error"]["retry_after"] == retry_after
    assert 86400 - 60 < retry_after <= 86400


@pytest.mark.parametrize(
    ("data", "content_type", "category"),
    [
        (png(), "image/png", "image"),
        (pdf(), "application/pdf", "document"),
        (docx(), "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "document"),
        ("Blood pressure 120/80 — fine.".encode(), "text/plain", "document"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "video/mp4", "video"),
        (b"OggS\x00\x02" + b"\x00" * 40, "audio/ogg", "audio"),
        (b"#!AMR\n" + b"\x00" * 40, "audio/amr", "audio"),
        (b"\x1aE\xdf\xa3" + b"\x00" * 40, "video/webm", "video"),
    ],
)
def test_allowed_types_detected_from_bytes(api, data, content_type, category):
    response = upload(api(PatientFactory()), data, "whatever.bin")
    assert response.status_code == 201, response.content
    assert response.json()["content_type"] == content_type
    assert response.json()["category"] == category


def test_send_download_and_access_rules(api):
    patient, doctor, conversation = pair()
    uploaded = upload(api(patient), png(), "scan.png").json()
    stranger = PatientFactory()
    # Before it is sent, only the uploader can fetch it.
    assert api(doctor).get(f"/api/v1/attachments/{uploaded['id']}").status_code == 404
    # Someone else's upload cannot be attached.
    with pytest.raises(ApplicationError) as info:
        services.message_send(
            sender=doctor,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body=None,
            attachment_ids=[uploaded["id"]],
        )
    assert info.value.code == "attachment_not_found"
    result = services.message_send(
        sender=patient,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body=None,
        attachment_ids=[uploaded["id"]],
    )
    assert result.data["attachments"][0]["id"] == uploaded["id"]
    with pytest.raises(ApplicationError) as info:
        services.message_send(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body="again",
            attachment_ids=[uploaded["id"]],
        )
    assert info.value.code == "attachment_already_used"
    link = api(doctor).get(f"/api/v1/attachments/{uploaded['id']}")
    assert link.status_code == 200
    data = link.json()
    assert data["expires_at"]
    content = APIClient().get(data["url"])
    assert content.status_code == 200
    assert content["Content-Type"] == "image/png"
    assert content["X-Content-Type-Options"] == "nosniff"
    assert content["Content-Disposition"].startswith("inline;")
    assert b"".join(content.streaming_content).startswith(b"\x89PNG")
    assert api(stranger).get(f"/api/v1/attachments/{uploaded['id']}").status_code == 404
    tampered = data["url"].replace("token=", "token=x")
    assert APIClient().get(tampered).status_code == 403
    history = api(doctor).get(f"/api/v1/conversations/{conversation.pk}/messages").json()["results"]
    assert history[-1]["attachments"][0]["sha256"] == uploaded["sha256"]


def test_documents_download_as_attachment(api):
    import hashlib

    patient, doctor, conversation = pair()
    document = pdf()
    uploaded = upload(api(patient), document, "lab results.pdf").json()
    services.message_send(
        sender=patient,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body="results",
        attachment_ids=[uploaded["id"]],
    )
    url = api(doctor).get(f"/api/v1/attachments/{uploaded['id']}").json()["url"]
    response = APIClient().get(url)
    assert response["Content-Disposition"] == "attachment; filename*=UTF-8''lab%20results.pdf"
    assert response["Content-Type"] == "application/pdf"
    downloaded = b"".join(response.streaming_content)
    # Rewritten by pikepdf (no document info, no XMP); the digest is of the stored bytes.
    assert hashlib.sha256(downloaded).hexdigest() == uploaded["sha256"]
    assert downloaded.startswith(b"%PDF-")


def test_link_stops_working_when_the_member_leaves(api):
    from accounts.tests.factories import DoctorFactory

    owner, colleague = DoctorFactory(), DoctorFactory()
    group = group_services.group_create(creator=owner, name="Team", member_ids=[colleague.pk])
    uploaded = upload(api(owner), png(), "x.png").json()
    services.message_send(
        sender=owner,
        conversation_id=group.pk,
        client_id=uuid.uuid4(),
        body=None,
        attachment_ids=[uploaded["id"]],
    )
    url = api(colleague).get(f"/api/v1/attachments/{uploaded['id']}").json()["url"]
    group_services.member_leave(user=colleague, group_id=group.pk)
    assert APIClient().get(url).status_code == 404
    assert api(colleague).get(f"/api/v1/attachments/{uploaded['id']}").status_code == 404


def test_deleting_the_message_deletes_the_files(api, django_capture_on_commit_callbacks):
    patient, _doctor, conversation = pair()
    with django_capture_on_commit_callbacks(execute=True):
        uploaded = upload(api(patient), jpeg_with_exif(), "x.jpg").json()
    attachment = Attachment.objects.get(pk=uploaded["id"])
    names = [attachment.file.name, attachment.thumbnail.name]
    assert all(default_storage.exists(n) for n in names)
    message = services.message_send(
        sender=patient,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body=None,
        attachment_ids=[uploaded["id"]],
    ).message
    with django_capture_on_commit_callbacks(execute=True):
        services.message_delete(user=patient, message_id=message.pk)
    assert not any(default_storage.exists(n) for n in names)
    assert Attachment.objects.get(pk=uploaded["id"]).deleted_at is not None


def test_orphans_expire(api):
    patient = PatientFactory()
    uploaded = upload(api(patient), png(), "x.png").json()
    name = Attachment.objects.get(pk=uploaded["id"]).file.name
    assert services.attachments_purge_orphans(older_than_hours=1) == 0
    Attachment.objects.filter(pk=uploaded["id"]).update(created_at="2000-01-01T00:00:00Z")
    assert services.attachments_purge_orphans() == 1
    assert not default_storage.exists(name)
    assert not Attachment.objects.filter(pk=uploaded["id"]).exists()


def test_missing_file_field(api):
    response = api(PatientFactory()).post("/api/v1/attachments", {}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "file_required"


def test_large_refused_upload_leaves_no_temp_files(api, settings, tmp_path):
    """Above FILE_UPLOAD_MAX_MEMORY_SIZE uploads spool to disk; a refused one leaves nothing."""
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    payload = b"<html>" + b"x" * 200_000  # spoofed HTML, spooled to a temporary file
    response = upload(api(PatientFactory()), payload, "big.jpg")
    assert response.status_code == 415
    assert list(spool.iterdir()) == []
    assert Attachment.objects.count() == 0


def test_anonymous_callers_are_refused_and_links_expire(api, settings):
    import time
    from urllib.parse import parse_qs, urlparse

    from django.core import signing

    patient, doctor, conversation = pair()
    uploaded = upload(api(patient), png(), "x.png").json()
    services.message_send(
        sender=patient,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body=None,
        attachment_ids=[uploaded["id"]],
    )
    anonymous = APIClient().get(f"/api/v1/attachments/{uploaded['id']}")
    assert anonymous.status_code == 401
    link = api(doctor).get(f"/api/v1/attachments/{uploaded['id']}").json()
    token = parse_qs(urlparse(link["url"]).query)["token"][0]
    # Scope: this attachment, this user, the full file.
    payload = signing.loads(token, salt="healthchat.attachment.content")
    assert payload == {"a": uploaded["id"], "u": doctor.pk, "v": "file"}
    assert APIClient().get(link["url"]).status_code == 200
    # The link's age is checked when it is used: with a 1 s lifetime, 2.1 s later it has expired
    # (set after the first use, so a slow machine cannot expire it before that use).
    settings.ATTACHMENT_URL_TTL_SECONDS = 1
    time.sleep(2.1)
    expired = APIClient().get(link["url"])
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "link_expired"
    other = APIClient().get(f"/api/v1/attachments/{uploaded['id'] + 1}/content?token={token}")
    assert other.status_code == 403
