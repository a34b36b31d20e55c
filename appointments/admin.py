"""Staff screens: schedules, appointments and on-demand requests (read-only; every view of an
appointment or a request is audited). Three actions, each needing its own permission and going
through ``appointments.staff`` (which checks it again and audits): cancel with a full refund
(``cancel_appointment``), mark the doctor a no-show (``mark_no_show``), release a stuck hold
(``release_hold``)."""

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

from . import staff
from .models import (
    Appointment,
    AppointmentReminder,
    AppointmentTransition,
    OnDemandRequest,
    Schedule,
    ScheduleException,
    WeeklyWindow,
)


class ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WeeklyWindowInline(ReadOnly, admin.TabularInline[WeeklyWindow, Schedule]):
    model = WeeklyWindow
    extra = 0


class ScheduleExceptionInline(ReadOnly, admin.TabularInline[ScheduleException, Schedule]):
    model = ScheduleException
    extra = 0


@admin.register(Schedule)
class ScheduleAdmin(ReadOnly, admin.ModelAdmin[Schedule]):
    list_display = ["doctor", "timezone", "slot_minutes", "buffer_minutes", "horizon_days", "bookable"]
    list_filter = ["bookable", "timezone"]
    inlines = [WeeklyWindowInline, ScheduleExceptionInline]


class TransitionInline(ReadOnly, admin.TabularInline[AppointmentTransition, Appointment]):
    model = AppointmentTransition
    extra = 0


class ReminderInline(ReadOnly, admin.TabularInline[AppointmentReminder, Appointment]):
    model = AppointmentReminder
    extra = 0


def _run(
    request: HttpRequest,
    queryset: QuerySet[Appointment],
    action: Callable[..., Appointment],
    done_message: str,
) -> None:
    assert isinstance(request.user, User)  # the admin site lets only signed-in staff in
    client = from_request(request)
    done = 0
    for appointment_id in queryset.values_list("pk", flat=True):
        try:
            action(appointment_id=appointment_id, actor=request.user, client=client)
            done += 1
        except ApplicationError as exc:
            messages.error(request, f"Appointment {appointment_id}: {exc.message}")
    if done:
        messages.success(request, done_message.format(done))


@admin.register(Appointment)
class AppointmentAdmin(AuditedAdminMixin, ReadOnly, admin.ModelAdmin[Appointment]):
    list_display = ["id", "doctor", "patient", "starts_at", "state", "consultation"]
    list_filter = ["state"]
    list_select_related = ["doctor", "patient"]
    date_hierarchy = "starts_at"
    inlines = [TransitionInline, ReminderInline]
    actions = ["cancel_refunding_in_full", "mark_doctor_no_show", "release_stuck_hold"]

    has_cancel_appointment_permission = admin_permission("appointments.cancel_appointment")
    has_mark_no_show_permission = admin_permission("appointments.mark_no_show")
    has_release_hold_permission = admin_permission("appointments.release_hold")

    @admin.action(
        description="Cancel, refunding the patient in full (whatever the policy)",
        permissions=["cancel_appointment"],
    )
    def cancel_refunding_in_full(self, request: HttpRequest, queryset: QuerySet[Appointment]) -> None:
        _run(request, queryset, staff.appointment_staff_cancel, "Cancelled and refunded {} appointment(s).")

    @admin.action(
        description="Mark the doctor a no-show (authorisation released, apology push)",
        permissions=["mark_no_show"],
    )
    def mark_doctor_no_show(self, request: HttpRequest, queryset: QuerySet[Appointment]) -> None:
        _run(
            request, queryset, staff.appointment_staff_no_show, "Marked {} appointment(s) as doctor no-shows."
        )

    @admin.action(
        description="Release a stuck hold (the provider is asked once)", permissions=["release_hold"]
    )
    def release_stuck_hold(self, request: HttpRequest, queryset: QuerySet[Appointment]) -> None:
        _run(request, queryset, staff.appointment_staff_release, "Expired {} hold(s).")


@admin.register(OnDemandRequest)
class OnDemandRequestAdmin(AuditedAdminMixin, ReadOnly, admin.ModelAdmin[OnDemandRequest]):
    list_display = ["id", "patient", "specialty", "kind", "state", "doctor", "consultation", "created_at"]
    list_filter = ["state", "specialty"]
    list_select_related = ["patient", "doctor", "specialty"]
    date_hierarchy = "created_at"
