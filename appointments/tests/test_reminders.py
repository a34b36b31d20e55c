"""Reminders: armed on confirmation at the default offsets, sent exactly once through the push
outbox (repeated and concurrent runs, a run that dies mid-batch), moved by a reschedule,
removed by a cancel, no medical content in the push."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from django.utils import timezone

from accounts.tests.factories import DeviceFactory, PatientFactory
from appointments import reminders, selectors, services, tasks
from appointments.models import AppointmentReminder
from appointments.tests.factories import doctor_with_schedule
from notifications.models import PushDelivery
from notifications.tests.conftest import run_queued


def confirmed_appointment(settings, *, days_ahead: int = 3):
    settings.PAYMENTS_PROVIDER = "development"  # authorised at once: confirmed at booking
    doctor, schedule = doctor_with_schedule(tz="UTC", weekly=[(d, "00:00", "23:40") for d in range(7)])
    patient = PatientFactory.create()
    DeviceFactory.create(user=patient)
    DeviceFactory.create(user=doctor)
    start = timezone.now() + dt.timedelta(days=days_ahead)
    slot = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[0][0]
    appointment = services.appointment_book(
        patient=patient, doctor_id=doctor.pk, starts_at=slot, kind="video", reason="matrix-secret: chest pain"
    )
    assert appointment.state == "confirmed"
    return appointment, patient, doctor


def make_due(appointment, offset: int) -> None:
    AppointmentReminder.objects.filter(appointment=appointment, offset_minutes=offset).update(
        due_at=timezone.now() - dt.timedelta(seconds=1)
    )


@pytest.mark.django_db
def test_armed_at_the_default_offsets_and_sent_once_without_medical_content(
    settings, enqueued, fake_fcm, django_capture_on_commit_callbacks
):
    appointment, _, _ = confirmed_appointment(settings)
    rows = AppointmentReminder.objects.filter(appointment=appointment).order_by("-offset_minutes")
    assert [(r.offset_minutes, r.due_at) for r in rows] == [
        (1440, appointment.starts_at - dt.timedelta(hours=24)),
        (15, appointment.starts_at - dt.timedelta(minutes=15)),
    ]
    assert tasks.send_reminders() == 0  # nothing due yet
    make_due(appointment, 1440)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.send_reminders() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.send_reminders() == 0  # a second run (beat restarted, task duplicated) sends nothing
    run_queued(enqueued)
    assert len(fake_fcm.messages) == 2  # the patient's device and the doctor's
    for message in fake_fcm.messages:
        assert message["data"]["type"] == "appointment.reminder"
        assert message["data"]["appointment_id"] == str(appointment.pk)
    assert "chest pain" not in fake_fcm.raw
    assert "matrix-secret" not in fake_fcm.raw
    run_queued(enqueued)
    assert len(fake_fcm.messages) == 2
    assert PushDelivery.objects.filter(kind="appointment", state="sent").count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_send_each_reminder_once(settings, enqueued):
    appointment, _, _ = confirmed_appointment(settings)
    make_due(appointment, 1440)
    make_due(appointment, 15)
    barrier = threading.Barrier(4)
    counts: list[int] = []

    def run() -> None:
        try:
            barrier.wait(timeout=120)
            counts.append(reminders.send_due())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert sum(counts) == 2
    assert PushDelivery.objects.filter(kind="appointment").count() == 4  # 2 reminders x 2 devices
    assert sorted(enqueued.ids) == sorted(
        PushDelivery.objects.filter(kind="appointment").values_list("pk", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_a_run_that_dies_mid_batch_leaves_nothing_and_the_next_sends_once(settings, enqueued, monkeypatch):
    appointment, _, _ = confirmed_appointment(settings)
    make_due(appointment, 1440)
    make_due(appointment, 15)
    real = reminders.push_appointment
    calls = {"n": 0}

    def dies_on_third(**kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("worker killed")  # after the first reminder's outbox rows
        return real(**kw)

    monkeypatch.setattr(reminders, "push_appointment", dies_on_third)
    with pytest.raises(SystemExit):
        reminders.send_due()
    # The transaction rolled back: no outbox row, no reminder marked, nothing queued.
    assert PushDelivery.objects.filter(kind="appointment").count() == 0
    assert AppointmentReminder.objects.filter(sent_at__isnull=False).count() == 0
    assert enqueued.ids == []
    monkeypatch.setattr(reminders, "push_appointment", real)
    assert reminders.send_due() == 2
    assert reminders.send_due() == 0
    assert PushDelivery.objects.filter(kind="appointment").count() == 4


@pytest.mark.django_db
def test_reschedule_moves_and_cancel_removes_pending_reminders(settings, enqueued):
    appointment, patient, _ = confirmed_appointment(settings, days_ahead=5)
    later = appointment.starts_at + dt.timedelta(hours=3)
    services.appointment_reschedule(user=patient, appointment_id=appointment.pk, starts_at=later)
    assert sorted(
        AppointmentReminder.objects.filter(appointment=appointment).values_list("due_at", flat=True)
    ) == [later - dt.timedelta(hours=24), later - dt.timedelta(minutes=15)]
    services.appointment_cancel(user=patient, appointment_id=appointment.pk)
    assert AppointmentReminder.objects.filter(appointment=appointment).count() == 0
    assert tasks.send_reminders() == 0
