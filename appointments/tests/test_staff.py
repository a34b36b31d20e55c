"""Staff actions on appointments (``appointments.staff``): each needs its own permission (the
service checks it, whoever calls), goes through the services and writes an audit entry."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.actors import Operator
from accounts.models import User
from accounts.tests.factories import PatientFactory
from appointments import selectors, services, staff
from appointments.models import Appointment
from appointments.tests.factories import doctor_with_schedule
from audit.models import AuditEntry
from conftest import unique_phone
from core.errors import ApplicationError
from payments import selectors as payment_selectors
from payments import services as payment_services
from payments.tests.conftest import post_event

pytestmark = pytest.mark.django_db


def clerk(*codenames: str) -> User:
    user: User = User.objects.create_user(
        unique_phone(), "pw-for-tests-only", is_staff=True, display_name="Clerk"
    )
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="appointments", codename=codename)
        )
    return User.objects.get(pk=user.pk)  # a fresh permission cache


def booked(stripe_fake, *, authorise: bool = True) -> Appointment:
    doctor, schedule = doctor_with_schedule(tz="UTC", weekly=[(d, "00:00", "23:40") for d in range(7)])
    start = timezone.now() + dt.timedelta(days=3)
    slot = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]
    appointment = services.appointment_book(
        patient=PatientFactory.create(), doctor_id=doctor.pk, starts_at=slot, kind="chat", reason="cough"
    )
    assert appointment.consultation is not None
    if authorise:
        intent = stripe_fake.authorize(appointment.consultation.payment_intent_id)
        post_event(stripe_fake.event("payment_intent.amount_capturable_updated", intent))
    appointment.refresh_from_db()
    return appointment


def audited(action: str, appointment: Appointment) -> list[AuditEntry]:
    return list(
        AuditEntry.objects.filter(action=action, object_type="appointment", object_id=str(appointment.pk))
    )


@pytest.mark.parametrize(
    ("function", "codename"),
    [
        (staff.appointment_staff_cancel, "cancel_appointment"),
        (staff.appointment_staff_no_show, "mark_no_show"),
        (staff.appointment_staff_release, "release_hold"),
    ],
)
def test_each_action_needs_its_own_permission(stripe_fake, function, codename):
    appointment = booked(stripe_fake)
    others = {"cancel_appointment", "mark_no_show", "release_hold"} - {codename}
    for actor in (PatientFactory.create(), clerk(*others)):
        with pytest.raises(ApplicationError) as refused:
            function(appointment_id=appointment.pk, actor=actor)
        assert refused.value.code == "permission_denied"
    appointment.refresh_from_db()
    assert appointment.state == "confirmed"
    assert not AuditEntry.objects.filter(action__startswith="appointment.staff").exists()


def test_cancel_before_capture_releases_the_authorisation(stripe_fake):
    appointment = booked(stripe_fake)
    actor = clerk("cancel_appointment")
    staff.appointment_staff_cancel(appointment_id=appointment.pk, actor=actor)
    appointment.refresh_from_db()
    assert appointment.state == "cancelled"
    assert appointment.transitions.last().actor_id == actor.pk
    consultation = appointment.consultation
    assert consultation.state == "cancelled"
    assert stripe_fake.payment_intent(consultation.payment_intent_id)["status"] == "canceled"
    assert not appointment.reminders.filter(sent_at__isnull=True).exists()
    (entry,) = audited("appointment.staff_cancel", appointment)
    assert entry.actor_id == actor.pk
    # Idempotent: a second run changes nothing and audits nothing.
    staff.appointment_staff_cancel(appointment_id=appointment.pk, actor=actor)
    assert len(audited("appointment.staff_cancel", appointment)) == 1


def test_cancel_after_capture_refunds_in_full_even_late(stripe_fake):
    appointment = booked(stripe_fake)
    consultation = appointment.consultation
    payment_services.consultation_accept(user=appointment.doctor, consultation_id=consultation.pk)
    Appointment.objects.filter(pk=appointment.pk).update(
        starts_at=timezone.now() + dt.timedelta(minutes=5), ends_at=timezone.now() + dt.timedelta(minutes=25)
    )
    staff.appointment_staff_cancel(appointment_id=appointment.pk, actor=Operator(command="test"))
    consultation.refresh_from_db()
    assert consultation.state == "refunded"
    summary = payment_selectors.ledger_summary(consultation_id=consultation.pk)
    assert summary.charge == consultation.price
    assert summary.refunded == consultation.price
    (entry,) = audited("appointment.staff_cancel", appointment)
    assert entry.actor_id is None  # an operator


def test_mark_no_show_after_the_start_only(stripe_fake, enqueued):
    appointment = booked(stripe_fake)
    actor = clerk("mark_no_show")
    with pytest.raises(ApplicationError) as early:
        staff.appointment_staff_no_show(appointment_id=appointment.pk, actor=actor)
    assert early.value.code == "not_a_no_show"
    began = timezone.now() - dt.timedelta(minutes=2)  # before the sweep's 15 minutes
    Appointment.objects.filter(pk=appointment.pk).update(
        starts_at=began, ends_at=began + dt.timedelta(minutes=20)
    )
    staff.appointment_staff_no_show(appointment_id=appointment.pk, actor=actor)
    appointment.refresh_from_db()
    assert appointment.state == "no_show_doctor"
    last = appointment.transitions.last()
    assert (last.actor_id, last.source) == (actor.pk, "admin")
    assert appointment.consultation.state == "expired"
    assert stripe_fake.payment_intent(appointment.consultation.payment_intent_id)["status"] == "canceled"
    assert len(audited("appointment.staff_no_show", appointment)) == 1


def test_an_admitted_appointment_is_not_a_no_show(stripe_fake):
    appointment = booked(stripe_fake)
    payment_services.consultation_accept(user=appointment.doctor, consultation_id=appointment.consultation_id)
    began = timezone.now() - dt.timedelta(minutes=2)
    Appointment.objects.filter(pk=appointment.pk).update(
        starts_at=began, ends_at=began + dt.timedelta(minutes=20)
    )
    with pytest.raises(ApplicationError) as refused:
        staff.appointment_staff_no_show(appointment_id=appointment.pk, actor=clerk("mark_no_show"))
    assert refused.value.code == "not_a_no_show"
    appointment.refresh_from_db()
    assert appointment.state == "admitted"  # accepting the consultation admits it (the waiting room)
    assert not audited("appointment.staff_no_show", appointment)


def test_release_a_stuck_hold_before_its_deadline(stripe_fake):
    appointment = booked(stripe_fake, authorise=False)
    assert appointment.state == "held"
    assert appointment.hold_expires_at > timezone.now()
    staff.appointment_staff_release(appointment_id=appointment.pk, actor=clerk("release_hold"))
    appointment.refresh_from_db()
    assert appointment.state == "released"
    assert appointment.consultation.state == "expired"
    assert stripe_fake.payment_intent(appointment.consultation.payment_intent_id)["status"] == "canceled"
    assert len(audited("appointment.staff_release", appointment)) == 1
    with pytest.raises(ApplicationError) as confirmed:
        staff.appointment_staff_release(appointment_id=booked(stripe_fake).pk, actor=clerk("release_hold"))
    assert confirmed.value.code == "invalid_transition"
