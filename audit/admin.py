"""The audit log in the admin (read-only), and the mixin that audits admin views of health data."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from . import actions, services
from .models import AuditEntry


class AuditedAdminMixin(admin.ModelAdmin[Any]):
    """Records ``admin.view`` for each list or change page shown and ``admin.change`` for each
    change form saved (who, which model, which row; never field values). Put it first in the
    bases of a ModelAdmin of health data."""

    def _audit_type(self) -> str:
        concrete = self.model._meta.concrete_model or self.model
        return str(concrete._meta.label_lower)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        response = super().changelist_view(request, extra_context)
        if request.method == "GET" and response.status_code == 200:
            services.record(actions.ADMIN_VIEW, request=request, object_type=self._audit_type())
        return response

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        action = None
        if request.method == "GET" and response.status_code == 200:
            action = actions.ADMIN_VIEW
        elif request.method == "POST" and response.status_code == 302:
            action = actions.ADMIN_CHANGE
        if action is not None:
            services.record(action, request=request, object_type=self._audit_type(), object_id=object_id)
        return response


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin[AuditEntry]):
    """Read-only: nobody adds, changes or deletes audit entries (the database refuses too)."""

    list_display = [
        "at",
        "action",
        "outcome",
        "code",
        "actor_id",
        "actor_staff",
        "object_type",
        "object_id",
        "channel",
        "ip",
    ]
    list_filter = ["action", "outcome", "channel", "actor_staff", ("at", admin.DateFieldListFilter)]
    search_fields = ["=actor_id", "=object_id"]
    date_hierarchy = "at"
    ordering = ["-at", "-id"]
    show_full_result_count = False
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> Any:
        # Ids only: a search for text would compare a number column with text.
        if search_term and not search_term.strip().isdigit():
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)
