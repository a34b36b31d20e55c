"""The JavaScript SDK's chat features (clients/js/src: receipts, typing, presence, edits and
history, groups, attachments, consultations) against a live server, with two or three SDK
clients each: this test starts uvicorn and a real Celery worker (ffmpeg strips the uploaded
video, so ``processing`` → ``attachment.updated`` ``ready`` is real), creates a patient and two
verified doctors, mints their tokens, writes a video and a damaged one, and runs
``clients/js/test/features.live.test.js`` with ``HC_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as dj_settings

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory
from healthchat.celery import app as celery_app
from messaging.tests import media_corpus
from tests.live import celery_worker
from tests.sdk import run_node_suite

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "clients" / "js"


def shared_env(media_root: Path) -> dict[str, str]:
    """What the server and the worker share: storage, the broker (not eager), the channel layer."""
    return {
        "MEDIA_ROOT": str(media_root),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_BROKER_URL": str(dj_settings.REDIS_URL),
        "CHANNEL_LAYER_PREFIX": dj_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
    }


def clear_queue() -> None:
    """Only this test worker's Celery queue keys (the Redis database is shared)."""
    client = redis.Redis.from_url(str(dj_settings.REDIS_URL))
    queue = celery_app.conf.task_default_queue
    client.delete(queue, "unacked", "unacked_index", "unacked_mutex", f"_kombu.binding.{queue}")


@pytest.fixture
def media_worker(tmp_path: Path) -> Iterator[Path]:
    """A Celery worker on the Redis broker; yields the media root it shares with the server."""
    media_root = tmp_path / "media"
    media_root.mkdir()
    clear_queue()
    with celery_worker(shared_env(media_root), tmp_path / "worker.log", "sdk-features"):
        yield media_root
    clear_queue()


def test_sdk_features_against_a_live_server(
    live_server_factory: Any, make_token: Any, media_worker: Path, tmp_path: Path
) -> None:
    assert (SDK / "node_modules" / "ws").is_dir(), "run `npm ci` in clients/js (make test does)"
    server = live_server_factory(
        {
            **shared_env(media_worker),
            "HEALTHCHAT_WS_RECONNECT_MIN_MS": "50",
            "HEALTHCHAT_WS_RECONNECT_MAX_MS": "300",
            "PAYMENTS_PROVIDER": "development",
        }
    )
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()
    colleague: User = DoctorFactory.create()
    video = media_corpus.mp4()
    video_path = tmp_path / video.name
    video_path.write_bytes(video.data)
    damaged_path = tmp_path / "broken.mp4"
    damaged_path.write_bytes(video.data[:700])

    def token(user: Any) -> str:
        return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number, lifetime=3600))

    env = dict(os.environ)
    env.update(
        HC_HTTP_URL=server.base_url,
        HC_WS_URL=server.ws_url,
        HC_PATIENT_ID=str(patient.pk),
        HC_DOCTOR_ID=str(doctor.pk),
        HC_COLLEAGUE_ID=str(colleague.pk),
        HC_PATIENT_TOKEN=token(patient),
        HC_DOCTOR_TOKEN=token(doctor),
        HC_COLLEAGUE_TOKEN=token(colleague),
        HC_VIDEO_PATH=str(video_path),
        HC_DAMAGED_VIDEO_PATH=str(damaged_path),
    )
    run_node_suite(["test/features.live.test.js", "test/features.unit.test.js"], env, server, timeout=150)
