"""End to end with real parts: a real uvicorn server and a real Celery worker on the Redis broker.

The doctor accepts a paid consultation over HTTP: the capture writes the charge, the receipt is
queued after commit and rendered by the worker; the patient finds it in ``GET documents``,
polls it to ``ready`` and downloads it through its signed link. Then the patient asks for a
summary (202), polls it and downloads it. ``pdftotext`` judges both.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from documents.tests.helpers import pdf_text, people
from payments import booking
from tests.live import fresh_celery_worker, shared_media_env

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("documents-media")


def _shared_env(media_root: Path) -> dict[str, str]:
    """What the server and the worker share (storage, the broker, the channel layer), the issuer."""
    return {
        **shared_media_env(media_root),
        "PAYMENTS_PROVIDER": "development",
        "HEALTHCHAT_PLATFORM_LEGAL_NAME": "Healthchat Live Ltd",
        "HEALTHCHAT_TAX_RATE": "20",
    }


@pytest.fixture(scope="module")
def server(live_server_factory: Any, media_root: Path) -> Any:
    return live_server_factory(_shared_env(media_root))


@pytest.fixture
def worker(media_root: Path, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with fresh_celery_worker(_shared_env(media_root), tmp_path / "worker.log", "documents-test") as process:
        yield process


def _until(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, value
        time.sleep(0.2)


def test_the_worker_renders_the_receipt_of_a_capture_and_a_requested_summary(
    server: Any, worker: Any, make_token: Any, media_root: Path
) -> None:
    patient, doctor = people()
    consultation = booking.consultation_request(patient=patient, doctor_id=doctor.pk, kind="video", reason="")

    def headers(user: Any) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {make_token(uid=user.firebase_uid, phone_number=user.phone_number)}"
        }

    accepted = requests.post(
        f"{server.base_url}/api/v1/consultations/{consultation.pk}/accept",
        json={},
        headers=headers(doctor),
        timeout=30,
    )
    assert accepted.status_code == 200, accepted.text

    def receipts() -> list[dict[str, Any]]:
        response = requests.get(
            f"{server.base_url}/api/v1/documents?kind=receipt", headers=headers(patient), timeout=10
        )
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    listed = _until(receipts, lambda rows: bool(rows) and rows[0]["status"] == "ready")
    (receipt,) = listed
    assert receipt["payment"]["kind"] == "charge"
    assert receipt["requested_at"]
    link = requests.get(
        f"{server.base_url}/api/v1/documents/{receipt['id']}", headers=headers(patient), timeout=10
    )
    data = requests.get(link.json()["url"], timeout=30)
    assert data.status_code == 200
    assert data.headers["Content-Type"] == "application/pdf"
    text = pdf_text(data.content)
    assert "Payment receipt" in text
    assert "Amount paid 30.00 GBP" in text
    assert "of which VAT (20 %) 5.00 GBP" in text
    assert "Healthchat Live Ltd" in text
    assert f"Video consultation #{consultation.pk} with Dr Grace Hopper" in text
    # The file the worker stored is where the server serves it from.
    assert [p.name for p in (media_root / "documents" / str(patient.pk)).iterdir()] == [
        f"{receipt['id']}-{receipt['sha256'][:24]}.pdf"
    ]

    asked = requests.post(
        f"{server.base_url}/api/v1/documents",
        json={"kind": "consultation_summary", "consultation_id": consultation.pk},
        headers=headers(patient),
        timeout=30,
    )
    assert asked.status_code == 202, asked.text
    summary_id = asked.json()["id"]
    ready = _until(
        lambda: requests.get(
            f"{server.base_url}/api/v1/documents/{summary_id}", headers=headers(doctor), timeout=10
        ).json(),
        lambda body: body["status"] == "ready",
    )
    text = pdf_text(requests.get(ready["url"], timeout=30).content)
    assert "Consultation summary" in text
    assert "Patient Ada Lovelace" in text
