"""What each document says, built from the record alone (no clock, no randomness).

``build(document)`` reads the record behind a ``Document`` and returns a ``PdfContent`` for
``documents.pdf.render``. The same record gives the same content, so the same bytes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

from django.conf import settings

from accounts.models import User
from payments.models import Consultation, LedgerEntry
from records import selectors as records
from records.models import Prescription

from . import selectors
from . import validators as v
from .models import Document
from .pdf import PdfContent, Section

DATE = "%Y-%m-%d"


class RecordMissing(Exception):
    """The record a document is made from is gone: the document is marked failed with the code
    ``document_record_missing`` (never an answer to a request: rendering is the worker's)."""

    code = "document_record_missing"


DATETIME = "%Y-%m-%d %H:%M UTC"


def when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime(DATETIME) if moment else "-"


def day(moment: dt.date | None) -> str:
    return moment.strftime(DATE) if moment else "-"


def person(user: User) -> str:
    """A participant's name as documents show it (an erased account: ``(erased account)``)."""
    return records.ERASED_NAME if user.is_deleted else user.display_name or f"User {user.pk}"


def doctor_name(user: User) -> str:
    return titled(person(user))


def titled(name: str) -> str:
    """A doctor's name with "Dr" (unless it has it, or is an erased account's)."""
    return name if name.lower().startswith(("dr", "(")) else f"Dr {name}"


def issuer_lines() -> list[str]:
    """The platform as the legal issuer: name, address lines, tax id."""
    lines = [str(settings.HEALTHCHAT_PLATFORM_LEGAL_NAME)]
    lines += [part.strip() for part in str(settings.HEALTHCHAT_PLATFORM_ADDRESS).split(";") if part.strip()]
    if settings.HEALTHCHAT_TAX_ID:
        lines.append(f"{settings.HEALTHCHAT_TAX_NAME} id: {settings.HEALTHCHAT_TAX_ID}")
    return lines


def consultation_label(consultation: Consultation) -> str:
    return f"{consultation.get_kind_display()} consultation #{consultation.pk}"


# --- Receipts -------------------------------------------------------------------------------
def receipt(document: Document) -> PdfContent:
    """A payment's or a refund's receipt: amounts, currency, tax, platform and doctor, reference."""
    entry = document.payment
    consultation = document.consultation
    if entry is None or consultation is None:
        raise RecordMissing("The payment is gone.")
    refund = entry.kind == LedgerEntry.Kind.REFUND
    amount = abs(entry.amount)
    rate = Decimal(str(settings.HEALTHCHAT_TAX_RATE))
    tax = v.tax_included(amount, rate)
    currency = entry.currency
    original = selectors.original_charge(consultation_id=consultation.pk)
    number = f"{'RF' if refund else 'R'}-{consultation.pk:06d}-{entry.pk:08d}"
    header = [
        ("Receipt number", number),
        ("Date", when(entry.created_at)),
        ("Payment reference", entry.stripe_id or consultation.payment_intent_id or f"ledger {entry.pk}"),
    ]
    if refund and original is not None:
        header.append(
            ("Refund of", f"R-{consultation.pk:06d}-{original.pk:08d} ({when(original.created_at)})")
        )
    tax_name = str(settings.HEALTHCHAT_TAX_NAME)
    money_rows = [
        ("Description", f"{consultation_label(consultation)} with {doctor_name(consultation.doctor)}"),
        ("Amount refunded" if refund else "Amount paid", v.format_money(amount, currency)),
    ]
    if rate > 0:
        money_rows += [
            (f"of which {tax_name} ({format(rate.normalize(), 'f')} %)", v.format_money(tax, currency)),
            (f"Net of {tax_name}", v.format_money(amount - tax, currency)),
        ]
    else:
        money_rows.append((tax_name, "none charged"))
    money_rows.append(("Currency", currency.upper()))
    return PdfContent(
        title="Refund receipt" if refund else "Payment receipt",
        dated=entry.created_at,
        issuer=issuer_lines(),
        header_rows=header,
        sections=[
            Section(
                "Paid by" if not refund else "Refunded to", rows=[("Patient", person(consultation.patient))]
            ),
            Section(
                "Provider",
                rows=[
                    ("Doctor", doctor_name(consultation.doctor)),
                    ("Platform", str(settings.HEALTHCHAT_PLATFORM_LEGAL_NAME)),
                ],
            ),
            Section("Refund" if refund else "Payment", rows=money_rows),
        ],
        footer=f"{settings.HEALTHCHAT_PLATFORM_LEGAL_NAME} - receipt {number}",
        subject=f"Receipt {number}",
    )


# --- Consultation summary -------------------------------------------------------------------
def consultation_summary(document: Document) -> PdfContent:
    """Dates, participants, the shared notes and prescriptions (other apps' parts), and the chat
    only when the patient asked for it."""
    consultation = document.consultation
    if consultation is None:
        raise RecordMissing("The consultation is gone.")
    times = [
        t
        for t in (
            consultation.created_at,
            consultation.accepted_at,
            consultation.started_at,
            consultation.completed_at,
            consultation.ended_at,
        )
        if t is not None
    ]
    profile = selectors.patient_profile(consultation.patient_id)
    doctor_profile = selectors.doctor_profile(consultation.doctor_id)
    sections = [
        Section(
            "Consultation",
            rows=[
                ("Consultation", consultation_label(consultation)),
                ("State", consultation.get_state_display()),
                ("Requested", when(consultation.created_at)),
                ("Accepted", when(consultation.accepted_at)),
                ("Started", when(consultation.started_at)),
                ("Completed", when(consultation.completed_at)),
                ("Ended", when(consultation.ended_at)),
            ],
        ),
        Section(
            "Participants",
            rows=[
                ("Patient", person(consultation.patient)),
                ("Date of birth", day(profile.date_of_birth) if profile else "-"),
                ("Doctor", doctor_name(consultation.doctor)),
                (
                    "Licence",
                    f"{doctor_profile.licence_number} ({doctor_profile.jurisdiction})"
                    if doctor_profile
                    else "-",
                ),
            ],
        ),
    ]
    notes, note_times = notes_sections(consultation)
    sections.extend(notes)
    times.extend(note_times)
    prescribed, prescription_times = prescriptions_section(consultation)
    sections.append(prescribed)
    times.extend(prescription_times)
    if document.include_chat:
        chat, last_message = chat_section(consultation)
        sections.append(chat)
        if last_message is not None:
            times.append(last_message)
    return PdfContent(
        title="Consultation summary",
        dated=max(times),
        issuer=issuer_lines(),
        header_rows=[("Consultation", f"#{consultation.pk}"), ("As of", when(max(times)))],
        sections=sections,
        footer=f"{settings.HEALTHCHAT_PLATFORM_LEGAL_NAME} - consultation #{consultation.pk} - confidential",
        subject=f"Consultation {consultation.pk} summary",
    )


NOTE_FIELDS = (
    ("reason", "Reason"),
    ("findings", "Findings"),
    ("assessment", "Assessment"),
    ("plan", "Plan"),
    ("follow_up", "Follow-up"),
)


def notes_sections(consultation: Consultation) -> tuple[list[Section], list[dt.datetime]]:
    """The signed notes the doctor shared with the patient, each with its amendments (never a
    draft or an unshared note); the times they show."""
    notes = records.shared_notes_for(consultation)
    if not notes:
        return [Section("Visit notes", paragraphs=["No visit notes were shared."])], []
    sections: list[Section] = []
    times: list[dt.datetime] = []
    for note in notes:
        rows = [("Signed", f"{when(note.signed_at)} by {titled(note.doctor_name)}")]
        rows += [(label, getattr(note, field)) for field, label in NOTE_FIELDS if getattr(note, field)]
        if note.codes:
            rows.append(
                (
                    "Codes",
                    "\n".join(
                        f"{c.system} {c.code}" + (f" - {c.display}" if c.display else "") for c in note.codes
                    ),
                )
            )
        sections.append(Section("Visit notes" if len(notes) == 1 else f"Visit note {note.id}", rows=rows))
        times += [note.signed_at, note.shared_at]
        for amendment in note.amendments:
            sections.append(
                Section(
                    f"Amendment of {when(amendment.created_at)} by {titled(amendment.author_name)}",
                    rows=[("Reason", amendment.reason), ("Correction", amendment.text)],
                )
            )
            times.append(amendment.created_at)
    return sections, times


def prescriptions_section(consultation: Consultation) -> tuple[Section, list[dt.datetime]]:
    """The consultation's prescriptions, issued and cancelled, oldest first."""
    prescriptions = records.prescriptions_for(consultation)
    if not prescriptions:
        return Section("Prescriptions", paragraphs=["No prescriptions."]), []
    table: list[Sequence[str]] = [("Number", "Medication", "Dose and frequency", "Quantity", "Status")]
    times: list[dt.datetime] = []
    for p in prescriptions:
        medication = " ".join(part for part in (p.medication_name, p.strength, p.form) if part)
        how = ", ".join(part for part in (p.dose, p.route, p.frequency, p.duration) if part)
        status = (
            f"cancelled {when(p.cancelled_at)}" if p.status == "cancelled" else f"issued {when(p.issued_at)}"
        )
        repeats = f" (+{p.repeats} repeats)" if p.repeats else ""
        table.append((p.number, medication, how, f"{p.quantity}{repeats}", status))
        times += [t for t in (p.issued_at, p.cancelled_at) if t is not None]
    return Section("Prescriptions", table=table), times


def chat_section(consultation: Consultation) -> tuple[Section, dt.datetime | None]:
    """The consultation's messages (from its request to its end), oldest first."""
    if consultation.conversation.e2ee:
        return (
            Section(
                "Chat",
                paragraphs=[
                    "This conversation is end-to-end encrypted: the server cannot read its messages."
                ],
            ),
            None,
        )
    messages, truncated = selectors.consultation_messages(consultation=consultation)
    rows: list[Sequence[str]] = [("Time", "From", "Message")]
    names = {
        consultation.patient_id: person(consultation.patient),
        consultation.doctor_id: doctor_name(consultation.doctor),
    }
    for message in messages:
        body = message.body or ""
        if message.deleted_at is not None:
            body = "(deleted)"
        elif message.attachment_names:
            body = "\n".join([body, *(f"[file: {name}]" for name in message.attachment_names)]).strip()
        if message.edited_at is not None and message.deleted_at is None:
            body += " (edited)"
        rows.append(
            (when(message.created_at), names.get(message.sender_id, f"User {message.sender_id}"), body)
        )
    paragraphs = ["Included at the patient's request."]
    if truncated:
        paragraphs.append(f"Only the first {v.SUMMARY_CHAT_MAX_MESSAGES} messages are included.")
    if len(rows) == 1:
        paragraphs.append("No messages.")
    latest = max((m.edited_at or m.created_at for m in messages), default=None)
    return Section("Chat", paragraphs=paragraphs, table=rows if len(rows) > 1 else ()), latest


# --- Prescriptions ---------------------------------------------------------------------------
def prescription(data: records.PrescriptionDocument) -> PdfContent:
    """The document a patient shows a pharmacist: prescriber, patient, what, and how to check it
    (the number, the verification code and a QR code of the public verification page)."""
    verify_url = f"{settings.HEALTHCHAT_PUBLIC_URL}{data.verify_path}"
    medication = [
        (label, value)
        for label, value in (
            ("Medication", data.medication_name),
            ("Strength", data.strength),
            ("Form", data.form),
            ("Dose", data.dose),
            ("Route", data.route),
            ("Frequency", data.frequency),
            ("Duration", data.duration),
            ("Quantity", str(data.quantity)),
            ("Repeats", str(data.repeats)),
            ("Instructions", data.instructions),
        )
        if value
    ]
    sections = [
        Section(
            "Prescriber",
            rows=[
                ("Doctor", titled(data.doctor_name)),
                ("Licence number", data.doctor_licence_number or "-"),
                ("Jurisdiction", data.jurisdiction or "-"),
                *([("Specialty", data.doctor_specialty)] if data.doctor_specialty else []),
            ],
        ),
        Section(
            "Patient", rows=[("Name", data.patient_name), ("Date of birth", day(data.patient_date_of_birth))]
        ),
        Section("Medication", rows=medication),
    ]
    if data.status == Prescription.Status.CANCELLED:
        sections.append(
            Section(
                "Status",
                paragraphs=[f"CANCELLED {when(data.cancelled_at)}: this prescription must not be dispensed."],
            )
        )
    return PdfContent(
        title="Prescription",
        dated=data.issued_at,
        issuer=issuer_lines(),
        header_rows=[
            ("Prescription number", data.number),
            ("Issued", when(data.issued_at)),
            ("Verification code", data.verification_code),
        ],
        sections=sections,
        qr=verify_url,
        qr_caption=f"Verify: {verify_url} (code {data.verification_code})",
        footer=f"{settings.HEALTHCHAT_PLATFORM_LEGAL_NAME} - prescription {data.number}",
        subject=f"Prescription {data.number}",
    )


# --- Dispatch -------------------------------------------------------------------------------
def build(document: Document) -> PdfContent:
    if document.kind == v.RECEIPT:
        return receipt(document)
    if document.kind == v.CONSULTATION_SUMMARY:
        return consultation_summary(document)
    found = (
        Prescription.objects.filter(pk=document.prescription_id).first()
        if document.prescription_id is not None
        else None
    )
    if found is None:
        raise RecordMissing("The prescription is gone.")
    return prescription(records.prescription_document_data(found))
