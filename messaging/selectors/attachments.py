"""Attachments: access-checked reads, short-lived download links and their signed tokens."""

from __future__ import annotations

from typing import Any

from core.errors import ApplicationError, NotFound
from messaging.models import Attachment, Membership

from .members import visible_seq_range
from .wire import attachment_state_data


# --- Attachments ------------------------------------------------------------------------------
def attachment_get_for_download(*, user_id: int, attachment_id: int) -> Attachment:
    """The uploader before it is sent; afterwards only active members who may see its message."""
    attachment = (
        Attachment.objects.select_related("message", "message__conversation")
        .filter(pk=attachment_id, deleted_at__isnull=True)
        .first()
    )
    missing = NotFound("No such attachment.", code="attachment_not_found")
    if attachment is None:
        raise missing
    message = attachment.message
    if message is None:
        if attachment.uploader_id == user_id:
            return attachment
        # A group's avatar: its active members.
        if not Membership.objects.filter(
            conversation__avatar_id=attachment.pk, user_id=user_id, left_at__isnull=True
        ).exists():
            raise missing
        return attachment
    if message.deleted_at is not None:
        raise missing
    membership = Membership.objects.filter(
        conversation_id=message.conversation_id, user_id=user_id, left_at__isnull=True
    ).first()
    if membership is None:
        raise missing
    lower, _upper = visible_seq_range(membership)
    if message.seq <= lower:
        raise missing
    return attachment


def _content_disposition(attachment: Attachment) -> str:
    from urllib.parse import quote

    kind = "inline" if attachment.category in ("image", "video", "audio") else "attachment"
    return f"{kind}; filename*=UTF-8''{quote(attachment.name)}"


def attachment_link(*, user_id: int, attachment_id: int, build_url: Any) -> dict[str, Any]:
    """A short-lived download link: a presigned storage URL, or our own signed, access-checked
    stream (``build_url(path)`` makes it absolute). Uploads not ``ready`` get no link (``url``
    null): their stored bytes are the uploaded ones, never served."""
    from datetime import timedelta

    from django.conf import settings
    from django.core import signing
    from django.core.files.storage import default_storage
    from django.urls import reverse
    from django.utils import timezone

    attachment = attachment_get_for_download(user_id=user_id, attachment_id=attachment_id)
    if attachment.state != Attachment.State.READY:  # only its uploader sees it (never attached)
        return {**attachment_state_data(attachment), "url": None, "expires_at": None, "thumbnail_url": None}
    ttl = int(settings.ATTACHMENT_URL_TTL_SECONDS)
    expires_at = timezone.now() + timedelta(seconds=ttl)

    def url_for(variant: str, name: str) -> str:
        if hasattr(default_storage, "bucket_name"):
            parameters = {
                "ResponseContentType": "image/jpeg" if variant == "thumb" else attachment.content_type
            }
            if variant == "file":
                parameters["ResponseContentDisposition"] = _content_disposition(attachment)
            return str(default_storage.url(name, parameters=parameters, expire=ttl))  # type: ignore[call-arg]
        token = signing.dumps({"a": attachment.pk, "u": user_id, "v": variant}, salt=ATTACHMENT_SIGNING_SALT)
        return str(build_url(reverse("attachment-content", args=[attachment.pk]) + f"?token={token}"))

    data = {
        **attachment_state_data(attachment),
        "url": url_for("file", str(attachment.file.name)),
        "expires_at": expires_at.isoformat(),
    }
    data["thumbnail_url"] = url_for("thumb", str(attachment.thumbnail.name)) if attachment.thumbnail else None
    return data


ATTACHMENT_SIGNING_SALT = "healthchat.attachment.content"


def attachment_from_token(*, attachment_id: int, token: str) -> tuple[Attachment, str, int]:
    """Check a signed content link, then the holder's access again (it may have ended).
    Returns (attachment, variant, the holder's user id)."""
    from django.conf import settings
    from django.core import signing

    try:
        payload = signing.loads(
            token, salt=ATTACHMENT_SIGNING_SALT, max_age=int(settings.ATTACHMENT_URL_TTL_SECONDS)
        )
    except signing.SignatureExpired as exc:
        raise ApplicationError("link_expired", "This download link has expired.", status=403) from exc
    except signing.BadSignature as exc:
        raise ApplicationError("invalid_link", "This download link is not valid.", status=403) from exc
    if payload.get("a") != attachment_id or payload.get("v") not in ("file", "thumb"):
        raise ApplicationError("invalid_link", "This download link is not valid.", status=403)
    holder_id = int(payload["u"])
    attachment = attachment_get_for_download(user_id=holder_id, attachment_id=attachment_id)
    if attachment.state != Attachment.State.READY:  # links are only made for ready files
        raise ApplicationError("attachment_processing", "The attachment is not ready.", status=409)
    if payload["v"] == "thumb" and not attachment.thumbnail:
        raise NotFound("No thumbnail.", code="attachment_not_found")
    return attachment, str(payload["v"]), holder_id


def content_disposition(attachment: Attachment) -> str:
    return _content_disposition(attachment)
