"""Admin for staff: consultations (with refunds), the ledger and webhook events (read-only),
doctors' payout accounts and availability. Every write goes through ``payments.services``.

Refunds (the list action and the refund page) need ``payments.refund_consultation``; the
service checks it again."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounts.actors import admin_permission
from accounts.models import User
from audit.admin import AuditedAdminMixin
from core.errors import ApplicationError

from . import selectors, services
from .models import (
    AvailabilityWindow,
    Consultation,
    ConsultationTransition,
    DoctorAvailability,
    LedgerEntry,
    StripeAccount,
    WebhookEvent,
)


class ReadOnlyAdminMixin:
    """Rows written only by services (append-only records): staff look, never edit."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TransitionInline(ReadOnlyAdminMixin, admin.TabularInline[ConsultationTransition, Consultation]):
    model = ConsultationTransition
    extra = 0
    fields = ["from_state", "to_state", "actor", "source", "note", "at"]
    readonly_fields = ["from_state", "to_state", "actor", "source", "note", "at"]


class LedgerInline(ReadOnlyAdminMixin, admin.TabularInline[LedgerEntry, Consultation]):
    model = LedgerEntry
    extra = 0
    fields = ["kind", "amount", "currency", "stripe_id", "key", "source", "created_at"]
    readonly_fields = ["kind", "amount", "currency", "stripe_id", "key", "source", "created_at"]


class RefundForm(forms.Form):
    amount = forms.IntegerField(
        min_value=1,
        required=False,
        help_text="Minor units (e.g. cents). Empty: refund everything still refundable.",
    )
    note = forms.CharField(max_length=255, required=False)


def _actor(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # the admin site lets only signed-in staff in
    return request.user


@admin.register(Consultation)
class ConsultationAdmin(AuditedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin[Consultation]):
    list_display = [
        "id",
        "patient",
        "doctor",
        "kind",
        "state",
        "price",
        "currency",
        "payout_status",
        "created_at",
    ]
    list_filter = ["state", "kind", "payout_status", "provider"]
    search_fields = ["=id", "payment_intent_id", "charge_id", "patient__phone_number", "doctor__phone_number"]
    list_select_related = ["patient", "doctor"]
    ordering = ["-id"]
    readonly_fields = [
        "patient",
        "doctor",
        "kind",
        "reason",
        "state",
        "price",
        "currency",
        "platform_fee",
        "conversation",
        "provider",
        "payment_intent_id",
        "charge_id",
        "transfer_id",
        "payout_status",
        "ledger",
        "refund_link",
        "created_at",
        "expires_at",
        "paid_at",
        "accepted_at",
        "started_at",
        "completed_at",
        "closes_at",
        "ended_at",
    ]
    exclude = ["client_secret", "last_payment_error"]
    inlines = [TransitionInline, LedgerInline]
    actions = ["refund_in_full"]

    has_refund_consultation_permission = admin_permission("payments.refund_consultation")

    @admin.display(description="ledger")
    def ledger(self, obj: Consultation) -> str:
        s = selectors.ledger_summary(consultation_id=obj.pk)
        return (
            f"charged {s.charge}, refunded {s.refunded}, fee {s.fee}, transferred {s.transfer}, "
            f"held {s.held} ({'balanced' if s.balanced else 'NOT BALANCED'})"
        )

    @admin.display(description="refund")
    def refund_link(self, obj: Consultation) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            '<a class="button" href="{}">Refund (full or partial)…</a>',
            reverse("admin:payments_consultation_refund", args=[obj.pk]),
        )

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "<int:consultation_id>/refund/",
                self.admin_site.admin_view(self.refund_view),
                name="payments_consultation_refund",
            )
        ]
        return extra + super().get_urls()

    def refund_view(self, request: HttpRequest, consultation_id: int) -> HttpResponse:
        if not self.has_refund_consultation_permission(request):
            messages.error(request, "You may not refund consultations (payments.refund_consultation).")
            return HttpResponseRedirect(reverse("admin:payments_consultation_change", args=[consultation_id]))
        consultation = get_object_or_404(Consultation, pk=consultation_id)
        form = RefundForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.consultation_refund(
                    consultation_id=consultation.pk,
                    amount=form.cleaned_data["amount"],
                    actor=_actor(request),
                    source="admin",
                    note=form.cleaned_data["note"],
                )
            except ApplicationError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, "Refunded.")
                return HttpResponseRedirect(
                    reverse("admin:payments_consultation_change", args=[consultation.pk])
                )
        summary = selectors.ledger_summary(consultation_id=consultation.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Refund consultation {consultation.pk}",
            "consultation": consultation,
            "summary": summary,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/payments/refund.html", context)

    @admin.action(
        description="Refund in full (reverses the doctor's share and the fee)",
        permissions=["refund_consultation"],
    )
    def refund_in_full(self, request: HttpRequest, queryset: QuerySet[Consultation]) -> None:
        done = 0
        for consultation in queryset:
            try:
                services.consultation_refund(
                    consultation_id=consultation.pk, actor=_actor(request), source="admin"
                )
                done += 1
            except ApplicationError as exc:
                messages.error(request, f"Consultation {consultation.pk}: {exc.message}")
        if done:
            messages.success(request, f"Refunded {done} consultation(s).")


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[LedgerEntry]):
    list_display = ["id", "consultation", "kind", "amount", "currency", "stripe_id", "source", "created_at"]
    list_filter = ["kind", "source", "currency"]
    search_fields = ["=consultation__id", "stripe_id"]
    ordering = ["-id"]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[WebhookEvent]):
    list_display = ["event_id", "type", "consultation", "result", "received_at"]
    list_filter = ["type"]
    search_fields = ["event_id", "=consultation__id"]
    ordering = ["-received_at"]


@admin.register(StripeAccount)
class StripeAccountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[StripeAccount]):
    list_display = [
        "doctor",
        "account_id",
        "details_submitted",
        "charges_enabled",
        "payouts_enabled",
        "updated_at",
    ]
    list_filter = ["payouts_enabled", "details_submitted"]
    search_fields = ["account_id", "doctor__phone_number", "doctor__display_name"]


class AvailabilityWindowInline(
    ReadOnlyAdminMixin, admin.TabularInline[AvailabilityWindow, DoctorAvailability]
):
    model = AvailabilityWindow
    extra = 0
    fields = ["weekday", "start", "end"]
    readonly_fields = ["weekday", "start", "end"]


@admin.register(DoctorAvailability)
class DoctorAvailabilityAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[DoctorAvailability]):
    list_display = ["doctor", "online", "timezone", "outside_hours", "updated_at"]
    list_filter = ["online"]
    inlines = [AvailabilityWindowInline]
