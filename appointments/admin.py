"""Staff screens: schedules and appointments (read-only; writes go through the services)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import (
    Appointment,
    AppointmentReminder,
    AppointmentTransition,
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


@admin.register(Appointment)
class AppointmentAdmin(ReadOnly, admin.ModelAdmin[Appointment]):
    list_display = ["id", "doctor", "patient", "starts_at", "state", "consultation"]
    list_filter = ["state"]
    date_hierarchy = "starts_at"
    inlines = [TransitionInline, ReminderInline]
