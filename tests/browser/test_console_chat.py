"""Proof 1 (issue 19): a doctor in Chromium and a patient in a second browser context chat both
ways through the console (the SDK over a live server); the patient's context goes offline
mid-conversation, and what both sides sent meanwhile arrives after the reconnect exactly once and
in order (the DOM and the database agree); receipts and typing show on both screens. Also: the
conversation list's unread count and presence, history paging, axe on the list/chat screens, and
the screenshots of them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging.models import Message
from messaging.services import message_send
from tests.browser import Timings, assert_accessible, screenshot

pytestmark = [pytest.mark.live, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def open_conversation(api: Any, patient: Any, doctor: Any) -> int:
    response = api(patient).post("/api/v1/conversations", {"peer_id": doctor.pk}, format="json")
    assert response.status_code in (200, 201), response.content
    return int(response.json()["id"])


def bodies(page: Any) -> list[str]:
    return page.eval_on_selector_all("#messages li[data-seq] .body", "els => els.map(e => e.textContent)")


def seqs(page: Any) -> list[int]:
    return [
        int(s)
        for s in page.eval_on_selector_all("#messages li[data-seq]", "els => els.map(e => e.dataset.seq)")
    ]


def open_chat(page: Any, conversation_id: int) -> None:
    page.click(f"#conversation-list li[data-conversation-id='{conversation_id}'] button")
    page.wait_for_selector("#chat-body:not([hidden])")


def send(page: Any, text: str) -> None:
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")


def test_doctor_and_patient_chat_through_an_offline_spell(signed_in: Any, api: Any) -> None:
    t = Timings()
    patient = PatientFactory.create(display_name="Pat Jones")
    doctor = DoctorFactory.create(display_name="Dr. Ada Martin")
    conversation_id = open_conversation(api, patient, doctor)
    # history before the console opens: 55 messages, so the chat pages (latest 50, then older)
    for i in range(55):
        message_send(sender=patient, conversation_id=conversation_id, client_id=uuid.uuid4(), body=f"old {i}")
    t.mark("setup")

    doc = signed_in(doctor)
    pat = signed_in(patient)
    t.mark("sign in both")
    row = doc.locator(f"#conversation-list li[data-conversation-id='{conversation_id}']")
    row.locator(".badge").wait_for()
    assert row.locator(".badge").get_attribute("data-unread") == "55"
    row.locator("[data-presence='online']").wait_for()  # the patient's console is connected
    screenshot(doc, "console-conversations")
    assert_accessible(doc, "conversation list")

    open_chat(doc, conversation_id)
    expect(doc.locator("#messages li[data-seq]")).to_have_count(50)
    assert seqs(doc) == list(range(6, 56))
    doc.click("#load-older")
    expect(doc.locator("#messages li[data-seq]")).to_have_count(55)
    assert seqs(doc) == list(range(1, 56))
    assert doc.locator("#load-older").is_hidden()
    row.locator(".badge").wait_for(state="detached")
    open_chat(pat, conversation_id)
    expect(pat.locator("#messages li[data-seq]")).to_have_count(50)
    pat.click("#load-older")
    expect(pat.locator("#messages li[data-seq]")).to_have_count(55)
    t.mark("open chats + paging")

    # typing and a message each way, with receipts on both screens
    doc.fill("#message-input", "Hello Pat, how are you feeling")
    expect(pat.locator("#typing")).to_contain_text("Dr. Ada Martin is typing")
    doc.press("#message-input", "Enter")
    expect(pat.locator("#messages li[data-seq='56'] .body")).to_have_text("Hello Pat, how are you feeling")
    expect(doc.locator("#messages li[data-seq='56']")).to_have_attribute("data-status", "read")
    expect(pat.locator("#typing")).to_have_text("")
    pat.fill("#message-input", "Better, thank you")
    expect(doc.locator("#typing")).to_contain_text("Pat Jones is typing")
    pat.press("#message-input", "Enter")
    expect(doc.locator("#messages li[data-seq='57'] .body")).to_have_text("Better, thank you")
    expect(pat.locator("#messages li[data-seq='57']")).to_have_attribute("data-status", "read")
    t.mark("typing, both ways, receipts")
    screenshot(doc, "console-chat-doctor")
    screenshot(pat, "console-chat-patient")
    assert_accessible(doc, "chat")

    # the patient's network drops; both sides write meanwhile
    pat.context.set_offline(True)
    expect(pat.locator("#connection")).not_to_have_text("online")
    for i in range(3):
        send(doc, f"while you were away {i}")
    for i in range(2):
        send(pat, f"written offline {i}")
    expect(pat.locator("#messages li[data-status='sending']")).to_have_count(2)
    expect(doc.locator("#messages li[data-seq]")).to_have_count(60)
    assert pat.locator("#messages li[data-seq]").count() == 57  # nothing reached the patient
    t.mark("offline writes")
    pat.context.set_offline(False)
    expect(pat.locator("#connection")).to_have_text("online")
    expect(pat.locator("#messages li[data-seq]")).to_have_count(62)
    expect(doc.locator("#messages li[data-seq]")).to_have_count(62)
    expect(pat.locator("#messages li[data-status='sending']")).to_have_count(0)
    t.mark("reconnect + catch-up")

    stored = list(Message.objects.filter(conversation_id=conversation_id).order_by("seq"))
    assert [m.seq for m in stored] == list(range(1, 63))
    assert len({m.client_id for m in stored}) == 62  # no duplicate
    expected = [m.body for m in stored]
    # exactly once and in order on both screens, the same as the database
    assert seqs(doc) == seqs(pat) == list(range(1, 63))
    assert bodies(doc) == bodies(pat) == expected
    assert expected[57:60] == [f"while you were away {i}" for i in range(3)]
    assert expected[60:] == [f"written offline {i}" for i in range(2)]
    # receipts after the reconnect: each side's last messages read by the other
    expect(doc.locator("#messages li[data-seq='59']")).to_have_attribute("data-status", "read")
    expect(pat.locator("#messages li[data-seq='62']")).to_have_attribute("data-status", "read")
    t.mark("checks")
    print(f"\nconsole chat timings: {t.report()}")
