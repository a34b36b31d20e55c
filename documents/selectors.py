"""Reads for documents, each scoped to the caller; the records documents are built from."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from accounts.models import DoctorProfile, PatientProfile, User
from core.errors import ApplicationError, NotFound
from messaging.models import Attachment, Message
from payments.models import Consultation, LedgerEntry

from . import validators as v
from .models import Document

SIGNING_SALT = "healthchat.document.content"


# --- Who may see a document -------------------------------------------------------------------
def visible_to(user: User) -> Q:
    """The patient sees their documents; the doctor of the record sees them too, except a
    summary that carries the chat (the patient's request, the patient's copy)."""
    return Q(patient_id=user.pk) | (Q(doctor_id=user.pk) & Q(include_chat=False))


def document_list(
    *, user: User, kind: str | None = None, consultation_id: int | None = None
) -> QuerySet[Document]:
    """The caller's documents, newest first, with the payment a receipt is for."""
    qs = Document.objects.filter(visible_to(user)).select_related("payment").order_by("-id")
    if kind:
        qs = qs.filter(kind=kind)
    if consultation_id is not None:
        qs = qs.filter(consultation_id=consultation_id)
    return qs


def document_get(*, user_id: int, document_id: int) -> Document:
    """One document the caller may see; anyone else cannot tell it exists."""
    document = (
        Document.objects.select_related("payment")
        .filter(Q(patient_id=user_id) | (Q(doctor_id=user_id) & Q(include_chat=False)), pk=document_id)
        .first()
    )
    if document is None:
        raise NotFound("No such document.", code="document_not_found")
    return document


def document_data(document: Document) -> dict[str, Any]:
    """A document as its owners see it (``url`` is added by ``document_link``)."""
    payment = document.payment
    return {
        "id": document.pk,
        "kind": document.kind,
        "status": document.status,
        "error": document.error or None,
        "consultation_id": document.consultation_id,
        "payment": None
        if payment is None
        else {
            "id": payment.pk,
            "kind": payment.kind,
            "amount": abs(payment.amount),
            "currency": payment.currency,
            "created_at": payment.created_at.isoformat(),
        },
        "prescription_id": document.prescription_id,
        "include_chat": document.include_chat,
        "content_type": "application/pdf",
        "size": document.size,
        "sha256": document.sha256 or None,
        "created_at": document.created_at.isoformat(),
        "requested_at": document.requested_at.isoformat(),
        "generated_at": document.generated_at.isoformat() if document.generated_at else None,
    }


def filename(document: Document) -> str:
    subject = document.prescription_id if document.kind == v.PRESCRIPTION else document.consultation_id
    suffix = f"-{document.payment_id}" if document.kind == v.RECEIPT else ""
    chat = "-with-chat" if document.include_chat else ""
    return f"{document.kind.replace('_', '-')}-{subject}{suffix}{chat}.pdf"


# --- Signed links -----------------------------------------------------------------------------
def document_link(*, user_id: int, document_id: int, build_url: Any) -> dict[str, Any]:
    """The document with a short-lived download link once it is ready (``url`` null before):
    a presigned storage URL, or our own signed, access-checked stream."""
    document = document_get(user_id=user_id, document_id=document_id)
    data = {**document_data(document), "url": None, "expires_at": None}
    if document.status != v.READY:
        return data
    from django.core.files.storage import default_storage

    ttl = int(settings.DOCUMENT_URL_TTL_SECONDS)
    if hasattr(default_storage, "bucket_name"):
        url = str(
            default_storage.url(  # type: ignore[call-arg]
                document.file.name,
                parameters={
                    "ResponseContentType": "application/pdf",
                    "ResponseContentDisposition": f'attachment; filename="{filename(document)}"',
                },
                expire=ttl,
            )
        )
    else:
        token = signing.dumps({"d": document.pk, "u": user_id, "h": document.sha256[:16]}, salt=SIGNING_SALT)
        url = str(build_url(reverse("document-content", args=[document.pk]) + f"?token={token}"))
    data["url"] = url
    data["expires_at"] = (timezone.now() + dt.timedelta(seconds=ttl)).isoformat()
    return data


def document_from_token(*, document_id: int, token: str) -> tuple[Document, int]:
    """Check a signed content link, then the holder's access again (it may have ended).
    Returns (document, the holder's user id)."""
    try:
        payload = signing.loads(token, salt=SIGNING_SALT, max_age=int(settings.DOCUMENT_URL_TTL_SECONDS))
    except signing.SignatureExpired as exc:
        raise ApplicationError("link_expired", "This download link has expired.", status=403) from exc
    except signing.BadSignature as exc:
        raise ApplicationError("invalid_link", "This download link is not valid.", status=403) from exc
    if payload.get("d") != document_id or not isinstance(payload.get("u"), int):
        raise ApplicationError("invalid_link", "This download link is not valid.", status=403)
    holder_id = int(payload["u"])
    document = document_get(user_id=holder_id, document_id=document_id)
    if document.status != v.READY:
        raise ApplicationError("document_not_ready", "The document is not ready yet.", status=409)
    if document.sha256[:16] != payload.get("h"):
        # Regenerated since the link was made: ask for a new link.
        raise ApplicationError("link_expired", "This download link has expired.", status=403)
    return document, holder_id


# --- The records documents are built from -----------------------------------------------------
def consultation_for(*, user: User, consultation_id: int) -> Consultation:
    """A consultation of the caller (patient or doctor), with both participants."""
    consultation = (
        Consultation.objects.select_related("patient", "doctor", "conversation")
        .filter(Q(patient=user) | Q(doctor=user), pk=consultation_id)
        .first()
    )
    if consultation is None:
        raise NotFound("No such consultation.", code="consultation_not_found")
    return consultation


def receipt_entry(*, consultation: Consultation, payment_id: int | None) -> LedgerEntry:
    """The payment (``payment_id`` None: the consultation's charge) or refund of a consultation."""
    entries = LedgerEntry.objects.filter(consultation=consultation, kind__in=v.RECEIPT_ENTRY_KINDS)
    if payment_id is not None:
        entry = entries.filter(pk=payment_id).first()
        if entry is None:
            raise NotFound("No such payment.", code="payment_not_found")
        return entry
    charge = entries.filter(kind=LedgerEntry.Kind.CHARGE).order_by("id").first()
    if charge is None:
        raise ApplicationError("not_paid", "Nothing was paid for this consultation yet.", status=409)
    return charge


def original_charge(*, consultation_id: int) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(consultation_id=consultation_id, kind="charge").order_by("id").first()


def patient_profile(user_id: int) -> PatientProfile | None:
    return PatientProfile.objects.filter(user_id=user_id).first()


def doctor_profile(user_id: int) -> DoctorProfile | None:
    return DoctorProfile.objects.filter(user_id=user_id).first()


@dataclass(frozen=True)
class ChatLine:
    sender_id: int
    body: str
    created_at: dt.datetime
    edited_at: dt.datetime | None
    deleted_at: dt.datetime | None
    attachment_names: tuple[str, ...]


def consultation_messages(*, consultation: Consultation) -> tuple[list[ChatLine], bool]:
    """The text messages of the consultation's conversation from its request to its end (the
    end of the follow-up window, or when it ended), by seq; whether there were more."""
    end = consultation.closes_at or consultation.ended_at
    qs = Message.objects.filter(
        conversation_id=consultation.conversation_id,
        kind=Message.Kind.TEXT,
        created_at__gte=consultation.created_at,
    )
    if end is not None:
        qs = qs.filter(created_at__lte=end)
    rows = list(
        qs.order_by("seq").values("id", "sender_id", "body", "created_at", "edited_at", "deleted_at")[
            : v.SUMMARY_CHAT_MAX_MESSAGES + 1
        ]
    )
    truncated = len(rows) > v.SUMMARY_CHAT_MAX_MESSAGES
    rows = rows[: v.SUMMARY_CHAT_MAX_MESSAGES]
    names: dict[int, list[str]] = {}
    for message_id, name in (
        Attachment.objects.filter(message_id__in=[r["id"] for r in rows])
        .order_by("id")
        .values_list("message_id", "name")
    ):
        names.setdefault(message_id, []).append(name)
    lines = [
        ChatLine(
            sender_id=r["sender_id"],
            body=r["body"],
            created_at=r["created_at"],
            edited_at=r["edited_at"],
            deleted_at=r["deleted_at"],
            attachment_names=tuple(names.get(r["id"], ())),
        )
        for r in rows
    ]
    return lines, truncated


# --- Export -----------------------------------------------------------------------------------
def export_documents(*, user: User) -> list[dict[str, Any]]:
    """The documents the user may see (not their bytes: each can be downloaded through the API)."""
    return [document_data(d) for d in document_list(user=user)]
