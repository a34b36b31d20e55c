"""Proof 3 (issue 19): a photo uploaded from the console in Chromium (set_input_files, the SDK's
upload with progress) reaches the doctor's console as a preview, and a Python client downloads
exactly the bytes the server stored: byte for byte, and free of the GPS EXIF the original
carried (exiftool is the outside judge, docs/trust.md)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging.models import Attachment, Message
from messaging.tests import media_corpus as mc
from tests.browser import Timings, assert_accessible, screenshot

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def exif(path: Any) -> dict[str, Any]:
    out = subprocess.run(["exiftool", "-json", "-G1", str(path)], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout)[0])


def test_a_photo_sent_from_the_browser_is_downloaded_byte_for_byte_without_metadata(
    signed_in: Any, api: Any, console_server: Any, make_token: Any, tmp_path: Any
) -> None:
    t = Timings()
    patient = PatientFactory.create(display_name="Pat Jones")
    doctor = DoctorFactory.create(display_name="Dr. Ada Martin")
    response = api(patient).post("/api/v1/conversations", {"peer_id": doctor.pk}, format="json")
    conversation_id = response.json()["id"]
    sample = mc.jpeg()
    original = tmp_path / sample.name
    original.write_bytes(sample.data)
    assert any(key.startswith("GPS:") for key in exif(original)), "the sample must carry GPS EXIF"

    doc = signed_in(doctor)
    pat = signed_in(patient)
    for page in (doc, pat):
        page.click(f"#conversation-list li[data-conversation-id='{conversation_id}'] button")
        page.wait_for_selector("#chat-body:not([hidden])")
    t.mark("sign in + open")

    pat.set_input_files("#attachment-input", str(original))
    pat.fill("#message-input", "The rash this morning")
    pat.click("#send")
    preview = doc.locator("#messages li[data-seq='1'] .attachment img.preview")
    expect(preview).to_be_visible()
    doc.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
    assert preview.get_attribute("alt") == sample.name
    expect(doc.locator("#messages li[data-seq='1'] .body")).to_have_text("The rash this morning")
    t.mark("upload + preview")
    screenshot(doc, "console-attachment")
    assert_accessible(doc, "chat with an attachment")

    message = Message.objects.get(conversation_id=conversation_id, seq=1)
    attachment = Attachment.objects.get(message=message)
    with attachment.file.open("rb") as f:
        stored = f.read()
    # the Python client: the doctor's token, over HTTP against the live server
    bearer = {
        "Authorization": f"Bearer {make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number)}"
    }
    link = requests.get(
        f"{console_server.base_url}/api/v1/attachments/{attachment.pk}", headers=bearer, timeout=30
    )
    assert link.status_code == 200, link.text
    link = link.json()
    downloaded = requests.get(link["url"], timeout=30).content
    assert downloaded == stored
    assert hashlib.sha256(downloaded).hexdigest() == link["sha256"] == attachment.sha256
    assert downloaded != sample.data  # the metadata was stripped on upload
    copy = tmp_path / "downloaded.jpg"
    copy.write_bytes(downloaded)
    tags = exif(copy)
    assert not [k for k in tags if k.startswith(("GPS:", "IFD0:", "ExifIFD:", "XMP"))], tags
    assert "HomeAddress" not in json.dumps(tags)
    assert (tags["File:ImageWidth"], tags["File:ImageHeight"]) == (sample.width, sample.height)
    assert [k for k in exif(original) if k.startswith(("GPS:", "IFD0:"))]  # what was there
    t.mark("download + exiftool")
    print(f"\nconsole attachment timings: {t.report()}")
