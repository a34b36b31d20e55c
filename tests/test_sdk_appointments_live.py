"""The JavaScript SDK's appointments module (clients/js/src/appointments.js) against a live
server paying through Stripe: uvicorn runs with the Stripe provider pointed at the fake Stripe API
(payments/tests/fake_stripe.py, the HTTP boundary), and a small "card" endpoint stands in for
Stripe.js and Stripe's webhook: the SDK's ``confirmPayment`` calls it, it confirms the
PaymentIntent at the fake (a working or a declined card) and, for a working card, posts the signed
``payment_intent.amount_capturable_updated`` event to the server's webhook, as Stripe would.
Runs ``clients/js/test/appointments.live.test.js`` (booking; the waiting room from check-in to
admission to a call that connects; the on-demand queue by specialty with two doctors accepting at
once) and ``appointments.unit.test.js`` with ``HC_*``
variables."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from accounts.models import User
from accounts.tests.factories import DoctorFactory, PatientFactory, SpecialtyFactory
from payments.tests.fake_stripe import FakeStripe, sign
from tests.sdk import run_node_suite

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

WEBHOOK_SECRET = "whsec_healthchat_sdk_appointments"
WEBHOOK_PATH = "/api/v1/payments/stripe/webhook"
SDK_MODULES = Path(__file__).resolve().parent.parent / "clients" / "js" / "node_modules"


class CardDesk:
    """What Stripe.js and Stripe's webhook do for the patient's app, on 127.0.0.1."""

    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake
        self.server_url = ""
        self.confirmed: list[str] = []
        desk = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, answer = desk.confirm(body["payment_intent_id"], body.get("card", "visa"))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/confirm"

    def confirm(self, pi_id: str, card: str) -> tuple[int, dict[str, Any]]:
        if card == "declined":
            intent = self.fake.decline_card(pi_id)
            return 402, {"error": intent["last_payment_error"]}
        intent = self.fake.authorize(pi_id)
        payload = json.dumps(self.fake.event("payment_intent.amount_capturable_updated", intent))
        answer = requests.post(
            self.server_url + WEBHOOK_PATH,
            data=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(payload, WEBHOOK_SECRET)},
            timeout=30,
        )
        self.confirmed.append(pi_id)
        return 200, {"status": intent["status"], "webhook": answer.status_code}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


def test_sdk_appointments_against_a_live_server(
    live_server_factory: Any, make_token: Any, stripe: FakeStripe
) -> None:
    assert (SDK_MODULES / "ws").is_dir(), "run `npm ci` in clients/js (make test does)"
    server = live_server_factory(
        {
            "HEALTHCHAT_WS_RECONNECT_MIN_MS": "50",
            "HEALTHCHAT_WS_RECONNECT_MAX_MS": "300",
            "PAYMENTS_PROVIDER": "stripe",
            "STRIPE_SECRET_KEY": "sk_test_healthchat",
            "STRIPE_API_BASE": stripe.url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_MAX_NETWORK_RETRIES": "0",
        }
    )
    desk = CardDesk(stripe)
    desk.server_url = server.base_url
    doctor: User = DoctorFactory.create(
        profile__verification_status="verified", profile__consultation_fee=3000, profile__currency="GBP"
    )
    room_doctor: User = DoctorFactory.create(
        display_name="Dr. Room",
        profile__verification_status="verified",
        profile__consultation_fee=2000,
        profile__currency="GBP",
    )
    colleague: User = DoctorFactory.create()
    specialty = SpecialtyFactory.create(slug="sdk-on-demand", name="SDK on-demand test")
    on_demand_doctors: list[User] = [
        DoctorFactory.create(
            profile__specialty=specialty,
            profile__verification_status="verified",
            profile__consultation_fee=fee,
            profile__currency="GBP",
        )
        for fee in (2500, 3500)
    ]
    patients: list[User] = [PatientFactory.create() for _ in range(3)]

    def token(user: Any) -> str:
        return str(make_token(uid=user.firebase_uid, phone_number=user.phone_number, lifetime=3600))

    env = dict(os.environ)
    env.update(
        TZ="Asia/Tokyo",  # the "browser's" zone: listSlots' default
        HC_HTTP_URL=server.base_url,
        HC_WS_URL=server.ws_url,
        HC_CARD_URL=desk.url,
        HC_DOCTOR_ID=str(doctor.pk),
        HC_DOCTOR_TOKEN=token(doctor),
        HC_COLLEAGUE_TOKEN=token(colleague),
        HC_ROOM_DOCTOR_ID=str(room_doctor.pk),
        HC_ROOM_DOCTOR_TOKEN=token(room_doctor),
        HC_SPECIALTY=specialty.slug,
        HC_ON_DEMAND_DOCTOR_IDS=",".join(str(d.pk) for d in on_demand_doctors),
        HC_ON_DEMAND_DOCTOR_TOKENS=",".join(token(d) for d in on_demand_doctors),
        HC_PATIENT_TOKENS=",".join(token(p) for p in patients),
        HC_PATIENT_IDS=",".join(str(p.pk) for p in patients),
    )
    try:
        run_node_suite(
            ["test/appointments.live.test.js", "test/appointments.unit.test.js"],
            env,
            server,
            timeout=150,
            passes=10,
        )
    finally:
        desk.close()
    # Stripe saw what the SDK did. Bookings: alice, carol (declined), bob's direct hold, then the
    # waiting room's three, then the accepted on-demand request's consultation; bob's slot_taken
    # and the losing acceptance made none. All for manual capture. Cancelled: the declined hold,
    # alice's free cancellation, bob's hold. Captured: the two admissions.
    created = [c for c in stripe.calls("POST", "/v1/payment_intents") if c.path == "/v1/payment_intents"]
    assert len(created) == 7
    assert all(c.params["capture_method"] == "manual" for c in created)
    posts = stripe.calls("POST", "/v1/payment_intents/")
    assert len({c.path for c in posts if c.path.endswith("/cancel")}) == 3
    assert len({c.path for c in posts if c.path.endswith("/capture")}) == 2
    assert len(desk.confirmed) == 5
