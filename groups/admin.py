"""Staff view of groups and their members (metadata only: no message content here). Every page
is audited; the legal hold is set through messaging's service (audited)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from messaging.admin import LegalHoldAdminMixin
from messaging.models import Conversation, Membership

from .models import GroupConversation


class MemberInline(admin.TabularInline[Membership, GroupConversation]):
    model = Membership
    fk_name = "conversation"
    extra = 0
    fields = ["user", "role", "joined_at", "added_by", "left_at", "removed_by"]
    readonly_fields = ["user", "role", "joined_at", "added_by", "left_at", "removed_by"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: GroupConversation | None = None) -> bool:
        return False


@admin.register(GroupConversation)
class GroupAdmin(LegalHoldAdminMixin, admin.ModelAdmin[GroupConversation]):
    list_display = ["id", "name", "created_by", "created_at", "last_seq", "e2ee", "legal_hold"]
    search_fields = ["name"]
    readonly_fields = ["name", "description", "created_by", "created_at", "last_seq", "last_event", "e2ee"]
    fields = [
        "name",
        "description",
        "created_by",
        "created_at",
        "last_seq",
        "last_event",
        "e2ee",
        "legal_hold",
    ]
    inlines = [MemberInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[GroupConversation]:
        return super().get_queryset(request).filter(kind=Conversation.Kind.GROUP).select_related("created_by")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GroupConversation | None = None) -> bool:
        return False
