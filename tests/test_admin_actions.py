"""Every admin action of every registered ModelAdmin needs its own permission (issue 17, finding 1).

One row per action, discovered from the admin site at test time: a new action without a row
fails ``test_every_admin_action_has_a_row``. Each row runs through the real changelist POST,
signed in as (a) a staff user holding every view permission of the project: the action is not
offered, the POST is refused and nothing changes; (b) a staff user holding the model's view
permission plus exactly the permission the row names (or a superuser, for the few actions only a
superuser may run): the action is offered and takes effect.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.contrib.auth.models import Group, Permission
from django.db.models import Model
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from accounts.models import Device, DoctorProfile, Specialty, User
from accounts.tests.factories import DeviceFactory, DoctorProfileFactory, PatientFactory, UserFactory
from conftest import unique_phone
from messaging.models import Conversation
from messaging.tests.factories import pair
from notifications.models import PushDelivery, PushPreference
from payments import services as payment_services
from payments.models import Consultation
from payments.tests.factories import people, requested

pytestmark = pytest.mark.django_db


@dataclass
class Context:
    """What a row's checks may look at: the Firebase admin API calls made so far."""

    firebase_calls: list[tuple[str, dict[str, Any]]]


SUPERUSER = "superuser"  # a row whose action only a superuser may run


@dataclass(frozen=True)
class Row:
    permission: str  # "app_label.codename" the action needs beyond the view permission, or SUPERUSER
    setup: Callable[[Context], list[int]]  # makes the objects; returns the pks to select
    done: Callable[[Context, list[int]], bool]  # the action took effect on every one of them
    extra: dict[str, str] = field(default_factory=dict)  # more POST fields (a confirmation)


CONFIRMED = {"post": "yes"}  # delete_selected's confirmation page answered


def _gone(model: type[Model]) -> Callable[[Context, list[int]], bool]:
    return lambda ctx, pks: not model._default_manager.filter(pk__in=pks).exists()


# --- accounts ------------------------------------------------------------------------------
def _patients(ctx: Context, **fields: Any) -> list[int]:
    return [PatientFactory.create(**fields).pk for _ in range(2)]


def _active(ctx: Context, pks: list[int], wanted: bool) -> bool:
    return list(User.objects.filter(pk__in=pks).values_list("is_active", flat=True)) == [wanted] * len(pks)


def _revoked(ctx: Context, pks: list[int]) -> bool:
    uids = set(User.objects.filter(pk__in=pks).values_list("firebase_uid", flat=True))
    revoked = {body.get("localId") for url, body in ctx.firebase_calls if "validSince" in body}
    return uids <= revoked


def _erased(ctx: Context, pks: list[int]) -> bool:
    return not User.objects.filter(pk__in=pks, deleted_at__isnull=True).exists()


def _pending_doctors(ctx: Context) -> list[int]:
    doctors = [UserFactory.create(role=User.Role.DOCTOR) for _ in range(2)]
    for doctor in doctors:
        DoctorProfileFactory(user=doctor, verification_status="pending", verified_at=None)
    return [doctor.pk for doctor in doctors]


def _decided(status: str) -> Callable[[Context, list[int]], bool]:
    def check(ctx: Context, pks: list[int]) -> bool:
        statuses = DoctorProfile.objects.filter(pk__in=pks).values_list("verification_status", flat=True)
        return list(statuses) == [status] * len(pks)

    return check


def _devices(ctx: Context) -> list[int]:
    return [DeviceFactory.create().pk]


def _specialties(ctx: Context) -> list[int]:
    return [Specialty.objects.create(slug=f"s-{uuid.uuid4().hex[:12]}", name="Unused specialty").pk]


def _groups(ctx: Context) -> list[int]:
    return [Group.objects.create(name=f"staff-{uuid.uuid4().hex[:12]}").pk]


# --- messaging, groups ---------------------------------------------------------------------
def _direct_conversations(ctx: Context, hold: bool = False) -> list[int]:
    _, _, conversation = pair()
    Conversation.objects.filter(pk=conversation.pk).update(legal_hold=hold)
    return [conversation.pk]


def _group_conversations(ctx: Context, hold: bool = False) -> list[int]:
    creator = PatientFactory.create()
    group = Conversation.objects.create(
        kind=Conversation.Kind.GROUP, name="Support group", created_by=creator, legal_hold=hold
    )
    return [group.pk]


def _held(wanted: bool) -> Callable[[Context, list[int]], bool]:
    def check(ctx: Context, pks: list[int]) -> bool:
        holds = Conversation.objects.filter(pk__in=pks).values_list("legal_hold", flat=True)
        return list(holds) == [wanted] * len(pks)

    return check


# --- notifications -------------------------------------------------------------------------
def _push_deliveries(ctx: Context) -> list[int]:
    delivery = PushDelivery.objects.create(
        kind=PushDelivery.Kind.TEST,
        device=DeviceFactory.create(),
        ref=uuid.uuid4().hex,
        due_at=timezone.now(),
    )
    return [delivery.pk]


def _push_preferences(ctx: Context) -> list[int]:
    return [PushPreference.objects.create(user=PatientFactory.create(), previews=True).pk]


# --- payments ------------------------------------------------------------------------------
def _accepted_consultations(ctx: Context) -> list[int]:
    patient, doctor = people(consultation_fee=2000)
    consultation = requested(patient, doctor)  # the development provider authorises at once
    payment_services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    return [consultation.pk]


def _refunded(ctx: Context, pks: list[int]) -> bool:
    states = Consultation.objects.filter(pk__in=pks).values_list("state", flat=True)
    return list(states) == ["refunded"] * len(pks)


# --- documents -----------------------------------------------------------------------------
def _failed_receipts(ctx: Context) -> list[int]:
    """The receipt of a captured payment, whose rendering failed."""
    from documents.models import Document

    consultation = Consultation.objects.get(pk=_accepted_consultations(ctx)[0])
    Document.objects.filter(consultation=consultation).update(status="failed", error="render_failed")
    return list(Document.objects.filter(consultation=consultation).values_list("pk", flat=True))


def _requeued(ctx: Context, pks: list[int]) -> bool:
    from documents.models import Document

    statuses = Document.objects.filter(pk__in=pks).values_list("status", flat=True)
    return bool(pks) and list(statuses) == ["pending"] * len(pks)


# --- appointments --------------------------------------------------------------------------
def _appointments(ctx: Context, *, state: str = "confirmed", started: bool = False) -> list[int]:
    """A booked appointment (the development provider: confirmed at once), or a held one."""
    from appointments import selectors as appointment_selectors
    from appointments import services as appointment_services
    from appointments.models import Appointment
    from appointments.tests.factories import doctor_with_schedule

    doctor, schedule = doctor_with_schedule(tz="UTC", weekly=[(d, "00:00", "23:40") for d in range(7)])
    start = timezone.now() + dt.timedelta(days=3)
    slot = appointment_selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))
    appointment = appointment_services.appointment_book(
        patient=PatientFactory.create(), doctor_id=doctor.pk, starts_at=slot[0][0], kind="chat"
    )
    if state == "held":
        Appointment.objects.filter(pk=appointment.pk).update(state="held")
    if started:
        began = timezone.now() - dt.timedelta(minutes=1)
        Appointment.objects.filter(pk=appointment.pk).update(
            starts_at=began, ends_at=began + dt.timedelta(minutes=20)
        )
    return [appointment.pk]


def _appointment_state(state: str) -> Callable[[Context, list[int]], bool]:
    def check(ctx: Context, pks: list[int]) -> bool:
        from appointments.models import Appointment

        return list(Appointment.objects.filter(pk__in=pks).values_list("state", flat=True)) == [state] * len(
            pks
        )

    return check


# --- ratings -------------------------------------------------------------------------------
def _reviews(ctx: Context, *, hidden: bool = False) -> list[int]:
    from ratings.models import Review
    from ratings.tests.factories import reviewed

    review = reviewed(stars=2)
    if hidden:
        Review.objects.filter(pk=review.pk).update(hidden_at=timezone.now(), hidden_reason="spam")
    return [review.pk]


def _hidden_for(reason: str) -> Callable[[Context, list[int]], bool]:
    def check(ctx: Context, pks: list[int]) -> bool:
        from ratings.models import Review

        return list(Review.objects.filter(pk__in=pks).values_list("hidden_reason", flat=True)) == [
            reason
        ] * len(pks)

    return check


# --- moderation ------------------------------------------------------------------------------
def _reports(ctx: Context) -> list[int]:
    """Two open reports, each about another member of a direct conversation."""
    from moderation.models import Report

    pks = []
    for _ in range(2):
        patient, doctor, conversation = pair()
        report = Report.objects.create(
            reporter=patient, target="user", reported_user=doctor, conversation=conversation, reason="spam"
        )
        pks.append(report.pk)
    return pks


def _report_state(status: str, action: str = "") -> Callable[[Context, list[int]], bool]:
    def check(ctx: Context, pks: list[int]) -> bool:
        from moderation.models import Report

        rows = list(Report.objects.filter(pk__in=pks).values_list("status", "action"))
        return rows == [(status, action)] * len(pks)

    return check


def _reported_deactivated(ctx: Context, pks: list[int]) -> bool:
    from moderation.models import Report

    reported = Report.objects.filter(pk__in=pks).values_list("reported_user_id", flat=True)
    return _report_state("resolved", "deactivate")(ctx, pks) and _active(ctx, list(reported), False)


ROWS: dict[tuple[str, str], Row] = {
    **{
        ("ratings.review", f"hide_{reason}"): Row("ratings.hide_review", _reviews, _hidden_for(reason))
        for reason in ("abusive", "personal_data", "not_about_care", "spam")
    },
    ("ratings.review", "show_again"): Row(
        "ratings.hide_review", lambda ctx: _reviews(ctx, hidden=True), _hidden_for("")
    ),
    ("appointments.appointment", "cancel_refunding_in_full"): Row(
        "appointments.cancel_appointment", _appointments, _appointment_state("cancelled")
    ),
    ("appointments.appointment", "mark_doctor_no_show"): Row(
        "appointments.mark_no_show",
        lambda ctx: _appointments(ctx, started=True),
        _appointment_state("no_show_doctor"),
    ),
    ("appointments.appointment", "release_stuck_hold"): Row(
        "appointments.release_hold",
        lambda ctx: _appointments(ctx, state="held"),
        _appointment_state("released"),
    ),
    ("auth.group", "delete_selected"): Row(SUPERUSER, _groups, _gone(Group), CONFIRMED),
    ("accounts.user", "deactivate_accounts"): Row(
        "accounts.deactivate_account", _patients, lambda ctx, pks: _active(ctx, pks, False)
    ),
    ("accounts.user", "reactivate_accounts"): Row(
        "accounts.deactivate_account",
        lambda ctx: _patients(ctx, is_active=False),
        lambda ctx, pks: _active(ctx, pks, True),
    ),
    ("accounts.user", "revoke_sessions"): Row("accounts.revoke_sessions", _patients, _revoked),
    ("accounts.user", "delete_accounts"): Row("accounts.erase_account", _patients, _erased),
    ("accounts.doctorprofile", "approve"): Row(
        "accounts.verify_doctor", _pending_doctors, _decided(DoctorProfile.Verification.VERIFIED)
    ),
    ("accounts.doctorprofile", "reject"): Row(
        "accounts.verify_doctor", _pending_doctors, _decided(DoctorProfile.Verification.REJECTED)
    ),
    ("accounts.device", "delete_selected"): Row("accounts.delete_device", _devices, _gone(Device), CONFIRMED),
    ("accounts.specialty", "delete_selected"): Row(
        "accounts.delete_specialty", _specialties, _gone(Specialty), CONFIRMED
    ),
    ("messaging.conversation", "place_legal_hold"): Row(
        "messaging.manage_legal_hold", _direct_conversations, _held(True)
    ),
    ("messaging.conversation", "release_legal_hold"): Row(
        "messaging.manage_legal_hold", lambda ctx: _direct_conversations(ctx, hold=True), _held(False)
    ),
    ("groups.groupconversation", "place_legal_hold"): Row(
        "messaging.manage_legal_hold", _group_conversations, _held(True)
    ),
    ("groups.groupconversation", "release_legal_hold"): Row(
        "messaging.manage_legal_hold", lambda ctx: _group_conversations(ctx, hold=True), _held(False)
    ),
    ("notifications.pushdelivery", "delete_selected"): Row(
        "notifications.delete_pushdelivery", _push_deliveries, _gone(PushDelivery), CONFIRMED
    ),
    ("notifications.pushpreference", "delete_selected"): Row(
        "notifications.delete_pushpreference", _push_preferences, _gone(PushPreference), CONFIRMED
    ),
    ("moderation.report", "assign_to_me"): Row(
        "moderation.moderate_reports", _reports, _report_state("in_review")
    ),
    ("moderation.report", "resolve_warn"): Row(
        "moderation.moderate_reports", _reports, _report_state("resolved", "warn")
    ),
    ("moderation.report", "resolve_mute"): Row(
        "moderation.moderate_reports", _reports, _report_state("resolved", "mute")
    ),
    ("moderation.report", "resolve_dismiss"): Row(
        "moderation.moderate_reports", _reports, _report_state("resolved", "dismiss")
    ),
    ("moderation.report", "resolve_deactivate"): Row(
        "accounts.deactivate_account", _reports, _reported_deactivated
    ),
    ("payments.consultation", "refund_in_full"): Row(
        "payments.refund_consultation", _accepted_consultations, _refunded
    ),
    ("documents.document", "regenerate"): Row("documents.regenerate_document", _failed_receipts, _requeued),
}


def registered_admins() -> list[tuple[type[Model], admin.ModelAdmin[Any]]]:
    """Every model of every installed app registered with the admin site (public API only)."""
    return [
        (model, admin.site.get_model_admin(model))
        for model in apps.get_models()
        if admin.site.is_registered(model)
    ]


def superuser_request() -> Any:
    request = RequestFactory().get("/admin/")
    request.user = User(phone_number=unique_phone(), is_staff=True, is_superuser=True, is_active=True)
    return request


def discovered_actions() -> dict[tuple[str, str], Any]:
    """(model label, action name) -> the action function, for every action a superuser is offered."""
    request = superuser_request()
    found: dict[tuple[str, str], Any] = {}
    for model, model_admin in registered_admins():
        for name, action in model_admin.get_actions(request).items():
            assert action is not None
            found[(model._meta.label_lower, name)] = action[0]
    return found


def staff_with(*perms: str) -> User:
    """A staff account holding exactly ``perms`` ("app_label.codename"; SUPERUSER: a superuser)."""
    user: User = User.objects.create_user(
        unique_phone(),
        "pw-for-tests-only",
        is_staff=True,
        is_superuser=SUPERUSER in perms,
        display_name="Clerk",
    )
    for perm in set(perms) - {SUPERUSER}:
        app_label, codename = perm.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def view_only_staff() -> User:
    """Staff holding every view permission of the project and nothing else."""
    user: User = User.objects.create_user(
        unique_phone(), "pw-for-tests-only", is_staff=True, display_name="Viewer"
    )
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


def view_permission(label: str) -> str:
    opts = apps.get_model(label)._meta
    return f"{opts.app_label}.{get_permission_codename('view', opts)}"


def changelist(label: str) -> str:
    app_label, model_name = label.split(".")
    return reverse(f"admin:{app_label}_{model_name}_changelist")


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def offered(client: Client, label: str) -> set[str]:
    page = client.get(changelist(label))
    assert page.status_code == 200, f"{label}: the changelist must be readable ({page.status_code})"
    form = page.context.get("action_form")
    return {name for name, _ in form.fields["action"].choices} if form is not None else set()


@pytest.fixture
def ctx(firebase_admin_api: list[tuple[str, dict[str, Any]]], settings: Any) -> Context:
    settings.PAYMENTS_PROVIDER = "development"  # refunds run locally, without Stripe
    settings.STRIPE_SECRET_KEY = ""
    return Context(firebase_calls=firebase_admin_api)


def test_every_admin_action_has_a_row():
    """A new action (or a newly registered ModelAdmin with delete_selected) needs a row here."""
    discovered = set(discovered_actions())
    assert discovered - set(ROWS) == set(), "admin actions without a row in ROWS"
    assert set(ROWS) - discovered == set(), "rows for actions the admin no longer offers"


def test_every_admin_action_declares_a_permission_beyond_view():
    for key, function in discovered_actions().items():
        declared = set(getattr(function, "allowed_permissions", ()) or ())
        assert declared, f"{key}: @admin.action(permissions=[...]) missing"
        assert declared - {"view"}, f"{key}: a view permission does not allow changing anything"


@pytest.mark.parametrize("key", sorted(ROWS), ids=lambda key: f"{key[0]}:{key[1]}")
def test_view_only_staff_cannot_run_the_action(ctx: Context, key: tuple[str, str]):
    label, action = key
    row = ROWS[key]
    pks = row.setup(ctx)
    client = browser(view_only_staff())
    client.post(changelist(label), {"action": action, "_selected_action": pks, **row.extra})
    assert not row.done(ctx, pks), f"{label}:{action} ran for a view-only staff user"
    assert action not in offered(client, label)


@pytest.mark.parametrize("key", sorted(ROWS), ids=lambda key: f"{key[0]}:{key[1]}")
def test_staff_holding_the_permission_runs_the_action(ctx: Context, key: tuple[str, str]):
    label, action = key
    row = ROWS[key]
    pks = row.setup(ctx)
    client = browser(staff_with(view_permission(label), row.permission))
    assert action in offered(client, label)
    response = client.post(changelist(label), {"action": action, "_selected_action": pks, **row.extra})
    assert response.status_code == 302, response.content[:2000]
    assert row.done(ctx, pks), f"{label}:{action} did not take effect"


# --- Beyond the changelist actions: change forms and the refund page ----------------------------
def form_data(page: Any, **changes: Any) -> dict[str, Any]:
    """What the browser would post back for a change page as shown (inline management forms
    included), with ``changes`` applied (``False`` unticks a checkbox)."""
    forms: list[Any] = [page.context["adminform"].form]
    for inline in page.context["inline_admin_formsets"]:
        forms.extend([inline.formset.management_form, *inline.formset.forms])
    data: dict[str, Any] = {}
    for form in forms:
        for name, form_field in form.fields.items():
            value = form[name].value()
            if form_field.disabled or value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value
    for name, value in changes.items():
        if value is False:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def test_user_form_changes_activity_and_privileges_only_with_their_permissions():
    target = UserFactory.create(display_name="Before")
    url = reverse("admin:accounts_user_change", args=[target.pk])
    every = [str(pk) for pk in Permission.objects.values_list("pk", flat=True)]
    clerk = browser(staff_with("accounts.view_user", "accounts.change_user"))
    page = clerk.get(url)
    posted = form_data(
        page, display_name="After", is_active=False, is_superuser="on", is_staff="on", user_permissions=every
    )
    assert clerk.post(url, posted).status_code == 302
    target.refresh_from_db()
    assert target.display_name == "After"  # the change permission covers the ordinary fields
    assert (target.is_active, target.is_superuser, target.is_staff) == (True, False, False)
    assert not target.user_permissions.exists()

    deactivator = browser(
        staff_with("accounts.view_user", "accounts.change_user", "accounts.deactivate_account")
    )
    assert deactivator.post(url, form_data(deactivator.get(url), is_active=False)).status_code == 302
    target.refresh_from_db()
    assert target.is_active is False


@pytest.mark.parametrize("model", ["messaging.conversation", "groups.groupconversation"])
def test_legal_hold_checkbox_needs_manage_legal_hold(ctx: Context, model: str):
    pks = _direct_conversations(ctx) if model == "messaging.conversation" else _group_conversations(ctx)
    app_label, model_name = model.split(".")
    url = reverse(f"admin:{app_label}_{model_name}_change", args=[pks[0]])
    change = f"{app_label}.change_{model_name}"
    clerk = browser(staff_with(view_permission(model), change))
    assert clerk.post(url, form_data(clerk.get(url), legal_hold="on")).status_code == 302
    assert not _held(True)(ctx, pks)
    keeper = browser(staff_with(view_permission(model), change, "messaging.manage_legal_hold"))
    assert keeper.post(url, form_data(keeper.get(url), legal_hold="on")).status_code == 302
    assert _held(True)(ctx, pks)


def test_refund_page_needs_refund_consultation(ctx: Context):
    pks = _accepted_consultations(ctx)
    url = reverse("admin:payments_consultation_refund", args=[pks[0]])
    for perms in (
        ("payments.view_consultation",),
        ("payments.view_consultation", "payments.change_consultation"),
    ):
        clerk = browser(staff_with(*perms))
        assert clerk.get(url).status_code == 302
        assert clerk.post(url, {"amount": "", "note": "x"}).status_code == 302
        assert not _refunded(ctx, pks)
    cashier = browser(staff_with("payments.view_consultation", "payments.refund_consultation"))
    assert cashier.get(url).status_code == 200
    assert cashier.post(url, {"amount": "", "note": "goodwill"}).status_code == 302
    assert _refunded(ctx, pks)


def test_only_superusers_change_staff_groups(ctx: Context):
    """Groups carry permissions: ``change_group`` must not let a clerk grant themselves more."""
    group = Group.objects.create(name="Clerks")
    clerk_user = staff_with("auth.view_group", "auth.add_group", "auth.change_group", "auth.delete_group")
    clerk_user.groups.add(group)
    clerk = browser(clerk_user)
    every = [str(pk) for pk in Permission.objects.values_list("pk", flat=True)]
    url = reverse("admin:auth_group_change", args=[group.pk])
    assert clerk.post(url, {"name": "Clerks", "permissions": every}).status_code == 403
    assert (
        clerk.post(reverse("admin:auth_group_add"), {"name": "Mine", "permissions": every}).status_code == 403
    )
    assert not group.permissions.exists()
    assert not Group.objects.filter(name="Mine").exists()
    clerk.post(
        changelist("auth.group"), {"action": "delete_selected", "_selected_action": [group.pk], **CONFIRMED}
    )
    assert Group.objects.filter(pk=group.pk).exists()
