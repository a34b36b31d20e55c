"""Staff screens of the clinical record: read-only for everyone, superusers included (a signed
note, an amendment or a prescription is never changed here, and drafts are the doctor's).
Seeing them needs the model's view permission (``records.view_visitnote``,
``records.view_prescription``...); every list and page shown is in the audit log
(``admin.view``, ``AuditedAdminMixin``). The list pages show no clinical text."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.admin import AuditedAdminMixin

from .models import NoteAmendment, Prescription, VisitNote


class ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AmendmentInline(ReadOnly, admin.TabularInline[NoteAmendment, VisitNote]):
    model = NoteAmendment
    extra = 0
    fields = ("author", "created_at", "reason", "text")
    readonly_fields = ("author", "created_at", "reason", "text")


@admin.register(VisitNote)
class VisitNoteAdmin(AuditedAdminMixin, ReadOnly, admin.ModelAdmin[VisitNote]):
    list_display = ["id", "consultation", "author", "state", "signed_at", "shared_at"]
    list_filter = ["state"]
    search_fields = ["=id", "=consultation__id", "=author__id"]
    list_select_related = ["consultation", "author"]
    inlines = [AmendmentInline]


@admin.register(NoteAmendment)
class NoteAmendmentAdmin(AuditedAdminMixin, ReadOnly, admin.ModelAdmin[NoteAmendment]):
    list_display = ["id", "note", "author", "created_at"]
    search_fields = ["=note__id"]
    list_select_related = ["note", "author"]


@admin.register(Prescription)
class PrescriptionAdmin(AuditedAdminMixin, ReadOnly, admin.ModelAdmin[Prescription]):
    list_display = ["number", "consultation", "doctor", "patient", "status", "issued_at", "cancelled_at"]
    list_filter = ["status", "jurisdiction"]
    search_fields = ["=number", "=consultation__id"]
    list_select_related = ["consultation", "doctor", "patient"]
    exclude = ["verification_code"]
