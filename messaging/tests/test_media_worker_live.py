"""Finding 7 of issue 17, end to end: a real uvicorn server, a real Celery worker on the Redis
broker running ffmpeg, and real WebSocket clients.

The patient uploads a video with its location and author over HTTP; the answer is
``processing``; the worker strips it and the patient's socket gets ``attachment.updated``
(``ready``); the patient sends it over the socket; what the doctor downloads is judged by
``exiftool``. A damaged video ends ``rejected`` the same way, and nothing is served.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from messaging.models import Attachment
from messaging.tests import media_corpus as mc
from messaging.tests.factories import pair
from tests.live import fresh_celery_worker, shared_media_env
from tests.wsclient import WsClient

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-media")


@pytest.fixture(scope="module")
def server(live_server_factory: Any, media_root: Path) -> Any:
    return live_server_factory(shared_media_env(media_root))


@pytest.fixture
def worker(media_root: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with fresh_celery_worker(shared_media_env(media_root), tmp_path / "worker.log", "media-test") as process:
        yield process


def _headers(make_token: Any, user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(uid=user.firebase_uid, phone_number=user.phone_number)}"}


def _upload(server: Any, headers: dict[str, str], sample: mc.Sample) -> dict[str, Any]:
    response = requests.post(
        f"{server.base_url}/api/v1/attachments",
        files={"file": (sample.name, sample.data, "application/octet-stream")},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_worker_strips_the_video_and_the_uploaders_socket_learns_it_is_ready(server, worker, make_token):
    patient, doctor, conversation = pair()
    sample = mc.mp4()
    token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        client = await WsClient.connect(server.ws_url, token)
        uploaded = await asyncio.to_thread(_upload, server, _headers(make_token, patient), sample)
        assert (uploaded["state"], uploaded["rejection"]) == ("processing", None)
        # Before the worker is done the message is refused (or the worker was already faster).
        early = await client.request(
            "message.send",
            {
                "conversation_id": conversation.pk,
                "client_id": str(uuid.uuid4()),
                "attachment_ids": [uploaded["id"]],
            },
        )
        updated = await client.expect(
            "attachment.updated", lambda f: f["data"]["attachment"]["id"] == uploaded["id"], timeout=60
        )
        sent = early
        if early["type"] == "error":
            assert early["error"]["code"] == "attachment_processing"
            sent = await client.request(
                "message.send",
                {
                    "conversation_id": conversation.pk,
                    "client_id": str(uuid.uuid4()),
                    "attachment_ids": [uploaded["id"]],
                },
            )
        await client.close()
        return uploaded, updated["data"]["attachment"], sent

    uploaded, ready, sent = asyncio.run(scenario())
    assert (ready["state"], ready["rejection"]) == ("ready", None)
    assert sent["type"] == "ack", sent
    assert sent["data"]["message"]["attachments"][0]["id"] == uploaded["id"]

    doctor_headers = _headers(make_token, doctor)
    link = requests.get(
        f"{server.base_url}/api/v1/attachments/{uploaded['id']}", headers=doctor_headers, timeout=10
    )
    assert link.status_code == 200, link.text
    data = requests.get(link.json()["url"], timeout=30).content
    assert mc.metadata_problems(data, "mp4") == []
    assert len(data) == ready["size"] == link.json()["size"]
    assert ready["duration"] == pytest.approx(sample.duration, abs=0.15)
    assert (ready["width"], ready["height"]) == (sample.width, sample.height)


def test_a_damaged_video_is_rejected_by_the_worker_and_never_served(server, worker, make_token, media_root):
    patient = pair()[0]
    token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
    damaged = mc.Sample("broken.mp4", mc.mp4().data[:700], "video/mp4", "video")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client = await WsClient.connect(server.ws_url, token)
        uploaded = await asyncio.to_thread(_upload, server, _headers(make_token, patient), damaged)
        updated = await client.expect(
            "attachment.updated", lambda f: f["data"]["attachment"]["id"] == uploaded["id"], timeout=60
        )
        await client.close()
        return uploaded, updated["data"]["attachment"]

    uploaded, rejected = asyncio.run(scenario())
    assert (rejected["state"], rejected["rejection"]) == ("rejected", "corrupt_media")
    row = Attachment.objects.get(pk=uploaded["id"])
    assert (row.state, row.file.name) == ("rejected", "")
    assert not [p for p in (media_root / "attachments" / str(patient.pk)).rglob("*") if p.is_file()]
    link = requests.get(
        f"{server.base_url}/api/v1/attachments/{uploaded['id']}",
        headers=_headers(make_token, patient),
        timeout=10,
    )
    assert (link.json()["state"], link.json()["url"]) == ("rejected", None)
