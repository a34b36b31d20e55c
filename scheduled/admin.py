"""Staff view of scheduled messages: metadata only (never the text), read-only."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import ScheduledMessage


@admin.register(ScheduledMessage)
class ScheduledMessageAdmin(admin.ModelAdmin[ScheduledMessage]):
    list_display = ["id", "author", "conversation", "send_at", "state", "failure_code", "finished_at"]
    list_filter = ["state"]
    readonly_fields = (
        "author",
        "conversation",
        "client_id",
        "send_at",
        "state",
        "message",
        "failure_code",
        "finished_at",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ScheduledMessage | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ScheduledMessage | None = None) -> bool:
        return False
