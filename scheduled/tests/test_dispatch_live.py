"""Scheduled messages survive worker and beat restarts, end to end: real Celery worker and beat
processes on the Redis broker and this test's PostgreSQL database.

1. A due message's task reaches a worker, which claims the row and starts the send; the send waits
   on the conversation's row lock (held by this test), and the worker is killed (SIGKILL) right
   there, inside its transaction. Nothing is sent and the row is still pending (the transaction
   died with the worker).
2. A new worker and a beat start: the beat's sweep sends the message, once.
3. Another message falls due while neither worker nor beat runs; both start again: it is sent,
   once. No message is ever sent twice.

And a message bound to a consultation that has ended when it is due is refused
(``consultation_closed``) by the real worker; the author's socket and phone are told.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from django.conf import settings as dj_settings
from django.db import connection
from django.utils import timezone

from healthchat.celery import app as celery_app
from messaging import services as messaging_services
from messaging.models import Message
from messaging.tests.factories import pair
from scheduled import services
from scheduled.models import ScheduledMessage
from tests.live import celery_beat, celery_worker

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _env() -> dict[str, str]:
    return {
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_BROKER_URL": str(dj_settings.REDIS_URL),
        "CHANNEL_LAYER_PREFIX": dj_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "SCHEDULED_MESSAGE_SWEEP_SECONDS": "1",
    }


def _clear_queue() -> None:
    client = redis.Redis.from_url(str(dj_settings.REDIS_URL))
    queue = celery_app.conf.task_default_queue
    client.delete(queue, "unacked", "unacked_index", "unacked_mutex", f"_kombu.binding.{queue}")


def _dsn() -> str:
    db = connection.settings_dict
    return f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _wait(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _due(author: Any, conversation_id: int, body: str) -> ScheduledMessage:
    """Scheduled for later, then made due (as if its time had come)."""
    row, _ = services.scheduled_create(
        author=author, conversation_id=conversation_id, body=body, send_at=timezone.now() + timedelta(hours=1)
    )
    ScheduledMessage.objects.filter(pk=row.pk).update(send_at=timezone.now() - timedelta(seconds=1))
    return row


def _lock_waiters(admin: psycopg.Connection[Any]) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


def _sent(conversation_id: int, body: str) -> int:
    return Message.objects.filter(conversation_id=conversation_id, body=body).count()


def test_a_worker_killed_mid_send_and_restarts_of_worker_and_beat_send_each_message_once(
    tmp_path: Path,
) -> None:
    _patient, doctor, conversation = pair()
    first = _due(doctor, conversation.pk, "Take your second dose at 20:00")
    _clear_queue()
    admin = psycopg.connect(_dsn(), autocommit=True)
    holder = psycopg.connect(_dsn())
    try:
        # 1. The conversation's lock is ours: the worker's send will wait for it, mid-transaction.
        holder.execute("SELECT id FROM messaging_conversation WHERE id = %s FOR UPDATE", [conversation.pk])
        with celery_worker(_env(), tmp_path / "worker-1.log", "scheduled-1") as worker:
            celery_app.send_task("scheduled.tasks.dispatch_scheduled", args=[first.pk])
            _wait(lambda: _lock_waiters(admin) >= 1, "the worker's send to wait on the conversation lock")
            # The worker holds the scheduled row: another dispatcher would skip it.
            claimed = admin.execute(
                "SELECT id FROM scheduled_scheduledmessage WHERE id = %s FOR UPDATE SKIP LOCKED", [first.pk]
            ).fetchall()
            assert claimed == []
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        holder.rollback()  # let the orphaned database session run on: it has no client to commit
        _wait(lambda: _lock_waiters(admin) == 0, "the dead worker's session to end")
        _wait(
            lambda: (
                admin.execute(
                    "SELECT id FROM scheduled_scheduledmessage WHERE id = %s FOR UPDATE SKIP LOCKED",
                    [first.pk],
                ).fetchall()
                != []
            ),
            "the dead worker's transaction to roll back",
        )
        assert _sent(conversation.pk, first.body) == 0
        assert ScheduledMessage.objects.get(pk=first.pk).state == "pending"

        # 2. A new worker and a beat: the sweep sends it, once.
        with celery_worker(_env(), tmp_path / "worker-2.log", "scheduled-2"), celery_beat(_env(), tmp_path):
            _wait(lambda: ScheduledMessage.objects.get(pk=first.pk).state == "sent", "the sweep to send it")
            time.sleep(3)  # a few more sweeps: nothing more is sent
        row = ScheduledMessage.objects.get(pk=first.pk)
        assert _sent(conversation.pk, "Take your second dose at 20:00") == 1
        assert row.message_id == Message.objects.get(conversation=conversation).pk

        # 3. Due while nothing runs; worker and beat start again: sent, once.
        second = _due(doctor, conversation.pk, "How is the rash today?")
        time.sleep(1)
        assert _sent(conversation.pk, second.body) == 0
        with celery_worker(_env(), tmp_path / "worker-3.log", "scheduled-3"), celery_beat(_env(), tmp_path):
            _wait(
                lambda: ScheduledMessage.objects.get(pk=second.pk).state == "sent",
                "the restarted beat's sweep",
            )
            time.sleep(3)
        assert _sent(conversation.pk, "How is the rash today?") == 1
        assert list(
            Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", "body")
        ) == [
            (1, "Take your second dose at 20:00"),
            (2, "How is the rash today?"),
        ]
    finally:
        holder.close()
        admin.close()
        _clear_queue()


def test_a_consultation_closed_meanwhile_refuses_it_on_a_real_worker_and_tells_the_author(
    tmp_path: Path, live_server_factory: Any, make_token: Any
) -> None:
    """Issue 24's example end to end: a uvicorn server, a real Celery worker and beat. A doctor
    schedules two messages, each in a consultation; one consultation ends (completed, its
    follow-up window over) before the message is due. The beat's sweep sends the other one and
    refuses this one (``consultation_closed``); the doctor's socket gets
    ``scheduled_message.updated`` for both, and their phone one push without the text."""
    from accounts.tests.factories import DeviceFactory
    from notifications.models import PushDelivery
    from payments.models import Consultation
    from payments.tests.factories import requested
    from tests.wsclient import WsClient

    server = live_server_factory({"PUSH_BACKEND": "log"})
    closing_patient, doctor, closing_conversation = pair()
    closing = requested(closing_patient, doctor)
    other_patient = pair()[0]
    other_conversation, _ = messaging_services.conversation_open_direct(user=other_patient, peer_id=doctor.pk)
    staying = requested(other_patient, doctor)
    assert (closing.conversation_id, staying.conversation_id) == (
        closing_conversation.pk,
        other_conversation.pk,
    )
    DeviceFactory(user=doctor, fcm_token="doctor-phone", installation_id=None)
    refused, _ = services.scheduled_create(
        author=doctor,
        conversation_id=closing_conversation.pk,
        body="Take your second dose at 20:00",
        send_at=timezone.now() + timedelta(hours=1),
    )
    kept, _ = services.scheduled_create(
        author=doctor,
        conversation_id=other_conversation.pk,
        body="How is the rash today?",
        send_at=timezone.now() + timedelta(hours=1),
    )
    now = timezone.now()
    Consultation.objects.filter(pk=closing.pk).update(
        state="completed",
        accepted_at=now - timedelta(days=9),
        completed_at=now - timedelta(days=8),
        closes_at=now - timedelta(minutes=1),
    )
    token = make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number)

    def make_due() -> None:
        try:
            ScheduledMessage.objects.filter(pk__in=[refused.pk, kept.pk]).update(
                send_at=timezone.now() - timedelta(seconds=1)
            )
        finally:
            connection.close()

    async def scenario() -> dict[int, dict[str, Any]]:
        client = await WsClient.connect(server.ws_url, token)
        try:
            await asyncio.to_thread(make_due)
            told: dict[int, dict[str, Any]] = {}
            while len(told) < 2:
                frame = await client.expect(
                    "scheduled_message.updated",
                    lambda f: f["data"]["scheduled_message"]["state"] != "pending",
                    timeout=60,
                )
                summary = frame["data"]["scheduled_message"]
                told[summary["id"]] = summary
            return told
        finally:
            await client.close()

    _clear_queue()
    try:
        with (
            celery_worker(_env(), tmp_path / "worker.log", "scheduled-closed"),
            celery_beat(_env(), tmp_path),
        ):
            told = asyncio.run(scenario())
            _wait(
                lambda: PushDelivery.objects.filter(kind="scheduled.failed", state="sent").exists(),
                "the push to the author's phone",
            )
            time.sleep(2)  # more sweeps: nothing changes, nothing is pushed twice
    finally:
        _clear_queue()

    assert (told[refused.pk]["state"], told[refused.pk]["failure_code"], told[refused.pk]["message_id"]) == (
        "failed",
        "consultation_closed",
        None,
    )
    assert told[refused.pk]["consultation_id"] == closing.pk
    assert (told[kept.pk]["state"], told[kept.pk]["consultation_id"]) == ("sent", staying.pk)
    assert _sent(closing_conversation.pk, "Take your second dose at 20:00") == 0
    assert _sent(other_conversation.pk, "How is the rash today?") == 1
    refused.refresh_from_db()
    assert (refused.state, refused.failure_code, refused.body) == (
        "failed",
        "consultation_closed",
        "Take your second dose at 20:00",
    )
    [delivery] = PushDelivery.objects.filter(kind="scheduled.failed")
    assert (delivery.device.user_id, delivery.ref) == (doctor.pk, f"{refused.pk}:consultation_closed")
    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "kind=scheduled.failed" in worker_log
    assert '"failure_code": "consultation_closed"' in worker_log
    assert "second dose" not in worker_log
