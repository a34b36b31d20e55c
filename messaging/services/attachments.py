"""Uploads: type from the bytes, limits, quota, media processing (metadata stripped, thumbnails),
attaching to a message, deletion and orphans."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, NotFound
from core.realtime import publish_on_commit, user_group
from messaging import selectors
from messaging.models import Attachment, Conversation, Message

logger = logging.getLogger("healthchat.messaging")


# --- Attachments ------------------------------------------------------------------------------
def storage_delete(names: list[str | None]) -> None:
    from django.core.files.storage import default_storage

    for name in filter(None, names):
        try:
            default_storage.delete(name)
        except Exception:
            logger.warning("could not delete a stored file", exc_info=True)


def _quota_retry_after(uploader: User, since: Any, wanted: int) -> int:
    """Seconds until enough of the last day's uploads leave the 24-hour window for ``wanted``."""
    excess = wanted - settings.ATTACHMENT_DAILY_QUOTA_BYTES
    freed = 0
    rows = Attachment.objects.filter(uploader=uploader, created_at__gte=since).order_by("created_at")
    for created_at, row_size in rows.values_list("created_at", "size"):
        freed += row_size
        if freed >= excess:
            return max(1, int((created_at - since).total_seconds()) + 1)
    return 86400


def attachment_upload(*, uploader: User, upload: Any, name: str, encrypted: bool = False) -> Attachment:
    """Store an uploaded file: type from its bytes, per-category limits, daily quota, and no
    metadata (location, author, device, free text) in what is stored for recipients.

    Images and documents are rewritten here (``messaging/scrub.py``) and are ``ready`` at once.
    Video and audio are stored as uploaded in state ``processing`` and stripped by ffmpeg in
    the Celery worker (``attachment_process_media``); until then they cannot be downloaded or
    attached. Without ffmpeg they are refused (``media_processing_unavailable``).
    ``sha256`` and ``size`` describe the stored, clean bytes (what a recipient downloads).

    ``encrypted``: the client encrypted the file for an end-to-end encrypted conversation (its
    key travels inside the encrypted message). The bytes are opaque: stored as they came,
    ``application/octet-stream``, category ``encrypted``, named ``encrypted.bin`` (the real name
    is inside the message too), never sniffed, re-encoded or thumbnailed: the client strips
    metadata before it encrypts."""
    import hashlib

    from django.core.files.base import ContentFile, File

    from messaging import ffmpeg, filetypes, scrub

    size = int(getattr(upload, "size", 0) or 0)
    if size <= 0:
        raise ApplicationError("empty_file", "The file is empty.")
    if encrypted:
        detected = filetypes.ENCRYPTED
        name = "encrypted.bin"
    else:
        detected = filetypes.detect(upload)
    limit = settings.ATTACHMENT_MAX_BYTES[detected.category]
    if size > limit:
        raise ApplicationError(
            "file_too_large",
            f"{detected.category.capitalize()} files may be at most {limit} bytes.",
            status=413,
        )
    since = timezone.now() - timedelta(days=1)
    used = (
        Attachment.objects.filter(uploader=uploader, created_at__gte=since).aggregate(total=Sum("size"))[
            "total"
        ]
        or 0
    )
    if used + size > settings.ATTACHMENT_DAILY_QUOTA_BYTES:
        raise ApplicationError(
            "quota_exceeded",
            "Daily upload quota reached; try again later.",
            status=429,
            extra={"retry_after": _quota_retry_after(uploader, since, used + size)},
        )
    width = height = None
    content: File[Any]
    state = Attachment.State.READY
    if detected.category in ("video", "audio"):
        if not ffmpeg.available():
            raise ApplicationError(
                "media_processing_unavailable",
                "Video and audio cannot be accepted right now: this server cannot strip their metadata.",
                status=503,
            )
        content, state = File(upload), Attachment.State.PROCESSING
    elif detected.category in ("image", "document"):
        clean = scrub.scrub(upload, detected)
        content, width, height = ContentFile(clean.data), clean.width, clean.height
        detected = clean.converted or detected
    else:
        content = File(upload)
    digest = hashlib.sha256()
    content.seek(0)
    for chunk in iter(lambda: content.read(1 << 16), b""):
        digest.update(chunk)
    content.seek(0)
    attachment = Attachment(
        uploader=uploader,
        category=detected.category,
        content_type=detected.content_type,
        size=content.size or size,
        sha256=digest.hexdigest(),
        name=filetypes.sanitize_filename(name or "file", detected.extension),
        width=width,
        height=height,
        state=state,
    )
    attachment.file.save(f"upload.{detected.extension}", content, save=False)
    try:
        with transaction.atomic():
            attachment.save()
            attachment_id = attachment.pk
            if detected.category == "image":
                from messaging.tasks import make_thumbnail

                transaction.on_commit(lambda: make_thumbnail.delay(attachment_id))
            elif state == Attachment.State.PROCESSING:
                from messaging.tasks import process_media

                transaction.on_commit(lambda: process_media.delay(attachment_id))
    except Exception:
        storage_delete([attachment.file.name])
        raise
    logger.info("attachment %s stored (%s, %s bytes)", attachment.pk, detected.content_type, attachment.size)
    if state == Attachment.State.PROCESSING:
        attachment.refresh_from_db()  # an eager worker (``make run``) has processed it already
    return attachment


def _attachment_updated(attachment: Attachment) -> None:
    """Tell the uploader's sockets that processing ended (on commit; REST is the fallback)."""
    frame = {
        "type": "attachment.updated",
        "data": {"attachment": selectors.attachment_state_data(attachment)},
    }
    publish_on_commit(user_group(attachment.uploader_id), {"type": "client.event", "frame": frame})


def attachment_process_media(*, attachment_id: int) -> None:
    """Celery: strip a video or audio upload with ffmpeg (``messaging/ffmpeg.py``), under its time
    and size limits. The clean copy replaces the upload (``ready``); when the tool fails the
    upload is deleted and the row says why (``rejected``). Idempotent: only ``processing`` rows
    are worked on, and only the first worker to finish changes the row."""
    import hashlib
    import tempfile
    from pathlib import Path

    from django.core.files import File

    from messaging import ffmpeg

    row = Attachment.objects.filter(pk=attachment_id, state=Attachment.State.PROCESSING).first()
    if row is None:
        return
    original = row.file.name
    with tempfile.TemporaryDirectory(prefix="hc-media-") as folder:
        source, target = Path(folder) / "source", Path(folder) / "target"
        with row.file.open("rb") as fh, source.open("wb") as out:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                out.write(chunk)
        try:
            result = ffmpeg.strip(source, target, row.content_type)
        except ffmpeg.MediaError as exc:
            with transaction.atomic():
                done = Attachment.objects.filter(pk=row.pk, state=Attachment.State.PROCESSING).update(
                    state=Attachment.State.REJECTED, rejection=exc.code, file=""
                )
                if done:  # the uploaded bytes go first, then the uploader hears of it
                    transaction.on_commit(lambda: storage_delete([original]))
                    row.state, row.rejection = Attachment.State.REJECTED, exc.code
                    _attachment_updated(row)
            logger.info("attachment %s rejected (%s)", attachment_id, exc.code)
            return
        digest = hashlib.sha256()
        with target.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        with target.open("rb") as fh:
            row.file.save(f"clean.{result.extension}", File(fh), save=False)
    clean = row.file.name
    stem = row.name.rsplit(".", 1)[0]
    with transaction.atomic():
        done = Attachment.objects.filter(pk=row.pk, state=Attachment.State.PROCESSING).update(
            state=Attachment.State.READY,
            file=clean,
            size=row.file.size,
            sha256=digest.hexdigest(),
            content_type=result.content_type,
            name=f"{stem}.{result.extension}",
            duration=result.duration,
            width=result.width,
            height=result.height,
        )
        if not done:  # deleted or finished meanwhile: this copy is not needed
            transaction.on_commit(lambda: storage_delete([clean]))
            return
        transaction.on_commit(lambda: storage_delete([original]))
        row.refresh_from_db()
        _attachment_updated(row)
    logger.info("attachment %s stripped (%s, %s bytes)", attachment_id, row.content_type, row.size)


def attachment_make_thumbnail(*, attachment_id: int) -> None:
    """Celery: a JPEG thumbnail for an image (idempotent)."""
    from django.core.files.base import ContentFile

    from messaging import filetypes

    attachment = Attachment.objects.filter(
        pk=attachment_id, category="image", deleted_at__isnull=True
    ).first()
    if attachment is None or attachment.thumbnail:
        return
    with attachment.file.open("rb") as fh:
        data = fh.read()
    try:
        thumb = filetypes.thumbnail(data)
    except Exception:
        logger.warning("no thumbnail for attachment %s", attachment_id, exc_info=True)
        return
    attachment.thumbnail.save("thumb.jpg", ContentFile(thumb), save=False)
    Attachment.objects.filter(pk=attachment_id, thumbnail="").update(thumbnail=attachment.thumbnail.name)


def attachments_requeue_processing(*, older_than_seconds: float | None = None) -> int:
    """Beat: queue the strip again for uploads still ``processing`` well after their time limit
    (the task was lost with its worker or broker). Processing twice is harmless."""
    from messaging.tasks import process_media

    if older_than_seconds is None:
        older_than_seconds = float(settings.MEDIA_PROCESSING_TIMEOUT_SECONDS) * 3 + 60
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Attachment.objects.filter(state=Attachment.State.PROCESSING, created_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    for attachment_id in ids:
        process_media.delay(attachment_id)
    return len(ids)


def attach_uploads(
    *, sender: User, message: Message, attachment_ids: list[int], encrypted: bool = False
) -> list[Attachment]:
    """Inside the send's transaction: the sender's own, unused, live uploads only; encrypted
    uploads in end-to-end encrypted conversations, and only there."""
    rows = list(
        Attachment.objects.select_for_update().filter(
            pk__in=attachment_ids, uploader=sender, deleted_at__isnull=True
        )
    )
    if len(rows) != len(attachment_ids):
        raise NotFound("No such attachment.", code="attachment_not_found")
    if (
        any(row.message_id is not None for row in rows)
        or Conversation.objects.filter(avatar_id__in=attachment_ids).exists()
    ):  # sent before, or a group's avatar
        raise ApplicationError("attachment_already_used", "An attachment can be sent once.", status=409)
    for row in rows:
        if row.state == Attachment.State.PROCESSING:
            raise ApplicationError(
                "attachment_processing",
                "The attachment is still being processed; send it once attachment.updated says ready.",
                status=409,
            )
        if row.state == Attachment.State.REJECTED:
            raise ApplicationError(
                "attachment_rejected", "The attachment was rejected and cannot be sent.", status=422
            )
    for row in rows:
        if (row.category == Attachment.Category.ENCRYPTED) != encrypted:
            if encrypted:
                raise ApplicationError(
                    "attachment_not_encrypted",
                    "An end-to-end encrypted conversation takes only encrypted uploads (encrypted=true).",
                )
            raise ApplicationError(
                "attachment_encrypted", "Encrypted uploads belong in end-to-end encrypted conversations."
            )
    now = timezone.now()
    Attachment.objects.filter(pk__in=attachment_ids).update(message=message, attached_at=now)
    by_id = {row.pk: row for row in rows}
    ordered = [by_id[i] for i in attachment_ids]
    for row in ordered:
        row.message_id, row.attached_at = message.pk, now
    return ordered


# What a tombstone keeps instead of the file's name and digest (both say what the file was).
TOMBSTONE_NAME = "deleted"
TOMBSTONE_SHA256 = "0" * 64


def attachments_delete_for_messages(message_ids: list[int], *, keep_rows: bool = True) -> int:
    """Deleted messages lose their files (rows kept as tombstones for the history: category,
    size and times, but not the name or the digest; or with ``keep_rows=False`` deleted too:
    retention keeps no file names). Files go after commit. Returns how many were deleted."""
    rows = list(Attachment.objects.filter(message_id__in=message_ids, deleted_at__isnull=True))
    if not rows:
        return 0
    if keep_rows:
        Attachment.objects.filter(pk__in=[r.pk for r in rows]).update(
            deleted_at=timezone.now(), name=TOMBSTONE_NAME, sha256=TOMBSTONE_SHA256
        )
    else:
        Attachment.objects.filter(pk__in=[r.pk for r in rows]).delete()
    names = [r.file.name for r in rows] + [r.thumbnail.name for r in rows if r.thumbnail]
    transaction.on_commit(lambda: storage_delete(names))
    return len(rows)


def attachments_purge_orphans(*, older_than_hours: int | None = None) -> int:
    """Uploads never attached expire after ``ATTACHMENT_ORPHAN_HOURS``."""
    hours = settings.ATTACHMENT_ORPHAN_HOURS if older_than_hours is None else older_than_hours
    cutoff = timezone.now() - timedelta(hours=hours)
    rows = list(
        Attachment.objects.filter(
            message__isnull=True, deleted_at__isnull=True, created_at__lt=cutoff
        ).exclude(
            pk__in=Conversation.objects.filter(avatar__isnull=False).values("avatar_id")  # group avatars
        )
    )
    names = [r.file.name for r in rows] + [r.thumbnail.name for r in rows if r.thumbnail]
    Attachment.objects.filter(pk__in=[r.pk for r in rows]).delete()
    storage_delete(names)
    return len(rows)
