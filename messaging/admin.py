"""Staff view of conversations: metadata only (no message content), and the legal hold.

Placing or releasing a hold goes through ``services.conversation_set_legal_hold``, which writes
who and when to the audit log; every page shown here is audited too. Both need
``messaging.manage_legal_hold``: the actions are offered, and the checkbox editable, only to
its holders, and the service checks it again.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.actors import admin_permission, may
from accounts.models import User
from audit import client as audit_client
from audit.admin import AuditedAdminMixin
from core.errors import ApplicationError

from . import services
from .models import Conversation, Membership, Pin


class LegalHoldAdminMixin(AuditedAdminMixin):
    """``legal_hold`` is the only field staff change; the form's checkbox and the two actions
    all call the service (audited). Nothing else of the conversation is saved here."""

    actions = ["place_legal_hold", "release_legal_hold"]

    has_manage_legal_hold_permission = admin_permission("messaging.manage_legal_hold")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not may(request.user, "messaging.manage_legal_hold"):
            fields.append("legal_hold")
        return fields

    def _set_hold(self, request: HttpRequest, conversation_ids: list[int], hold: bool) -> None:
        assert isinstance(request.user, User)  # the admin site lets only signed-in staff in
        client = audit_client.from_request(request)
        for conversation_id in conversation_ids:
            services.conversation_set_legal_hold(
                conversation_id=conversation_id, hold=hold, actor=request.user, client=client
            )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change and "legal_hold" in form.changed_data:
            try:
                self._set_hold(request, [obj.pk], bool(obj.legal_hold))
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.ERROR)

    @admin.action(
        description="Place a legal hold (retention erases nothing of it)", permissions=["manage_legal_hold"]
    )
    def place_legal_hold(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._set_hold(request, ids, True)
        self.message_user(request, f"Legal hold placed on {len(ids)} conversation(s).", messages.SUCCESS)

    @admin.action(description="Release the legal hold", permissions=["manage_legal_hold"])
    def release_legal_hold(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._set_hold(request, ids, False)
        self.message_user(request, f"Legal hold released on {len(ids)} conversation(s).", messages.SUCCESS)


class MembershipInline(admin.TabularInline[Membership, Conversation]):
    model = Membership
    fk_name = "conversation"
    extra = 0
    fields = ["user", "role", "joined_at", "left_at"]
    readonly_fields = ["user", "role", "joined_at", "left_at"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(LegalHoldAdminMixin, admin.ModelAdmin[Conversation]):
    list_display = ["id", "kind", "created_at", "last_message_at", "last_seq", "e2ee", "legal_hold"]
    list_filter = ["kind", "legal_hold", "e2ee"]
    search_fields = ["=id"]
    fields = [
        "kind",
        "created_by",
        "created_at",
        "last_message_at",
        "last_seq",
        "last_event",
        "e2ee",
        "legal_hold",
    ]
    readonly_fields = [
        "kind",
        "created_by",
        "created_at",
        "last_message_at",
        "last_seq",
        "last_event",
        "e2ee",
    ]
    list_select_related = ["created_by"]
    inlines = [MembershipInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False


@admin.register(Pin)
class PinAdmin(AuditedAdminMixin, admin.ModelAdmin[Pin]):
    """Pinned messages, read-only: which message of which conversation, who pinned it, when
    (metadata only, like the conversations here; reactions and mentions are content and have no
    staff page). Pins change through the members' own frames and endpoints only."""

    list_display = ["id", "conversation", "message", "pinned_by", "created_at"]
    search_fields = ["=conversation__id"]
    fields = ["conversation", "message", "pinned_by", "created_at"]
    readonly_fields = ["conversation", "message", "pinned_by", "created_at"]
    list_select_related = ["conversation", "message"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Pin | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Pin | None = None) -> bool:
        return False
