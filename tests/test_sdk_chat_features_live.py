"""The JavaScript SDK's helpers for issue 24's chat features (reactions, pins, mentions, search,
scheduled messages, group avatars) and issue 23's ratings, against a live uvicorn server: this test
creates a patient and a verified doctor with a completed consultation, writes a PNG, mints their
tokens and runs ``clients/js/test/chat-features.live.test.js`` with ``node --test``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory
from ratings.tests.factories import completed
from tests.authz import png
from tests.sdk import run_node_suite

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SDK = Path(__file__).resolve().parent.parent / "clients" / "js"


def test_sdk_chat_feature_helpers_against_a_live_server(
    live_server_factory: Any, make_token: Any, tmp_path: Path
) -> None:
    assert (SDK / "node_modules" / "ws").is_dir(), "run `npm ci` in clients/js (make test does)"
    server = live_server_factory({"PAYMENTS_PROVIDER": "development", "MEDIA_ROOT": str(tmp_path / "media")})
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()
    consultation = completed(patient, doctor)
    image = tmp_path / "team.png"
    image.write_bytes(png())

    def token(user: Any) -> str:
        return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number, lifetime=3600))

    env = dict(os.environ)
    env.update(
        HC_HTTP_URL=server.base_url,
        HC_WS_URL=server.ws_url,
        HC_PATIENT_ID=str(patient.pk),
        HC_DOCTOR_ID=str(doctor.pk),
        HC_PATIENT_TOKEN=token(patient),
        HC_DOCTOR_TOKEN=token(doctor),
        HC_CONSULTATION_ID=str(consultation.pk),
        HC_IMAGE_PATH=str(image),
    )
    run_node_suite(["test/chat-features.live.test.js"], env, server, timeout=150, passes=5)
