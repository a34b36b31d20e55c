"""The export (GET /me/export and ``export_user``) holds the user's calls and the uploads they
never attached to a message, and nothing of anyone else beyond what the user could already see."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from accounts import services as account_services
from accounts.models import User
from accounts.tests.factories import PatientFactory
from calls import selectors as call_selectors
from calls import services as call_services
from messaging import services as messaging_services
from messaging.models import Attachment
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db

SDP = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def upload(user: User, name: str, text: str) -> Attachment:
    file = SimpleUploadedFile(name, text.encode(), content_type="text/plain")
    return messaging_services.attachment_upload(uploader=user, upload=file, name=name)


@pytest.fixture
def life() -> dict[str, Any]:
    """A patient's calls with their doctor (one answered, one missed), an upload sent in a
    message and one never attached; a bystander's call with the same doctor and upload."""
    patient, doctor, conversation = pair()
    answered = call_services.call_start(
        caller=patient, conversation_id=conversation.pk, media="video", sdp=SDP
    ).call
    call_services.call_accept(user=doctor, call_id=answered.pk, sdp=SDP)
    call_services.call_hangup(user=patient, call_id=answered.pk)
    missed = call_services.call_start(
        caller=doctor, conversation_id=conversation.pk, media="audio", sdp=SDP
    ).call
    call_services.call_cancel(user=doctor, call_id=missed.pk)

    sent = upload(patient, "sent-scan.txt", "sent to the doctor")
    messaging_services.message_send(
        sender=patient,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body="see file",
        attachment_ids=[sent.pk],
    )
    unattached = upload(patient, "draft-lab-report.txt", "never sent")

    bystander: User = PatientFactory.create(display_name="Bystander Bea")
    theirs, _ = messaging_services.conversation_open_direct(user=bystander, peer_id=doctor.pk)
    their_call = call_services.call_start(
        caller=bystander, conversation_id=theirs.pk, media="audio", sdp=SDP
    ).call
    call_services.call_cancel(user=bystander, call_id=their_call.pk)
    their_upload = upload(bystander, "bea-private.txt", "bea's")
    return {
        "patient": patient,
        "doctor": doctor,
        "bystander": bystander,
        "calls": [answered, missed],
        "their_call": their_call,
        "sent": sent,
        "unattached": unattached,
        "their_upload": their_upload,
    }


def check(exported: dict[str, Any], life: dict[str, Any]) -> None:
    patient, doctor, bystander = life["patient"], life["doctor"], life["bystander"]
    answered, missed = life["calls"]
    # Calls the user took part in, newest first, exactly as GET /calls shows them.
    assert [c["id"] for c in exported["calls"]] == [missed.pk, answered.pk]
    for call in (answered, missed):
        shown = call_selectors.call_get(user=patient, call_id=call.pk)
        assert exported["calls"][[missed.pk, answered.pk].index(call.pk)] == json.loads(
            json.dumps(call_selectors.call_data(shown))
        )
    first = exported["calls"][1]
    assert first["media"] == "video"
    assert first["state"] == "ended"
    assert {p["user_id"] for p in first["participants"]} == {patient.pk, doctor.pk}
    # Uploads never attached to a message: metadata and how to download them.
    unattached = life["unattached"]
    assert exported["uploads"] == [
        {
            "id": unattached.pk,
            "category": "document",
            "content_type": unattached.content_type,
            "size": unattached.size,
            "sha256": unattached.sha256,
            "name": "draft-lab-report.txt",
            "width": None,
            "height": None,
            "duration": None,
            "created_at": unattached.created_at.isoformat(),
            "download": f"/api/v1/attachments/{unattached.pk}",
        }
    ]
    # The attached one is in the messages, as before.
    sent_files = [a["id"] for m in exported["messaging"]["messages_sent"] for a in m["attachments"]]
    assert sent_files == [life["sent"].pk]
    # Nothing of anyone else beyond what the user could already see (ids of the call's people).
    text = json.dumps(exported)
    assert life["their_call"].pk not in {c["id"] for c in exported["calls"]}
    for secret in (
        doctor.phone_number,
        doctor.firebase_uid,
        doctor.display_name,
        bystander.phone_number,
        bystander.firebase_uid,
        "Bystander Bea",
        "bea-private.txt",
        life["their_upload"].sha256,
    ):
        assert secret not in text


def test_me_export_has_calls_and_unattached_uploads(life, client_for) -> None:
    client = client_for(life["patient"])
    response = client.get("/api/v1/me/export")
    assert response.status_code == 200, response.content
    check(response.json(), life)
    # "download" is the way to the file: the uploader's short-lived link.
    link = client.get(response.json()["uploads"][0]["download"])
    assert link.status_code == 200, link.content
    content = client.get(link.json()["url"])
    assert b"".join(content.streaming_content) == b"never sent"


def test_export_user_command_has_them_too(life) -> None:
    out = io.StringIO()
    call_command("export_user", str(life["patient"].pk), stdout=out)
    check(json.loads(out.getvalue()), life)


def test_the_sections_come_from_the_apps_registry() -> None:
    """accounts does not import calls or messaging: they plug their sections in at start-up."""
    import ast
    from pathlib import Path

    sections = account_services.export_section_names()
    assert {"messaging", "uploads", "calls", "consultations"} <= set(sections)
    root = Path(account_services.__file__).resolve().parent
    upward = {"messaging", "calls", "groups", "payments", "notifications"}
    for path in root.rglob("*.py"):
        if "tests" in path.parts or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not {n.split(".")[0] for n in names} & upward, (path, names)
