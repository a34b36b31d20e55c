"""Celery tasks for messaging: take ids, idempotent, call a service."""

from celery import shared_task
from django.conf import settings

from . import services


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def make_thumbnail(attachment_id: int) -> None:
    services.attachment_make_thumbnail(attachment_id=attachment_id)


@shared_task(
    acks_late=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=int(settings.MEDIA_PROCESSING_TIMEOUT_SECONDS * 2 + 60),  # two runs: strip, probe
)
def process_media(attachment_id: int) -> None:
    """Strip a video or audio upload's metadata with ffmpeg (time-limited per run)."""
    services.attachment_process_media(attachment_id=attachment_id)


@shared_task(acks_late=True)
def requeue_processing_media() -> int:
    return services.attachments_requeue_processing()


@shared_task(acks_late=True)
def purge_orphan_attachments() -> int:
    return services.attachments_purge_orphans()


@shared_task(acks_late=True)
def retention_purge() -> dict[str, int]:
    counts = services.retention_purge()
    return {"messages": counts.messages, "attachments": counts.attachments}
