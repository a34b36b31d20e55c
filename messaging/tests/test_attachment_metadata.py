"""Finding 7 of issue 17: uploads keep no location, author, device or free-text metadata.

A corpus of real files of every accepted type (``media_corpus``), each carrying such metadata,
is uploaded by a patient, sent to a doctor, and what the doctor downloads is judged by an
outside tool, ``exiftool``. The media must still decode (same size, same duration). Failures
of the tools end in ``rejected`` with a clear code, and nothing is served.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pikepdf
import pillow_heif
import pytest
from django.core.files.storage import default_storage
from PIL import Image
from rest_framework.test import APIClient

from core.errors import ApplicationError
from messaging import services
from messaging.models import Attachment
from messaging.tests import media_corpus as mc
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db

SAMPLES: list[Callable[[], mc.Sample]] = [
    mc.jpeg,
    mc.png,
    mc.gif,
    mc.webp,
    mc.heic,
    mc.pdf,
    mc.docx,
    mc.xlsx,
    mc.text,
    mc.mp4,
    mc.mov,
    mc.threegp,
    mc.threeg2,
    mc.webm,
    mc.m4a,
    mc.ogg,
    mc.amr,
]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def upload(client: APIClient, sample: mc.Sample) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile(sample.name, sample.data, content_type="application/octet-stream")},
        format="multipart",
    )


def send(sender: Any, conversation: Any, attachment_id: int) -> None:
    services.message_send(
        sender=sender,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body=None,
        attachment_ids=[attachment_id],
    )


def download(client: APIClient, attachment_id: int) -> tuple[bytes, dict[str, Any]]:
    link = client.get(f"/api/v1/attachments/{attachment_id}")
    assert link.status_code == 200, link.content
    response: Any = APIClient().get(link.json()["url"])
    assert response.status_code == 200
    return b"".join(response.streaming_content), link.json()


def probe(data: bytes, suffix: str) -> dict[str, Any]:
    """ffprobe's view of a downloaded file: duration, and the size of its first video stream."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"media.{suffix}"
        path.write_bytes(data)
        result = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration:stream=codec_type,width,height",
                "-of",
                "json",
                str(path),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


@pytest.mark.parametrize("make", SAMPLES, ids=[f.__name__ for f in SAMPLES])
def test_what_a_recipient_downloads_carries_no_metadata_and_still_decodes(
    make, api, django_capture_on_commit_callbacks
):
    sample = make()
    assert (
        mc.metadata_problems(sample.data, sample.name.rsplit(".", 1)[1].lower())
        or sample.category == "document"
    )
    patient, doctor, conversation = pair()
    with django_capture_on_commit_callbacks(execute=True):  # the eager worker strips video/audio
        response = upload(api(patient), sample)
    assert response.status_code == 201, response.content
    assert response.json()["category"] == sample.category
    send(patient, conversation, response.json()["id"])

    data, link = download(api(doctor), response.json()["id"])
    suffix = link["name"].rsplit(".", 1)[1]
    assert mc.metadata_problems(data, suffix) == []
    assert link["size"] == len(data)
    assert link["sha256"] == hashlib.sha256(data).hexdigest()
    # Converted: HEIC (minutes to encode, shown only by Safari) and AMR (no browser plays it).
    converted = {"image/heic": "image/jpeg", "audio/amr": "audio/ogg"}
    assert link["content_type"] == converted.get(sample.content_type, sample.content_type)
    if sample.category == "image":
        pillow_heif.register_heif_opener()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.size == (sample.width, sample.height)
        assert (link["width"], link["height"]) == (sample.width, sample.height)
    elif sample.category in ("video", "audio"):
        info = probe(data, suffix)
        assert float(info["format"]["duration"]) == pytest.approx(sample.duration, abs=0.15)
        assert link["duration"] == pytest.approx(sample.duration, abs=0.15)
        if sample.category == "video":
            video = next(s for s in info["streams"] if s["codec_type"] == "video")
            assert (video["width"], video["height"]) == (sample.width, sample.height)
    elif sample.content_type == "application/pdf":
        with pikepdf.open(io.BytesIO(data)) as document:
            assert len(document.pages) == 1


def test_video_waits_in_processing_until_the_worker_has_stripped_it(
    api, media, django_capture_on_commit_callbacks
):
    patient, doctor, conversation = pair()
    sample = mc.mp4()
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = upload(api(patient), sample)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["state"], body["rejection"]) == ("processing", None)
    # Not downloadable, not sendable: the stored bytes are still the uploaded ones.
    link = api(patient).get(f"/api/v1/attachments/{body['id']}").json()
    assert (link["state"], link["url"], link["thumbnail_url"]) == ("processing", None, None)
    with pytest.raises(ApplicationError) as info:
        send(patient, conversation, body["id"])
    assert info.value.code == "attachment_processing"
    original = Attachment.objects.get(pk=body["id"]).file.name
    assert default_storage.exists(original)

    with django_capture_on_commit_callbacks(execute=True):
        for callback in queued:  # the worker's turn: process_media.delay(id)
            callback()
    row = Attachment.objects.get(pk=body["id"])
    assert row.state == "ready"
    assert not default_storage.exists(original)  # the uploaded bytes are gone
    assert mc.metadata_problems(row.file.read(), "mp4") == []
    send(patient, conversation, body["id"])
    data, link = download(api(doctor), body["id"])
    assert link["state"] == "ready"
    assert link["sha256"] == hashlib.sha256(data).hexdigest()
    # Processing twice (a redelivered task) changes nothing.
    services.attachment_process_media(attachment_id=body["id"])
    assert Attachment.objects.get(pk=body["id"]).file.name == row.file.name


def _truncated_mp4() -> mc.Sample:
    sample = mc.mp4()
    return mc.Sample(sample.name, sample.data[:600], sample.content_type, sample.category)


@pytest.mark.parametrize(
    ("make", "setting", "code"),
    [
        (_truncated_mp4, {}, "corrupt_media"),
        (mc.webm, {"MEDIA_PROCESSING_TIMEOUT_SECONDS": 0.001}, "processing_timeout"),
        (mc.m4a, {"MEDIA_PROCESSING_MAX_BYTES": 1000}, "file_too_large"),
    ],
    ids=["corrupt", "timeout", "too-large-for-the-tool"],
)
def test_tool_failures_reject_the_upload_and_nothing_is_served(
    make, setting, code, api, media, settings, django_capture_on_commit_callbacks
):
    patient, _doctor, conversation = pair()
    sample = make()
    for key, value in setting.items():
        setattr(settings, key, value)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(api(patient), sample)
    assert response.status_code == 201, response.content
    body = response.json()
    assert Attachment.objects.get(pk=body["id"]).rejection == code
    assert not [p for p in media.rglob("*") if p.is_file()]  # the uploaded bytes are deleted
    link = api(patient).get(f"/api/v1/attachments/{body['id']}").json()
    assert (link["state"], link["rejection"], link["url"]) == ("rejected", code, None)
    with pytest.raises(ApplicationError) as info:
        send(patient, conversation, body["id"])
    assert info.value.code == "attachment_rejected"


def test_without_ffmpeg_video_and_audio_are_refused_not_stored_as_sent(api, media, settings):
    settings.MEDIA_FFMPEG_BINARY = "/nonexistent/ffmpeg"
    patient = pair()[0]
    for sample in (mc.mp4(), mc.ogg()):
        response = upload(api(patient), sample)
        assert response.status_code == 503, response.content
        assert response.json()["error"]["code"] == "media_processing_unavailable"
    assert Attachment.objects.count() == 0
    assert not [p for p in media.rglob("*") if p.is_file()]
    assert upload(api(patient), mc.jpeg()).status_code == 201  # images need no ffmpeg


def test_password_protected_and_damaged_documents_are_refused(api, media):
    patient = pair()[0]
    locked = io.BytesIO()
    with pikepdf.open(io.BytesIO(mc.pdf().data)) as document:
        document.save(locked, encryption=pikepdf.Encryption(user="secret", owner="secret"))
    damaged_docx = io.BytesIO()  # a readable package whose embedded photo is cut short
    with (
        zipfile.ZipFile(io.BytesIO(mc.docx().data)) as source,
        zipfile.ZipFile(damaged_docx, "w") as target,
    ):
        for member in source.infolist():
            data = source.read(member)
            target.writestr(member.filename, data[:300] if member.filename.endswith(".jpeg") else data)
    for data, name, code in (
        (locked.getvalue(), "locked.pdf", "document_encrypted"),
        (b"%PDF-1.7\n" + b"\x00garbage" * 50, "broken.pdf", "corrupt_document"),
        (damaged_docx.getvalue(), "broken.docx", "corrupt_document"),
    ):
        response = upload(api(patient), mc.Sample(name, data, "", "document"))
        assert response.status_code == 422, (name, response.content)
        assert response.json()["error"]["code"] == code
    assert Attachment.objects.count() == 0


def test_a_lost_strip_task_is_queued_again_by_beat(api, media, django_capture_on_commit_callbacks):
    patient = pair()[0]
    with django_capture_on_commit_callbacks(execute=False):  # the task is lost with its worker
        body = upload(api(patient), mc.ogg()).json()
    assert Attachment.objects.get(pk=body["id"]).state == "processing"
    assert services.attachments_requeue_processing() == 0  # not overdue yet
    assert services.attachments_requeue_processing(older_than_seconds=0) == 1  # eager: runs now
    row = Attachment.objects.get(pk=body["id"])
    assert row.state == "ready"
    assert mc.metadata_problems(row.file.read(), "ogg") == []
    assert services.attachments_requeue_processing(older_than_seconds=0) == 0
