"""Live: the appointments sweeps run by a real Celery beat (``celery beat``, the project's
schedule, every second here) and a real Celery worker (Redis broker, not eager).

1. Beat and the worker expire a hold (Stripe asked, the PaymentIntent cancelled), end a doctor's
   no-show (released, apology push), send a due reminder once to both devices and expire an
   unanswered on-demand request.
2. A worker is killed with SIGKILL in the middle of a reminder run (many due reminders, some
   marked sent, not all); a new worker takes over under the same beat: every reminder is sent
   exactly once (push outbox rows counted: one per reminder and device, nothing missing)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as dj_settings
from django.utils import timezone

from accounts.models import Specialty
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from appointments import on_demand, selectors, services
from appointments.models import Appointment, AppointmentReminder, OnDemandRequest
from appointments.tests.factories import doctor_with_schedule
from healthchat.celery import app as celery_app
from notifications.models import PushDelivery
from payments.tests.conftest import post_event
from tests.live import beat_log, celery_beat, celery_worker

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def _clear_queue() -> None:
    """Only this test worker's Celery queue keys (the Redis database is shared)."""
    client = redis.Redis.from_url(str(dj_settings.REDIS_URL))
    queue = celery_app.conf.task_default_queue
    client.delete(queue, "unacked", "unacked_index", "unacked_mutex", f"_kombu.binding.{queue}")


def _env(stripe: Any) -> dict[str, str]:
    return {
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_BROKER_URL": str(dj_settings.REDIS_URL),
        "CHANNEL_LAYER_PREFIX": dj_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "APPOINTMENT_SWEEP_SECONDS": "1",
        "PUSH_BACKEND": "log",
        "PAYMENTS_PROVIDER": "stripe",
        "STRIPE_SECRET_KEY": "sk_test_healthchat",
        "STRIPE_API_BASE": stripe.url,
        "STRIPE_MAX_NETWORK_RETRIES": "2",
        "DATABASE_POOL_MAX_SIZE": "0",
    }


@pytest.fixture
def beat(stripe_fake: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    _clear_queue()
    with celery_beat(_env(stripe_fake), tmp_path, max_interval=1) as process:
        yield process
    _clear_queue()


def _until(check: Callable[[], bool], what: str, timeout: float = 120.0, every: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not done within {timeout} s: {what}"
        time.sleep(every)


def _authorised(stripe_fake: Any, appointment: Appointment) -> Appointment:
    assert appointment.consultation is not None
    intent = stripe_fake.authorize(appointment.consultation.payment_intent_id)
    post_event(stripe_fake.event("payment_intent.amount_capturable_updated", intent))
    appointment.refresh_from_db()
    assert appointment.state == "confirmed"
    return appointment


def test_beat_and_worker_run_the_sweeps(stripe_fake, beat, tmp_path):
    doctor, schedule = doctor_with_schedule(tz="UTC", weekly=[(d, "00:00", "23:40") for d in range(7)])
    DeviceFactory.create(user=doctor)
    start = timezone.now() + dt.timedelta(days=2)
    slots = selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))
    patients = [PatientFactory.create() for _ in range(4)]
    for patient in patients:
        DeviceFactory.create(user=patient)
    # A hold whose card was never authorised, past its time.
    held = services.appointment_book(
        patient=patients[0], doctor_id=doctor.pk, starts_at=slots[0][0], kind="chat"
    )
    Appointment.objects.filter(pk=held.pk).update(hold_expires_at=timezone.now() - dt.timedelta(seconds=1))
    # A checked-in appointment that started 20 minutes ago, never admitted (the doctor's no-show).
    missed = _authorised(
        stripe_fake,
        services.appointment_book(
            patient=patients[1], doctor_id=doctor.pk, starts_at=slots[2][0], kind="chat"
        ),
    )
    began = timezone.now() - dt.timedelta(minutes=20)
    Appointment.objects.filter(pk=missed.pk).update(
        starts_at=began, ends_at=began + dt.timedelta(minutes=20), state="checked_in", checked_in_at=began
    )
    # A confirmed appointment that started 45 minutes ago, nobody checked in (the patient's no-show).
    absent = _authorised(
        stripe_fake,
        services.appointment_book(
            patient=patients[3], doctor_id=doctor.pk, starts_at=slots[6][0], kind="chat"
        ),
    )
    earlier = began - dt.timedelta(minutes=25)  # not overlapping ``missed`` (one doctor)
    Appointment.objects.filter(pk=absent.pk).update(
        starts_at=earlier, ends_at=earlier + dt.timedelta(minutes=20)
    )
    # A confirmed appointment whose 24-hour reminder is due.
    reminded = _authorised(
        stripe_fake,
        services.appointment_book(
            patient=patients[2], doctor_id=doctor.pk, starts_at=slots[4][0], kind="chat"
        ),
    )
    AppointmentReminder.objects.filter(appointment=reminded, offset_minutes=1440).update(
        due_at=timezone.now() - dt.timedelta(seconds=1)
    )
    # An on-demand request nobody took.
    Specialty.objects.get_or_create(slug="gp", defaults={"name": "GP"})
    request = on_demand.request_create(patient=PatientFactory.create(), specialty="gp", kind="chat")
    OnDemandRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    with celery_worker(_env(stripe_fake), tmp_path / "worker.log", "appointments-sweeps"):

        def done() -> bool:
            states = dict(Appointment.objects.values_list("pk", "state"))
            return (
                states[held.pk] == "released"
                and states[missed.pk] == "no_show_doctor"
                and states[absent.pk] == "no_show_patient"
                and AppointmentReminder.objects.filter(appointment=reminded, sent_at__isnull=False).exists()
                and OnDemandRequest.objects.get(pk=request.pk).state == "expired"
            )

        _until(done, "hold released, no-show ended, reminder sent, request expired")
        time.sleep(3)  # several more beat ticks: nothing happens twice
    held.refresh_from_db()
    assert held.consultation is not None
    assert stripe_fake.payment_intent(held.consultation.payment_intent_id)["status"] == "canceled"
    missed.refresh_from_db()
    assert missed.consultation is not None
    assert stripe_fake.payment_intent(missed.consultation.payment_intent_id)["status"] == "canceled"
    apology = PushDelivery.objects.filter(ref__startswith=f"a:{missed.pk}:")
    assert apology.count() == 1  # the patient's one device
    absent.refresh_from_db()
    assert absent.consultation is not None
    # The no-show fee (APPOINTMENT_NO_SHOW_FEE_PERCENT, 100 by default) was captured at Stripe.
    assert stripe_fake.payment_intent(absent.consultation.payment_intent_id)["status"] == "succeeded"
    assert PushDelivery.objects.filter(ref__startswith=f"m:{absent.pk}:").count() == 1
    reminder_rows = PushDelivery.objects.filter(ref__startswith=f"r:{reminded.pk}:")
    assert reminder_rows.count() == 2  # the patient's and the doctor's device, once each
    assert "Task appointments.tasks.send_reminders" in (tmp_path / "worker.log").read_text(errors="replace")
    assert "appointments.tasks.expire_holds" in beat_log(tmp_path)


def test_a_worker_killed_mid_reminder_run_sends_each_reminder_once(stripe_fake, beat, tmp_path):
    count = 1500  # 8 batches of 200: a run takes a while, so the kill lands inside it
    doctor = DoctorFactory.create()
    patient = PatientFactory.create()
    DeviceFactory.create(user=doctor)
    DeviceFactory.create(user=patient)
    base = timezone.now() + dt.timedelta(days=1)
    appointments = Appointment.objects.bulk_create(
        Appointment(
            doctor=doctor,
            patient=patient,
            kind="chat",
            starts_at=base + dt.timedelta(minutes=30 * i),
            ends_at=base + dt.timedelta(minutes=30 * i + 20),
            state="confirmed",
        )
        for i in range(count)
    )
    due = timezone.now() - dt.timedelta(seconds=1)
    AppointmentReminder.objects.bulk_create(
        AppointmentReminder(appointment=a, offset_minutes=1440, due_at=due) for a in appointments
    )
    unsent = AppointmentReminder.objects.filter(sent_at__isnull=True)

    with celery_worker(_env(stripe_fake), tmp_path / "worker-1.log", "reminders-killed") as first:
        _until(lambda: unsent.count() < count, "the first worker started sending", timeout=180, every=0.05)
        os.kill(first.pid, signal.SIGKILL)  # mid-run: some reminders sent, the rest not yet
        # Dead (a zombie until the context manager reaps it, so its process group still exists).
        _until(lambda: Path(f"/proc/{first.pid}/stat").read_text().split(")")[-1].split()[0] == "Z", "killed")
    sent_before = count - unsent.count()
    assert 0 < sent_before < count, f"the kill was not mid-run ({sent_before} of {count} sent)"
    print(f"killed after {sent_before} of {count} reminders were sent")
    assert PushDelivery.objects.filter(ref__startswith="r:").count() == 2 * sent_before  # batches are atomic

    with celery_worker(_env(stripe_fake), tmp_path / "worker-2.log", "reminders-after"):
        _until(lambda: not unsent.exists(), "every reminder sent", timeout=300)
        time.sleep(3)  # more beat ticks find nothing
    rows = PushDelivery.objects.filter(ref__startswith="r:")
    assert rows.count() == 2 * count  # each reminder to both devices
    assert len(set(rows.values_list("ref", "device_id"))) == 2 * count  # none twice
    assert set(rows.values_list("ref", flat=True)) == {
        f"r:{a.pk}:{int(a.starts_at.timestamp())}:1440" for a in appointments
    }
