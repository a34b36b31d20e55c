"""The SDK's IndexedDBStore in a real Chromium (Debian's, driven by Playwright): a patient's page
goes offline, queues messages, is loaded again (a fresh page: only IndexedDB remains) and, back
online, its restored outbox sends them; each is acknowledged once, stored once and in order, and
the stored cursor and delivery watermarks survive the reload (clients/js/testing/store.html)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db import connection
from playwright.sync_api import BrowserContext, Page, sync_playwright

from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging.models import Message
from tests.browser import StaticSite, chromium_path

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SDK = Path(__file__).resolve().parent.parent / "clients" / "js"
PAGE = "/testing/store.html"
WAIT_MS = 30_000
T = TypeVar("T")


@pytest.fixture(scope="module")
def site() -> Iterator[StaticSite]:
    assert (SDK / "node_modules" / "openapi-fetch" / "dist" / "index.mjs").is_file(), (
        "run `npm ci` in clients/js"
    )
    static = StaticSite(SDK)
    yield static
    static.close()


@pytest.fixture(scope="module")
def server(live_server_factory: Any, site: StaticSite) -> Any:
    return live_server_factory(
        {
            "HEALTHCHAT_WS_ALLOWED_ORIGINS": site.origin,
            "CORS_ALLOWED_ORIGINS": site.origin,
            "HEALTHCHAT_WS_RECONNECT_MIN_MS": "100",
            "HEALTHCHAT_WS_RECONNECT_MAX_MS": "500",
            "HEALTHCHAT_E2EE_POLICY": "optional",
        }
    )


def _open(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("window.hcLoaded === true && hc.client.state === 'ready'", timeout=WAIT_MS)
    return page


def _context(browser: Any, server: Any, token: str, user_id: int) -> BrowserContext:
    context: BrowserContext = browser.new_context()
    config = {"httpUrl": server.base_url, "wsUrl": server.ws_url, "token": token, "userId": user_id}
    context.add_init_script(f"window.HC_CONFIG = {json.dumps(config)};")
    return context


def _db(query: Callable[[], T]) -> T:
    """Run an ORM query from a thread of its own (Playwright's sync API runs an event loop in
    this one, where Django refuses synchronous database calls)."""

    def run() -> T:
        try:
            return query()
        finally:
            connection.close()  # back to the pool: a thread's connection is never reused

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def _bodies(page: Page, conversation_id: int) -> list[str]:
    return list(
        page.evaluate(
            "(c) => hc.messages.filter((m) => m.conversation_id === c).map((m) => m.body)", conversation_id
        )
    )


def _seqs(page: Page, conversation_id: int) -> list[int]:
    return list(
        page.evaluate(
            "(c) => hc.messages.filter((m) => m.conversation_id === c).map((m) => m.seq)", conversation_id
        )
    )


def test_outbox_and_cursor_survive_an_offline_reload(server: Any, site: StaticSite, make_token: Any) -> None:
    patient = PatientFactory.create()
    doctor = DoctorFactory.create()
    url = site.origin + PAGE
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        try:
            patient_context = _context(
                browser,
                server,
                make_token(uid=patient.firebase_uid, phone_number=patient.phone_number),
                patient.pk,
            )
            doctor_context = _context(
                browser,
                server,
                make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number),
                doctor.pk,
            )
            patient_page = _open(patient_context, url)
            doctor_page = _open(doctor_context, url)
            # REST from the page through the generated client (openapi-fetch from the import map).
            conversation_id = int(
                patient_page.evaluate(
                    "async (peer) => (await hc.rest.POST('/api/v1/conversations', {body: {peer_id: peer}})).data.id",
                    doctor.pk,
                )
            )
            doctor_page.evaluate("([c]) => hc.send(c, 'before the patient went offline')", [conversation_id])
            patient_page.wait_for_function(
                "(c) => hc.messages.some((m) => m.conversation_id === c)",
                arg=conversation_id,
                timeout=WAIT_MS,
            )
            # A sync stores the cursor (here: the one after the page's first sync).
            patient_page.evaluate("() => hc.client.sync()")
            cursor_before = patient_page.evaluate("() => hc.store.getCursor()")
            assert cursor_before

            # Offline: the page queues three messages (pending in IndexedDB) while the doctor writes.
            patient_context.set_offline(True)
            queued = [
                patient_page.evaluate("([c, b]) => hc.send(c, b)", [conversation_id, f"offline {i}"])
                for i in (1, 2, 3)
            ]
            doctor_page.evaluate("([c]) => hc.send(c, 'while the patient was offline')", [conversation_id])
            # The SDK notices the swallowed socket (ping/request timeout) and keeps trying.
            patient_page.wait_for_function("() => hc.client.state !== 'ready'", timeout=WAIT_MS)
            assert patient_page.evaluate("() => hc.acked") == []
            outbox = patient_page.evaluate(
                "() => hc.store.listOutbox().then((l) => l.map((i) => i.clientId))"
            )
            assert outbox == queued
            assert not _db(lambda: Message.objects.filter(client_id__in=queued).exists())

            # The page is loaded again while offline (from the HTTP cache): a new page, a new
            # client; only IndexedDB is left of the old one.
            patient_page.goto(url)
            patient_page.wait_for_function("window.hcLoaded === true", timeout=WAIT_MS)
            assert patient_page.evaluate("() => hc.restored") == queued
            assert patient_page.evaluate("() => hc.cursorAtLoad") == cursor_before
            assert patient_page.evaluate("() => hc.client.state") != "ready"
            time.sleep(1)  # a few failed connection attempts while offline
            assert patient_page.evaluate("() => hc.acked") == []

            # Back online: the reloaded page reconnects on its own and sends its restored outbox.
            patient_context.set_offline(False)
            patient_page.wait_for_function("(n) => hc.acked.length >= n", arg=len(queued), timeout=WAIT_MS)
            patient_page.wait_for_function(
                "(c) => hc.messages.filter((m) => m.conversation_id === c).length >= 4",
                arg=conversation_id,
                timeout=WAIT_MS,
            )
            doctor_page.wait_for_function(
                "(n) => hc.messages.filter((m) => m.body && m.body.startsWith('offline ')).length >= n",
                arg=len(queued),
                timeout=WAIT_MS,
            )
            time.sleep(0.5)  # anything duplicated would arrive now

            assert patient_page.evaluate("() => hc.acked") == queued
            # The reloaded page starts after the watermark it kept: the message delivered before the
            # reload is not delivered again, the one it missed comes once, then its own, in order.
            assert _bodies(patient_page, conversation_id) == [
                "while the patient was offline",
                "offline 1",
                "offline 2",
                "offline 3",
            ]
            seqs = _seqs(patient_page, conversation_id)
            assert seqs == list(range(seqs[0], seqs[0] + 4))
            assert _bodies(doctor_page, conversation_id) == [
                "before the patient went offline",
                "while the patient was offline",
                "offline 1",
                "offline 2",
                "offline 3",
            ]
            assert patient_page.evaluate("() => hc.store.listOutbox()") == []
            assert patient_page.evaluate("() => hc.store.getCursor()") != cursor_before
            # The database: each queued message once, in the order it was written.
            stored = _db(
                lambda: list(
                    Message.objects.filter(conversation_id=conversation_id, sender=patient)
                    .order_by("seq")
                    .values_list("client_id", "body", "seq")
                )
            )
            assert [str(client_id) for client_id, _, _ in stored] == queued
            assert [body for _, body, _ in stored] == ["offline 1", "offline 2", "offline 3"]
            assert [seq for _, _, seq in stored] == seqs[1:]
            assert "ConnectionDroppedError" in patient_page.evaluate("() => hc.errors")
        finally:
            browser.close()
    print(f"browser store test: {time.monotonic() - started:.1f} s")
