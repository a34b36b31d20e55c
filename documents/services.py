"""Document actions: ask for a document, render it (the Celery worker), receipts made when money
moves, regeneration by staff, erasure.

Asking marks the document ``pending`` and queues ``documents.tasks.document_render`` after
commit. Rendering reads the record, lays the PDF out (``documents.pdf``), stores it under a name
made of the document id and the content's SHA-256 (the same content: the same file) and marks it
``ready``; a failure marks it ``failed`` with a code. Rendering the same record again gives the
same bytes.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.actors import Actor, acting_user, require_permission
from accounts.models import User
from audit import actions as audited
from audit import services as audit
from audit.client import COMMAND, SYSTEM, Client
from core.errors import ApplicationError
from payments.models import Consultation, LedgerEntry
from records import selectors as records

from . import content, pdf, selectors
from . import validators as v
from .models import Document

logger = logging.getLogger("healthchat.documents")


def _queue_render(document_id: int) -> None:
    from .tasks import document_render as task

    transaction.on_commit(lambda: task.delay(document_id))


def _ensure(
    *,
    kind: str,
    patient_id: int,
    doctor_id: int,
    consultation: Consultation | None = None,
    payment: LedgerEntry | None = None,
    prescription_id: int | None = None,
    include_chat: bool = False,
    requested_by: User | None,
) -> Document:
    """The record's document, created if new, locked, and queued unless already queued."""
    key = v.document_key(
        kind=kind,
        consultation_id=consultation.pk if consultation else None,
        payment_id=payment.pk if payment else None,
        prescription_id=prescription_id,
        include_chat=include_chat,
    )
    now = timezone.now()
    document, created = Document.objects.get_or_create(
        key=key,
        defaults={
            "kind": kind,
            "patient_id": patient_id,
            "doctor_id": doctor_id,
            "consultation": consultation,
            "payment": payment,
            "prescription_id": prescription_id,
            "include_chat": include_chat,
            "requested_by": requested_by,
            "requested_at": now,
        },
    )
    if not created:
        document = Document.objects.select_for_update().get(pk=document.pk)
        if document.status == v.PENDING:
            return document  # already queued: one rendering will do
        document.status = v.PENDING
        document.error = ""
        document.requested_by = requested_by
        document.requested_at = now
        document.save(update_fields=["status", "error", "requested_by", "requested_at"])
    _queue_render(document.pk)
    return document


def document_request(
    *,
    user: User,
    kind: str,
    consultation_id: int | None = None,
    payment_id: int | None = None,
    prescription_id: int | None = None,
    include_chat: bool = False,
) -> Document:
    """Ask for (or refresh) the document of a record the caller may see. Rendering is queued;
    the answer is the document, ``pending`` until the worker is done."""
    v.validate_kind(kind)
    if include_chat and kind != v.CONSULTATION_SUMMARY:
        raise ApplicationError(
            "invalid", "include_chat is for consultation summaries.", fields={"include_chat": ["invalid"]}
        )
    with transaction.atomic():
        if kind == v.PRESCRIPTION:
            if prescription_id is None:
                raise ApplicationError(
                    "invalid", "prescription_id is required.", fields={"prescription_id": ["required"]}
                )
            patient_id, doctor_id, consultation = prescription_parties(
                user=user, prescription_id=prescription_id
            )
            return _ensure(
                kind=kind,
                patient_id=patient_id,
                doctor_id=doctor_id,
                consultation=consultation,
                prescription_id=prescription_id,
                requested_by=user,
            )
        if consultation_id is None:
            raise ApplicationError(
                "invalid", "consultation_id is required.", fields={"consultation_id": ["required"]}
            )
        consultation = selectors.consultation_for(user=user, consultation_id=consultation_id)
        if kind == v.RECEIPT:
            entry = selectors.receipt_entry(consultation=consultation, payment_id=payment_id)
            return _ensure(
                kind=kind,
                patient_id=consultation.patient_id,
                doctor_id=consultation.doctor_id,
                consultation=consultation,
                payment=entry,
                requested_by=user,
            )
        if include_chat and user.pk != consultation.patient_id:
            raise ApplicationError(
                "chat_patient_only", "Only the patient can include the chat in a summary.", status=403
            )
        return _ensure(
            kind=kind,
            patient_id=consultation.patient_id,
            doctor_id=consultation.doctor_id,
            consultation=consultation,
            include_chat=include_chat,
            requested_by=user,
        )


def prescription_parties(*, user: User, prescription_id: int) -> tuple[int, int, Consultation]:
    """(patient id, doctor id, consultation) of a prescription the caller may see."""
    found = records.prescription_get(user=user, prescription_id=prescription_id)
    return found.patient_id, found.doctor_id, found.consultation


def receipt_for_entry(*, entry: LedgerEntry) -> Document | None:
    """A receipt for a payment or refund just recorded (called in the transaction that recorded
    it; rendered after commit). Other ledger entries get none."""
    if entry.kind not in v.RECEIPT_ENTRY_KINDS:
        return None
    consultation = entry.consultation
    try:
        # A savepoint: whatever goes wrong here never undoes the money it is a receipt for
        # (the patient can ask for the receipt again).
        with transaction.atomic():
            return _ensure(
                kind=v.RECEIPT,
                patient_id=consultation.patient_id,
                doctor_id=consultation.doctor_id,
                consultation=consultation,
                payment=entry,
                requested_by=None,
            )
    except DatabaseError as exc:
        logger.warning("receipt of ledger entry %s not queued (%s)", entry.pk, type(exc).__name__)
        return None


def render_bytes(document: Document) -> bytes:
    """The PDF of the document's record as it is now (no side effects)."""
    return pdf.render(content.build(document))


def storage_name(document: Document, digest: str) -> str:
    """No user text in storage keys: the patient id, the document id and the content's digest."""
    return f"documents/{document.patient_id}/{document.pk}-{digest[:24]}.pdf"


def document_render(*, document_id: int) -> Document | None:
    """Render and store a document (the worker; idempotent). None when it no longer exists."""
    document = (
        Document.objects.select_related(
            "payment", "consultation__patient", "consultation__doctor", "consultation__conversation"
        )
        .filter(pk=document_id)
        .first()
    )
    if document is None:
        return None
    try:
        data = render_bytes(document)
    except content.RecordMissing as exc:
        return _failed(document_id, exc.code)
    except Exception as exc:  # a bug or a broken record: never a traceback to the client
        # The type only: a layout error's text can quote the record (names, notes, messages).
        logger.error("document %s could not be rendered (%s)", document_id, type(exc).__name__)
        return _failed(document_id, "render_failed")
    digest = hashlib.sha256(data).hexdigest()
    name = storage_name(document, digest)
    with transaction.atomic():
        locked = Document.objects.select_for_update().filter(pk=document_id).first()
        if locked is None:
            return None
        # Under the row lock: one rendering at a time stores (the same content: the same file).
        stored = name if default_storage.exists(name) else default_storage.save(name, ContentFile(data))
        old = locked.file.name if locked.file.name != stored else ""
        locked.file.name = stored
        locked.sha256 = digest
        locked.size = len(data)
        locked.status = v.READY
        locked.error = ""
        locked.generated_at = timezone.now()
        locked.save(update_fields=["file", "sha256", "size", "status", "error", "generated_at"])
        if old:
            transaction.on_commit(lambda: _delete_file(old))
    logger.info("document %s (%s) rendered: %s bytes", document_id, locked.kind, len(data))
    return locked


def _failed(document_id: int, code: str) -> Document | None:
    with transaction.atomic():
        locked = Document.objects.select_for_update().filter(pk=document_id).first()
        if locked is None:
            return None
        locked.status = v.FAILED
        locked.error = code[:40]
        locked.save(update_fields=["status", "error"])
    logger.warning("document %s failed: %s", document_id, code)
    return locked


def _delete_file(name: str) -> None:
    try:
        default_storage.delete(name)
    except OSError:
        logger.warning("could not delete a replaced document file")


def document_regenerate(*, document_id: int, actor: Actor, client: Client | None = None) -> Document:
    """Staff: render a document again from its record (needs ``documents.regenerate_document``),
    audited (``document.regenerate``) in the same transaction, whoever calls (admin, command)."""
    require_permission(actor, "documents.regenerate_document")
    with transaction.atomic():
        document = Document.objects.select_for_update().filter(pk=document_id).first()
        if document is None:
            raise ApplicationError("document_not_found", "No such document.", status=404)
        if document.status != v.PENDING:
            document.status = v.PENDING
            document.error = ""
            document.requested_at = timezone.now()
            document.save(update_fields=["status", "error", "requested_at"])
            _queue_render(document.pk)
        audit.record(
            audited.DOCUMENT_REGENERATE,
            actor=acting_user(actor),
            object_type="document",
            object_id=document.pk,
            client=client or (COMMAND if acting_user(actor) is None else SYSTEM),
        )
        return document


# --- Erasure ------------------------------------------------------------------------------------
def erase_user_documents(user: User) -> None:
    """Account deletion. The patient's receipts and summaries go, rows and files (they can be
    made again from the pseudonymised payments records). Kept, because the law keeps what they
    are the document of: prescriptions; and the documents of other patients where the user was
    the doctor. Those are rendered again from the record once the erasure has committed, so no
    stored file keeps the erased name (it reads "(erased account)"). Files are deleted after
    commit: a failed erasure keeps them."""
    doomed = Document.objects.filter(patient=user).exclude(kind=v.PRESCRIPTION)
    names = [name for name in doomed.values_list("file", flat=True) if name]
    doomed.delete()
    kept = Document.objects.filter(Q(patient=user) | Q(doctor=user))
    for document_id in kept.values_list("pk", flat=True):
        _queue_render(document_id)
    kept.exclude(status=v.PENDING).update(status=v.PENDING, error="")

    def delete_files() -> None:
        for name in names:
            _delete_file(name)

    transaction.on_commit(delete_files)


def export_user_documents(user: User) -> list[dict[str, Any]]:
    return selectors.export_documents(user=user)
