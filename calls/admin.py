"""Staff view of calls: metadata only (who, when, how long, how it ended). Read-only."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from audit.admin import AuditedAdminMixin

from .models import Call, CallParticipant


class CallParticipantInline(admin.TabularInline[CallParticipant, Call]):
    model = CallParticipant
    extra = 0
    can_delete = False
    fields = ("user", "role", "state", "device", "rang_at", "joined_at", "left_at", "disconnected_at")
    readonly_fields = fields
    raw_id_fields = ["user", "device"]

    def has_add_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False


@admin.register(Call)
class CallAdmin(AuditedAdminMixin, admin.ModelAdmin[Call]):
    list_display = ["id", "conversation", "caller", "media", "state", "end_reason", "created_at", "duration"]
    list_filter = ["state", "media", "end_reason"]
    search_fields = ["caller__phone_number", "=conversation__id"]
    list_select_related = ["caller", "conversation"]
    raw_id_fields = ["conversation", "caller", "ended_by"]
    readonly_fields = [f.name for f in Call._meta.fields]
    date_hierarchy = "created_at"
    inlines = [CallParticipantInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False
