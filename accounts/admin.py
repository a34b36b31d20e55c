"""Admin for clinic staff: users, doctors awaiting verification, devices, specialties.

Every action declares the permission it needs (``@admin.action(permissions=[...])``; Django hides
and refuses it otherwise) and the service it calls checks that permission again
(``accounts.actors``). A change form shows ``is_active`` editable only to holders of
``deactivate_account``, and the permission fields (and staff groups) only to superusers.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from audit import actions as audited
from audit import services as audit
from audit.admin import AuditedAdminMixin
from core.errors import ApplicationError

from . import services
from .actors import admin_permission, may
from .models import Device, DoctorProfile, PatientProfile, Specialty, User

# Fields that grant power: only a superuser edits them (a holder of ``change_user`` could
# otherwise give themselves every permission, or superuser status).
PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


def _actor(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # the admin site lets only signed-in staff in
    return request.user


def _record(request: HttpRequest, action: str, user: User) -> None:
    audit.record(action, request=request, object_type="user", object_id=user.pk)


class PatientProfileInline(admin.StackedInline[PatientProfile, User]):
    model = PatientProfile
    can_delete = False
    extra = 0


class DoctorProfileInline(admin.StackedInline[DoctorProfile, User]):
    model = DoctorProfile
    fk_name = "user"
    can_delete = False
    extra = 0
    readonly_fields = ["verification_status", "verified_by", "verified_at"]


class DeviceInline(admin.TabularInline[Device, User]):
    model = Device
    extra = 0
    fields = ["platform", "installation_id", "app_version", "created_at"]
    readonly_fields = ["platform", "installation_id", "app_version", "created_at"]


@admin.register(User)
class UserAdmin(AuditedAdminMixin, DjangoUserAdmin):
    ordering = ["-id"]
    list_display = [
        "id",
        "phone_number",
        "display_name",
        "role",
        "is_active",
        "is_staff",
        "created_at",
        "deleted_at",
    ]
    list_filter = ["role", "is_active", "is_staff"]
    search_fields = ["phone_number", "display_name", "firebase_uid"]
    readonly_fields = ["firebase_uid", "created_at", "updated_at", "deleted_at", "last_login"]
    fieldsets = (
        (None, {"fields": ("phone_number", "password", "display_name", "role", "firebase_uid")}),
        ("Status", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "created_at", "updated_at", "deleted_at")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("phone_number", "display_name", "password1", "password2")}),
    )
    inlines = [PatientProfileInline, DoctorProfileInline, DeviceInline]
    actions = ["delete_accounts", "deactivate_accounts", "reactivate_accounts", "revoke_sessions"]

    has_erase_account_permission = admin_permission("accounts.erase_account")
    has_deactivate_account_permission = admin_permission("accounts.deactivate_account")
    has_revoke_sessions_permission = admin_permission("accounts.revoke_sessions")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting rows would orphan conversations: use the "Delete account" action (erasure).
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not may(request.user, "accounts.deactivate_account"):
            fields.append("is_active")
        if not request.user.is_superuser:
            fields.extend(PRIVILEGE_FIELDS)
        return fields

    def save_model(self, request: HttpRequest, obj: User, form: ModelForm[User], change: bool) -> None:
        """Save the form; a change of ``is_active`` goes through the service (closes sockets)."""
        if not change or "is_active" not in form.changed_data:
            super().save_model(request, obj, form, change)
            return
        wanted = obj.is_active
        obj.is_active = not wanted  # the form saves the other fields; the service flips this one
        super().save_model(request, obj, form, change)
        try:
            services.user_set_active(user=obj, active=wanted, actor=_actor(request))
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        _record(request, audited.USER_REACTIVATE if wanted else audited.USER_DEACTIVATE, obj)

    def _each(
        self, request: HttpRequest, queryset: QuerySet[User], action: Any, audit_action: str, done: str
    ) -> None:
        count = 0
        for user in queryset:
            try:
                action(user)
                _record(request, audit_action, user)
                count += 1
            except ApplicationError as exc:
                self.message_user(request, f"User {user.pk}: {exc.message}", messages.ERROR)
        self.message_user(request, f"{done} {count} account(s).", messages.SUCCESS)

    @admin.action(
        description="Deactivate (refuse sign-in, close open sockets)", permissions=["deactivate_account"]
    )
    def deactivate_accounts(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        actor = _actor(request)
        self._each(
            request,
            queryset,
            lambda user: services.user_set_active(user=user, active=False, actor=actor),
            audited.USER_DEACTIVATE,
            "Deactivated",
        )

    @admin.action(description="Reactivate", permissions=["deactivate_account"])
    def reactivate_accounts(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        actor = _actor(request)
        self._each(
            request,
            queryset,
            lambda user: services.user_set_active(user=user, active=True, actor=actor),
            audited.USER_REACTIVATE,
            "Reactivated",
        )

    @admin.action(
        description="Sign out everywhere (revoke Firebase tokens, close sockets)",
        permissions=["revoke_sessions"],
    )
    def revoke_sessions(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        actor = _actor(request)
        self._each(
            request,
            queryset,
            lambda user: services.revoke_sessions(user=user, actor=actor),
            audited.USER_SIGNOUT,
            "Signed out",
        )

    @admin.action(
        description="Delete account (erase personal data, keep conversations)", permissions=["erase_account"]
    )
    def delete_accounts(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        actor = _actor(request)
        self._each(
            request,
            queryset,
            lambda user: services.user_delete(user=user, actor=actor),
            audited.USER_DELETE,
            "Deleted",
        )


admin.site.unregister(Group)


@admin.register(Group)
class StaffGroupAdmin(DjangoGroupAdmin):
    """Groups of staff carry permissions: only a superuser creates, changes or deletes one (a
    holder of ``change_group`` could otherwise add any permission to a group they are in)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)


@admin.register(DoctorProfile)
class DoctorProfileAdmin(AuditedAdminMixin, admin.ModelAdmin[DoctorProfile]):
    list_display = [
        "user",
        "specialty",
        "jurisdiction",
        "licence_number",
        "verification_status",
        "verified_at",
        "verified_by",
    ]
    list_filter = ["verification_status", "specialty"]
    search_fields = ["user__phone_number", "user__display_name", "licence_number"]
    readonly_fields = ["verification_status", "verified_by", "verified_at"]
    list_select_related = ["user", "specialty", "verified_by"]
    actions = ["approve", "reject"]

    has_verify_doctor_permission = admin_permission("accounts.verify_doctor")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A doctor's profile goes only with their account (erasure), never on its own.
        return False

    def _decide(self, request: HttpRequest, queryset: QuerySet[DoctorProfile], status: str) -> None:
        actor = _actor(request)
        action = (
            audited.DOCTOR_VERIFY if status == DoctorProfile.Verification.VERIFIED else audited.DOCTOR_REJECT
        )
        done = 0
        for profile in queryset.select_related("user"):
            try:
                services.doctor_set_verification(doctor=profile.user, status=status, actor=actor)
                _record(request, action, profile.user)
                done += 1
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        self.message_user(request, f"{done} doctor(s) marked {status}.", messages.SUCCESS)

    @admin.action(description="Approve (verify) selected doctors", permissions=["verify_doctor"])
    def approve(self, request: HttpRequest, queryset: QuerySet[DoctorProfile]) -> None:
        self._decide(request, queryset, DoctorProfile.Verification.VERIFIED)

    @admin.action(description="Reject selected doctors", permissions=["verify_doctor"])
    def reject(self, request: HttpRequest, queryset: QuerySet[DoctorProfile]) -> None:
        self._decide(request, queryset, DoctorProfile.Verification.REJECTED)


@admin.register(Device)
class DeviceAdmin(AuditedAdminMixin, admin.ModelAdmin[Device]):
    list_display = ["id", "user", "platform", "installation_id", "app_version", "created_at"]
    list_filter = ["platform"]
    search_fields = ["user__phone_number", "installation_id"]
    exclude = ["fcm_token"]
    list_select_related = ["user"]


@admin.register(Specialty)
class SpecialtyAdmin(admin.ModelAdmin[Specialty]):
    """Writes go through the services, which refresh the public (cached) specialty list."""

    list_display = ["slug", "name"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ("name",)}

    def save_model(self, request: HttpRequest, obj: Specialty, form: Any, change: bool) -> None:
        services.specialty_save(specialty=obj)

    def delete_model(self, request: HttpRequest, obj: Specialty) -> None:
        services.specialty_delete(specialty=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Specialty]) -> None:
        for specialty in queryset:
            services.specialty_delete(specialty=specialty)
