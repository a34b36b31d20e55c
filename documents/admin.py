"""Admin for staff: generated documents (read-only; audited) and regenerating them from the record.

Regenerating needs ``documents.regenerate_document`` (the action is hidden without it and the
service checks it again); each one is audited (``document.regenerate``). Staff do not download
the PDFs here: the files are the patients' (they hold the link through the API).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.actors import admin_permission
from accounts.models import User
from audit.admin import AuditedAdminMixin
from audit.client import from_request
from core.errors import ApplicationError

from . import services
from .models import Document

FIELDS: list[str | list[str] | tuple[str, ...] | tuple[()]] = [
    "kind",
    "status",
    "error",
    "patient",
    "doctor",
    "consultation",
    "payment",
    "prescription_id",
    "include_chat",
    "requested_by",
    "sha256",
    "size",
    "created_at",
    "requested_at",
    "generated_at",
]


@admin.register(Document)
class DocumentAdmin(AuditedAdminMixin, admin.ModelAdmin[Document]):
    list_display = ["id", "kind", "status", "patient", "doctor", "consultation", "generated_at"]
    list_filter = ["kind", "status", "include_chat"]
    search_fields = ["=id", "=consultation__id", "=prescription_id", "sha256"]
    list_select_related = ["patient", "doctor", "consultation"]
    ordering = ["-id"]
    fields = FIELDS
    readonly_fields = [str(name) for name in FIELDS]
    actions = ["regenerate"]

    has_regenerate_document_permission = admin_permission("documents.regenerate_document")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Regenerate from the record", permissions=["regenerate_document"])
    def regenerate(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        assert isinstance(request.user, User)
        done = 0
        client = from_request(request)
        for document_id in queryset.values_list("pk", flat=True):
            try:  # the service checks the permission again and writes the audit entry
                services.document_regenerate(document_id=document_id, actor=request.user, client=client)
            except ApplicationError as exc:
                messages.error(request, f"Document {document_id}: {exc.message}")
                continue
            done += 1
        if done:
            messages.success(request, f"{done} document(s) queued for rendering.")
