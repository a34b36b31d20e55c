"""End to end with a REAL Celery worker process on the Redis broker.

The test process sends a message through the messaging service; the push task goes through
Redis to a ``celery -A healthchat worker`` subprocess on the same test database, whose
firebase-admin sends to a fake FCM server on 127.0.0.1 (``worker_boot.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection

from accounts.tests.factories import DeviceFactory
from healthchat.celery import app as celery_app
from messaging import services as messaging_services
from messaging.tests.factories import pair
from notifications import services
from notifications.models import PushDelivery

from .fake_fcm_server import FakeFcmServer

ROOT = Path(__file__).resolve().parents[2]
GRACE = 5.0  # wide enough that a loaded CI machine still kills the worker inside it

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


class Worker:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        args = [
            sys.executable,
            str(ROOT / "notifications" / "tests" / "worker_boot.py"),
            "-A",
            "healthchat",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            f"--hostname=push-test-{uuid.uuid4().hex[:8]}@%h",
        ]
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"worker log never showed {text!r}:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture
def fcm_server() -> Iterator[FakeFcmServer]:
    server = FakeFcmServer().start()
    yield server
    server.stop()


def _clear_queue(url: str) -> None:
    """Drop this test worker's Celery queue keys only (the root conftest gives each test worker
    its own queue): other test workers share the Redis database, so it is never flushed."""
    client = redis.Redis.from_url(url)
    queue = celery_app.conf.task_default_queue
    client.delete(queue, "unacked", "unacked_index", "unacked_mutex", f"_kombu.binding.{queue}")


@pytest.fixture
def broker(settings: Any) -> Iterator[str]:
    """This test's Redis database as a real broker: the test process publishes, not eager."""
    url = settings.REDIS_URL
    _clear_queue(url)  # stale tasks from an earlier, aborted run
    settings.PUSH_GRACE_SECONDS = GRACE
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    yield url
    celery_app.conf.task_always_eager = previous
    _clear_queue(url)


@pytest.fixture
def start_worker(broker: str, fcm_server: FakeFcmServer, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="healthchat.settings.test",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=broker,
        CELERY_BROKER_URL=broker,
        CELERY_TASK_ALWAYS_EAGER="false",
        PUSH_BACKEND="fcm",
        FIREBASE_CREDENTIALS="",
        FIREBASE_PROJECT_ID="demo-healthchat",
        PUSH_GRACE_SECONDS=str(GRACE),
        HC_TEST_FCM_FAKE=fcm_server.url,
    )
    workers: list[Worker] = []

    def start(**extra_env: str) -> Worker:
        worker = Worker({**env, **extra_env}, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        worker.wait_for("ready.")
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(message)


def send(sender: Any, conversation: Any, body: str) -> Any:
    return messaging_services.message_send(
        sender=sender, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body
    ).message


def test_offline_recipient_gets_exactly_one_push_through_a_real_worker(start_worker, fcm_server):
    patient, doctor, conversation = pair()
    phone = DeviceFactory(user=patient, fcm_token="live-phone-token", installation_id=None)
    DeviceFactory(user=doctor, fcm_token="live-sender-token", installation_id=None)
    worker = start_worker()

    message = send(doctor, conversation, "confidential result")
    wait_until(
        lambda: len(fcm_server.requests) >= 1, 20, f"no push reached the fake:\n{worker.log()[-3000:]}"
    )
    time.sleep(1.0)  # anything extra would arrive now

    messages = fcm_server.messages()
    assert len(messages) == 1
    assert messages[0]["token"] == phone.fcm_token
    assert messages[0]["data"]["message_id"] == str(message.pk)
    assert "confidential" not in str(fcm_server.requests)
    assert fcm_server.requests[0]["path"] == "/v1/projects/demo-healthchat/messages:send"
    row = PushDelivery.objects.get(message=message)
    assert row.state == PushDelivery.State.SENT
    assert row.fcm_message_id == "projects/demo-healthchat/messages/fake-1"


def test_worker_killed_mid_task_then_restarted_sends_once(start_worker, fcm_server):
    patient, doctor, conversation = pair()
    DeviceFactory(user=patient, fcm_token="live-killed-token", installation_id=None)
    first = start_worker()

    message = send(doctor, conversation, "hello")
    # The worker holds the task (acks_late, waiting out the grace period) ... and dies.
    first.wait_for("] received")  # "Task notifications.tasks.push_deliver[<id>] received"
    first.stop(signal.SIGKILL)
    time.sleep(GRACE + 0.5)
    assert fcm_server.requests == []
    row = PushDelivery.objects.get(message=message)
    assert row.state == PushDelivery.State.PENDING

    second = start_worker()
    # Beat's job: rows due and still open are queued again (the broker would only redeliver the
    # unacknowledged task after its visibility timeout).
    assert services.push_requeue(older_than=0) == 1
    wait_until(lambda: len(fcm_server.requests) >= 1, 20, f"no push after restart:\n{second.log()[-3000:]}")
    # Beat runs again, and so does a late redelivery: nothing more is sent.
    services.push_requeue(older_than=0)
    from notifications import tasks

    tasks.push_deliver.apply_async(args=([row.pk],))
    time.sleep(2.0)
    assert len(fcm_server.requests) == 1
    row.refresh_from_db()
    assert (row.state, row.attempts) == (PushDelivery.State.SENT, 1)


def test_worker_killed_mid_send_then_restarted_sends_again_once_and_the_row_says_so(
    start_worker, fcm_server, settings
):
    """The gap the test above leaves: FCM has the push, the worker dies before recording it.
    FCM has no idempotency key, so the row is sent again once its lease runs out, with the same
    collapse key and tag (Android shows one notification), and the row says it may be twice."""
    lease = 3.0
    settings.PUSH_SEND_LEASE_SECONDS = lease
    patient, doctor, conversation = pair()
    DeviceFactory(user=patient, fcm_token="live-mid-send-token", installation_id=None)
    fcm_server.hold_first = 1  # FCM takes the first push but its answer never reaches the worker
    first = start_worker(PUSH_SEND_LEASE_SECONDS=str(lease))

    message = send(doctor, conversation, "hello")
    wait_until(lambda: len(fcm_server.requests) == 1, 20, f"no push reached the fake:\n{first.log()[-3000:]}")
    first.stop(signal.SIGKILL)
    row = PushDelivery.objects.get(message=message)
    assert (row.state, row.attempts) == (PushDelivery.State.SENDING, 1)
    assert services.push_requeue(older_than=0) == 0  # a live worker may still be sending it

    second = start_worker(PUSH_SEND_LEASE_SECONDS=str(lease))
    # Beat, every minute in production: the row is queued again once the lease has run out.
    wait_until(lambda: services.push_requeue(older_than=0) == 1, 20, "the lease never ran out")
    wait_until(lambda: len(fcm_server.requests) == 2, 20, f"not sent again:\n{second.log()[-3000:]}")
    services.push_requeue(older_than=0)  # beat again, and a late redelivery: nothing more
    from notifications import tasks

    tasks.push_deliver.apply_async(args=([row.pk],))
    time.sleep(2.0)
    assert len(fcm_server.requests) == 2
    before, again = fcm_server.messages()
    # Same token, data, collapse key and tag (only the APNs expiry moves): shown once.
    for part in ("token", "data", "notification", "android"):
        assert before.get(part) == again.get(part), part
    assert again["android"]["collapse_key"] == f"conversation-{conversation.pk}"
    assert again["android"]["notification"]["tag"] == f"conversation-{conversation.pk}"
    row.refresh_from_db()
    assert (row.state, row.attempts, row.reason) == (PushDelivery.State.SENT, 2, services.LEASE_EXPIRED)


@pytest.fixture(scope="module")
def server(live_server_factory):
    """A real uvicorn process that publishes push tasks to the Redis broker (not eager)."""
    return live_server_factory({"CELERY_TASK_ALWAYS_EAGER": "false", "PUSH_GRACE_SECONDS": str(GRACE)})


def test_socket_delivered_device_gets_no_push_offline_one_does(server, start_worker, fcm_server, make_token):
    """Sent over the socket of a real server process: the recipient whose app acknowledges the
    message on its socket within the grace period gets no push; the offline one gets one."""
    import asyncio

    from accounts.tests.factories import PatientFactory
    from messaging.services import conversation_open_direct
    from tests.wsclient import WsClient

    online, doctor, with_online = pair()
    offline = PatientFactory()
    with_offline, _ = conversation_open_direct(user=offline, peer_id=doctor.pk)
    online_device = DeviceFactory(user=online, fcm_token="live-online-token", installation_id=None)
    offline_device = DeviceFactory(user=offline, fcm_token="live-offline-token", installation_id=None)
    start_worker()

    def token(user):
        return make_token(uid=user.firebase_uid, phone_number=user.phone_number)

    async def scenario():
        app = await WsClient.connect(server.ws_url, token(online), device_id=online_device.pk)
        sender = await WsClient.connect(server.ws_url, token(doctor))
        await sender.send_message(with_online.pk, "for the online patient")
        await sender.send_message(with_offline.pk, "for the offline patient")
        got = await app.expect("message.new")
        seq = got["data"]["message"]["seq"]
        ack = await app.request("message.delivered", {"conversation_id": with_online.pk, "seq": seq})
        assert ack["type"] == "ack"
        await asyncio.sleep(GRACE + 2.5)  # the grace period ends; the worker decides
        await app.close()
        await sender.close()

    asyncio.run(scenario())
    wait_until(lambda: len(fcm_server.requests) >= 1, 10, "no push for the offline patient")
    time.sleep(1.0)
    assert [m["token"] for m in fcm_server.messages()] == [offline_device.fcm_token]
    assert "patient" not in str(fcm_server.requests)
    reasons = dict(PushDelivery.objects.values_list("device_id", "reason"))
    assert reasons == {online_device.pk: "delivered", offline_device.pk: ""}
