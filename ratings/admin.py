"""Staff screen of reviews (read-only; every view audited). Hiding a review needs
``ratings.hide_review``: one action per reason code (the reason is recorded on the review and in
the audit log), and one to show a hidden review again; each goes through ``ratings.services``,
which checks the permission again and audits."""

from __future__ import annotations

from collections.abc import Callable
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
from .models import Review


def _each(request: HttpRequest, queryset: QuerySet[Review], action: Callable[..., Review], done: str) -> None:
    assert isinstance(request.user, User)  # the admin site lets only signed-in staff in
    client = from_request(request)
    count = 0
    for review_id in queryset.values_list("pk", flat=True):
        try:
            action(actor=request.user, review_id=review_id, client=client)
            count += 1
        except ApplicationError as exc:
            messages.error(request, f"Review {review_id}: {exc.message}")
    if count:
        messages.success(request, done.format(count))


def _hide_action(reason: Review.HiddenReason) -> Callable[[Any, HttpRequest, QuerySet[Review]], None]:
    def hide(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        def one(**kwargs: Any) -> Review:
            return services.review_hide(reason=reason.value, **kwargs)

        _each(request, queryset, one, f"Hid {{}} review(s): {reason.label.lower()}.")

    hide.__name__ = f"hide_{reason.value}"
    return admin.action(description=f"Hide: {reason.label.lower()}", permissions=["hide_review"])(hide)


@admin.register(Review)
class ReviewAdmin(AuditedAdminMixin, admin.ModelAdmin[Review]):
    list_display = ["id", "doctor", "stars", "created_at", "edited_at", "replied_at", "hidden_reason"]
    list_filter = ["stars", "hidden_reason"]
    list_select_related = ["doctor"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Review._meta.fields]
    actions = [*(_hide_action(reason) for reason in Review.HiddenReason), "show_again"]

    has_hide_review_permission = admin_permission("ratings.hide_review")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Show a hidden review again", permissions=["hide_review"])
    def show_again(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        _each(request, queryset, services.review_show, "Showed {} review(s) again.")
