"""RabbitMQ as Celery's broker (``CELERY_BROKER_URL=amqp://...``): push, appointment reminders and
doctor payouts through a REAL worker process, including workers killed with SIGKILL holding a task
and in the middle of one (``acks_late``: RabbitMQ delivers an unacknowledged task again as soon as
the worker's connection is gone, with no visibility timeout to wait out and no beat re-queue).

The RabbitMQ of the machine (``HC_TEST_AMQP_URL``, default amqp://guest:guest@127.0.0.1:5672//);
this test worker's own queue and exchange (the root conftest names them per test worker and
process: parallel runs never share one), deleted at the end. FCM and Stripe are faked at their
HTTP boundary only (notifications/tests/worker_boot.py, payments/tests/fake_stripe.py)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from kombu import Connection, pools

from accounts.tests.factories import DeviceFactory, PatientFactory
from appointments import selectors as appointment_selectors
from appointments import services as appointment_services
from appointments.models import AppointmentReminder
from appointments.tests.factories import doctor_with_schedule
from healthchat.celery import app as celery_app
from messaging import services as messaging_services
from messaging.tests.factories import pair
from notifications import services as push_services
from notifications.models import PushDelivery
from notifications.tests.fake_fcm_server import FakeFcmServer
from notifications.tests.test_worker_live import Worker
from payments import payouts
from payments.tests.factories import completed, people
from payments.tests.fake_stripe import FakeStripe

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

AMQP_URL = os.environ.get("HC_TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672//"
GRACE = 5.0  # seconds a push task waits (held by the worker, unacknowledged) before sending


def _queue_name() -> str:
    return str(celery_app.conf.task_default_queue)


def _delete_queue() -> None:
    """This test worker's queue and exchange on RabbitMQ (stale tasks of an aborted run too)."""
    with Connection(AMQP_URL, connect_timeout=5) as conn:
        channel: Any = conn.channel()
        for delete in (channel.queue_delete, channel.exchange_delete):
            try:
                delete(_queue_name())
            except Exception:  # not declared yet: a 404 closes the channel
                channel = conn.channel()


@pytest.fixture(scope="module")
def rabbitmq() -> str:
    try:
        with Connection(AMQP_URL, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # a missing broker is a failure to see, not a skip
        pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL} ({exc!r}): start rabbitmq-server")
    return AMQP_URL


@pytest.fixture(scope="module")
def amqp_app(rabbitmq: str) -> Iterator[str]:
    """The test process publishes to RabbitMQ (not eager), as a server process configured with
    ``CELERY_BROKER_URL=amqp://`` does."""
    _delete_queue()  # stale tasks of an aborted run
    app: Any = celery_app
    previous = {"broker_url": app.conf.broker_url, "task_always_eager": app.conf.task_always_eager}
    app.conf.update(broker_url=rabbitmq, task_always_eager=False)
    _forget_connections(app)  # made for the old broker by an earlier test in this process
    yield rabbitmq
    app.conf.update(previous)
    _forget_connections(app)
    _delete_queue()


def _forget_connections(app: Any) -> None:
    """Drop the app's connection pool and its producer pool (``app.amqp`` caches one built on the
    connection pool of the first publish: after an earlier test published to Redis, tasks would
    still go there), and kombu's global producer pools."""
    pools.reset()  # kombu's producer pools are global, keyed by connection: closed and forgotten
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def broker(amqp_app: str, settings: Any) -> str:
    settings.CELERY_BROKER_URL = amqp_app
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.PUSH_GRACE_SECONDS = GRACE
    return amqp_app


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def stripe_fake(stripe_server: FakeStripe, settings: Any) -> FakeStripe:
    stripe_server.reset()
    settings.PAYMENTS_PROVIDER = "stripe"
    settings.STRIPE_SECRET_KEY = "sk_test_healthchat"
    settings.STRIPE_API_BASE = stripe_server.url
    settings.STRIPE_MAX_NETWORK_RETRIES = 2
    settings.PLATFORM_FEE_PERCENT = 15
    return stripe_server


def worker_env(broker: str, fcm_url: str, stripe_url: str, grace: float) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "healthchat.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "PUSH_BACKEND": "fcm",
        "FIREBASE_CREDENTIALS": "",
        "FIREBASE_PROJECT_ID": "demo-healthchat",
        "PUSH_GRACE_SECONDS": str(grace),
        "HC_TEST_FCM_FAKE": fcm_url,
        "PAYMENTS_PROVIDER": "stripe",
        "STRIPE_SECRET_KEY": "sk_test_healthchat",
        "STRIPE_API_BASE": stripe_url,
    }


def boot(env: dict[str, str], log_path: Path) -> Worker:
    worker = Worker(env, log_path)
    worker.wait_for("ready.", timeout=60)
    assert "amqp://" in worker.log(), worker.log()[-2000:]  # the banner names the transport
    return worker


# --- workers killed: each test starts its own --------------------------------------------------
@pytest.fixture
def fcm_server() -> Iterator[FakeFcmServer]:
    server = FakeFcmServer().start()
    yield server
    server.stop()


@pytest.fixture
def start_worker(
    broker: str, fcm_server: FakeFcmServer, stripe_server: FakeStripe, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    env = worker_env(broker, fcm_server.url, stripe_server.url, GRACE)
    workers: list[Worker] = []

    def start(**extra_env: str) -> Worker:
        workers.append(boot({**env, **extra_env}, tmp_path / f"worker-{len(workers)}.log"))
        return workers[-1]

    yield start
    for worker in workers:  # done with: no warm shutdown to wait out (nothing it holds matters)
        worker.stop(signal.SIGKILL)


# --- one worker for the tests that do not kill it -------------------------------------------------
STEADY_GRACE = 1.0


@pytest.fixture(scope="module")
def steady_fcm() -> Iterator[FakeFcmServer]:
    server = FakeFcmServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def steady_worker(
    amqp_app: str, steady_fcm: FakeFcmServer, stripe_server: FakeStripe, tmp_path_factory: Any
) -> Iterator[Worker]:
    env = worker_env(amqp_app, steady_fcm.url, stripe_server.url, STEADY_GRACE)
    worker = boot(env, tmp_path_factory.mktemp("amqp") / "worker.log")
    yield worker
    worker.stop(signal.SIGKILL)


@pytest.fixture
def steady(broker: str, steady_worker: Worker, steady_fcm: FakeFcmServer, settings: Any) -> Worker:
    settings.PUSH_GRACE_SECONDS = STEADY_GRACE
    with steady_fcm._lock:
        steady_fcm.requests.clear()
    return steady_worker


def wait_until(predicate: Callable[[], bool], timeout: float, message: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(message())


def send(sender: Any, conversation: Any, body: str) -> Any:
    return messaging_services.message_send(
        sender=sender, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body
    ).message


# --- workers killed (first: the steady worker below must not take their tasks) ---------------
def test_worker_killed_holding_the_task_rabbitmq_delivers_it_again_at_once(start_worker, fcm_server):
    """The worker holds the push task (unacknowledged, waiting out the grace period) and is killed:
    RabbitMQ hands the task to the next worker by itself (no beat re-queue); one push."""
    patient, doctor, conversation = pair()
    DeviceFactory(user=patient, fcm_token="amqp-killed-token", installation_id=None)
    first = start_worker()
    message = send(doctor, conversation, "hello")
    first.wait_for("] received")
    first.stop(signal.SIGKILL)
    assert fcm_server.requests == []
    second = start_worker()
    wait_until(lambda: len(fcm_server.requests) >= 1, 30, lambda: f"not redelivered:\n{second.log()[-3000:]}")
    time.sleep(1.0)
    assert len(fcm_server.requests) == 1
    row = PushDelivery.objects.get(message=message)
    assert (row.state, row.attempts) == (PushDelivery.State.SENT, 1)


def test_worker_killed_mid_send_the_task_runs_again_on_the_next_worker(start_worker, fcm_server, settings):
    """``acks_late``: killed while its FCM request is in flight, the task was never acknowledged;
    RabbitMQ delivers it to the next worker, which sends again once the row's lease ran out (FCM
    may have the first: the row says so), without beat."""
    lease = 2.0
    settings.PUSH_SEND_LEASE_SECONDS = lease
    patient, doctor, conversation = pair()
    DeviceFactory(user=patient, fcm_token="amqp-mid-send-token", installation_id=None)
    fcm_server.hold_first = 1  # FCM takes the first push; its answer never reaches the worker
    first = start_worker(PUSH_SEND_LEASE_SECONDS=str(lease), PUSH_GRACE_SECONDS="0.5")
    message = send(doctor, conversation, "hello")
    wait_until(lambda: len(fcm_server.requests) == 1, 30, lambda: f"no push:\n{first.log()[-3000:]}")
    time.sleep(lease + 0.5)  # the lease runs out while the first worker is still mid-send
    first.stop(signal.SIGKILL)
    row = PushDelivery.objects.get(message=message)
    assert (row.state, row.attempts) == (PushDelivery.State.SENDING, 1)
    second = start_worker(PUSH_SEND_LEASE_SECONDS=str(lease))
    wait_until(lambda: len(fcm_server.requests) == 2, 30, lambda: f"not run again:\n{second.log()[-3000:]}")
    wait_until(
        lambda: PushDelivery.objects.get(pk=row.pk).state == PushDelivery.State.SENT,
        10,
        lambda: second.log()[-3000:],
    )
    row.refresh_from_db()
    assert (row.attempts, row.reason) == (2, push_services.LEASE_EXPIRED)
    assert "push_deliver" in second.log()  # the same task, delivered again by RabbitMQ
    time.sleep(1.0)
    assert len(fcm_server.requests) == 2


# --- push, appointment reminders and doctor payouts on one worker ---------------------------
def test_offline_recipient_gets_exactly_one_push_through_a_worker_on_rabbitmq(steady, steady_fcm):
    fcm_server, worker = steady_fcm, steady
    patient, doctor, conversation = pair()
    phone = DeviceFactory(user=patient, fcm_token="amqp-phone-token", installation_id=None)
    message = send(doctor, conversation, "confidential result")
    wait_until(lambda: len(fcm_server.requests) >= 1, 30, lambda: f"no push:\n{worker.log()[-3000:]}")
    time.sleep(1.0)  # anything extra would arrive now
    messages = fcm_server.messages()
    assert len(messages) == 1
    assert messages[0]["token"] == phone.fcm_token
    assert messages[0]["data"]["message_id"] == str(message.pk)
    assert PushDelivery.objects.get(message=message).state == PushDelivery.State.SENT


def test_due_reminders_queued_on_rabbitmq_reach_both_devices_once(steady, steady_fcm, settings):
    fcm_server, worker = steady_fcm, steady
    settings.PAYMENTS_PROVIDER = "development"  # authorised at once: confirmed at booking
    doctor, schedule = doctor_with_schedule(tz="UTC", weekly=[(d, "00:00", "23:40") for d in range(7)])
    patient = PatientFactory.create()
    DeviceFactory.create(user=patient, fcm_token="amqp-reminder-patient", installation_id=None)
    DeviceFactory.create(user=doctor, fcm_token="amqp-reminder-doctor", installation_id=None)
    start = timezone.now() + dt.timedelta(days=3)
    slot = appointment_selectors.free_slots(schedule=schedule, start=start, end=start + dt.timedelta(days=1))[
        0
    ][0]
    appointment = appointment_services.appointment_book(
        patient=patient, doctor_id=doctor.pk, starts_at=slot, kind="video", reason="amqp-secret: cough"
    )
    assert appointment.state == "confirmed"
    AppointmentReminder.objects.filter(appointment=appointment, offset_minutes=1440).update(
        due_at=timezone.now() - dt.timedelta(seconds=1)
    )
    from appointments import tasks as appointment_tasks

    appointment_tasks.send_reminders.delay()  # what beat sends, through RabbitMQ
    appointment_tasks.send_reminders.delay()  # twice (beat restarted): still once each
    wait_until(lambda: len(fcm_server.requests) >= 2, 30, lambda: f"no reminders:\n{worker.log()[-3000:]}")
    time.sleep(1.5)
    messages = fcm_server.messages()
    assert sorted(m["token"] for m in messages) == ["amqp-reminder-doctor", "amqp-reminder-patient"]
    assert all(m["data"]["type"] == "appointment.reminder" for m in messages)
    assert "cough" not in str(fcm_server.requests)


def test_a_pending_payout_is_transferred_by_a_worker_on_rabbitmq(steady, stripe_fake):
    worker = steady
    patient, doctor = people(consultation_fee=3000)
    account, _, _ = payouts.payout_onboarding_start(doctor=doctor)
    consultation = completed(patient, doctor, stripe_fake)
    assert consultation.payout_status == "pending"
    stripe_fake.enable_account(account.account_id)  # onboarding finished; no webhook came
    from payments.tasks import retry_payouts

    retry_payouts.delay(doctor.pk)
    retry_payouts.delay(doctor.pk)  # a duplicate (beat and a webhook at once): one transfer

    def transferred() -> bool:
        consultation.refresh_from_db()
        return consultation.payout_status == "transferred"

    wait_until(transferred, 30, lambda: f"no payout:\n{worker.log()[-3000:]}")
    time.sleep(1.0)
    assert len(stripe_fake.calls("POST", "/v1/transfers")) == 1
