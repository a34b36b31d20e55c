"""Staff view of the push outbox (ids, states and error codes only: no content) and preferences."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import PushDelivery, PushPreference


@admin.register(PushDelivery)
class PushDeliveryAdmin(admin.ModelAdmin[PushDelivery]):
    list_display = [
        "id",
        "kind",
        "device",
        "message",
        "ref",
        "state",
        "reason",
        "attempts",
        "created_at",
        "sent_at",
    ]
    list_filter = ["kind", "state"]
    search_fields = ["device__user__phone_number", "ref"]
    list_select_related = ["device"]
    raw_id_fields = ["device", "message", "conversation"]
    readonly_fields = [f.name for f in PushDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: PushDelivery | None = None) -> bool:
        return False


@admin.register(PushPreference)
class PushPreferenceAdmin(admin.ModelAdmin[PushPreference]):
    list_display = ["user", "previews", "updated_at"]
    raw_id_fields = ["user"]
