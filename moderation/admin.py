"""The moderation queue (staff): reports, filtered by status, reason, target and assignee;
taken and resolved with actions. Each action calls its service (``moderation.services``), which
checks the permission again and writes the audit entry: assigning and resolving need
``moderation.moderate_reports`` (warn, mute, dismiss), deactivating
``accounts.deactivate_account``. Reading the queue needs ``moderation.view_report``; every page
shown is audited (``admin.view``: reported texts are health data). Nothing is added, changed
or deleted here except through the actions."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from accounts.actors import admin_permission
from accounts.models import User
from audit import client as audit_client
from audit.admin import AuditedAdminMixin
from core.errors import ApplicationError
from messaging.models import Message, MessageVersion

from . import services
from .models import ModerationNotice, Report


class ReportAdmin(AuditedAdminMixin, admin.ModelAdmin[Report]):
    list_display = ["id", "created_at", "status", "reason", "target", "reported_user", "assignee", "action"]
    list_filter = [
        "status",
        "reason",
        "target",
        ("assignee", admin.RelatedOnlyFieldListFilter),
        "action",
        "unverified",
    ]
    ordering = ["status", "created_at", "id"]
    list_select_related = ["reported_user", "assignee"]
    search_fields = ["=id", "=reported_user__id", "=message__id"]
    actions = ["assign_to_me", "resolve_warn", "resolve_mute", "resolve_deactivate", "resolve_dismiss"]
    readonly_fields = (
        "status",
        "assignee",
        "target",
        "reason",
        "reporter",
        "reported_user",
        "conversation",
        "message",
        "reported_text",
        "text",
        "shared_text",
        "unverified",
        "action",
        "resolution_note",
        "resolved_by",
        "resolved_at",
        "created_at",
        "updated_at",
    )
    fields = readonly_fields

    has_moderate_reports_permission = admin_permission("moderation.moderate_reports")
    has_deactivate_account_permission = admin_permission("accounts.deactivate_account")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Report | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Report | None = None) -> bool:
        return False

    @admin.display(description="Reported message (current text, then the kept versions)")
    def reported_text(self, report: Report) -> str:
        if report.message_id is None:
            return "—"
        message = Message.objects.filter(pk=report.message_id).first()
        if message is None:
            return "—"
        current = (
            "(deleted)" if message.deleted_at else (message.body or "(encrypted: not readable by the server)")
        )
        versions = MessageVersion.objects.filter(message_id=message.pk).order_by("number")
        return format_html(
            "<p><strong>now:</strong> {}</p><ol>{}</ol>",
            current,
            format_html_join(
                "",
                "<li>{} ({}, replaced {}): {}</li>",
                ((v.number, v.reason, v.edited_at.isoformat(), v.body) for v in versions),
            ),
        )

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Report],
        service: Callable[..., Report],
        done: str,
    ) -> None:
        assert isinstance(request.user, User)  # the admin site lets only signed-in staff in
        client = audit_client.from_request(request)
        count = 0
        for report_id in queryset.values_list("pk", flat=True):
            try:
                service(report_id=report_id, actor=request.user, client=client)
                count += 1
            except ApplicationError as exc:
                self.message_user(request, f"Report {report_id}: {exc.message}", messages.ERROR)
        self.message_user(request, f"{done} {count} report(s).", messages.SUCCESS)

    @admin.action(description="Assign to me (in review)", permissions=["moderate_reports"])
    def assign_to_me(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        self._each(request, queryset, services.report_assign, "Assigned")

    @admin.action(description="Resolve: warn the reported user", permissions=["moderate_reports"])
    def resolve_warn(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        self._each(request, queryset, services.report_warn, "Warned (resolved)")

    @admin.action(
        description="Resolve: mute the reported user (MODERATION_MUTE_HOURS)",
        permissions=["moderate_reports"],
    )
    def resolve_mute(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        self._each(request, queryset, services.report_mute, "Muted (resolved)")

    @admin.action(
        description="Resolve: deactivate the reported account (closes its sockets)",
        permissions=["deactivate_account"],
    )
    def resolve_deactivate(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        self._each(request, queryset, services.report_deactivate, "Deactivated (resolved)")

    @admin.action(description="Resolve: dismiss (no action)", permissions=["moderate_reports"])
    def resolve_dismiss(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        self._each(request, queryset, services.report_dismiss, "Dismissed")


admin.site.register(Report, ReportAdmin)


@admin.register(ModerationNotice)
class ModerationNoticeAdmin(AuditedAdminMixin, admin.ModelAdmin[ModerationNotice]):
    """What moderators did to accounts (read-only)."""

    list_display = ["id", "created_at", "user", "action", "muted_until", "created_by", "report"]
    list_filter = ["action"]
    readonly_fields = (
        "user",
        "action",
        "report",
        "text",
        "muted_until",
        "created_by",
        "created_at",
    )
    fields = readonly_fields
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ModerationNotice | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ModerationNotice | None = None) -> bool:
        return False
