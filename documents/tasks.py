"""Celery tasks of documents: they take ids, are idempotent, and call a service."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="documents.tasks.document_render")
def document_render(document_id: int) -> str | None:
    """Render and store one document; its status afterwards (None: it no longer exists)."""
    document = services.document_render(document_id=document_id)
    return None if document is None else document.status
