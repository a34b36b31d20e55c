"""Stripe webhooks: real HMAC signatures; forged, stale, replayed, concurrent and shuffled events."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time

import pytest
from django.db import connection

from payments import payouts, selectors, services
from payments.models import Consultation, ConsultationTransition, LedgerEntry, WebhookEvent
from payments.tests.conftest import WEBHOOK_SECRET, post_event
from payments.tests.factories import authorised, onboarded, people, requested

pytestmark = pytest.mark.django_db


def _authorised_event(fake, patient, doctor):
    consultation = requested(patient, doctor)
    intent = fake.authorize(consultation.payment_intent_id)
    return consultation, fake.event("payment_intent.amount_capturable_updated", intent)


def test_valid_signature_applies_the_event(stripe_fake, deliver):
    patient, doctor = people()
    consultation, event = _authorised_event(stripe_fake, patient, doctor)
    response = deliver(event)
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False, "result": "authorised"}
    consultation.refresh_from_db()
    assert consultation.state == "paid"
    record = WebhookEvent.objects.get(event_id=event["id"])
    assert record.consultation_id == consultation.pk
    assert record.type == "payment_intent.amount_capturable_updated"


@pytest.mark.parametrize(
    "tamper",
    ["wrong_secret", "stale", "future", "no_header", "garbage_header", "payload_changed", "not_v1"],
)
def test_forged_or_stale_events_are_refused_and_nothing_is_stored(stripe_fake, tamper):
    patient, doctor = people()
    consultation, event = _authorised_event(stripe_fake, patient, doctor)
    payload = json.dumps(event)
    kwargs: dict = {}
    if tamper == "wrong_secret":
        kwargs["secret"] = "whsec_not_ours"
    elif tamper == "stale":
        kwargs["timestamp"] = int(time.time()) - 301
    elif tamper == "future":
        kwargs["timestamp"] = int(time.time()) + 3600
    elif tamper == "no_header":
        kwargs["signature"] = ""
    elif tamper == "garbage_header":
        kwargs["signature"] = "nonsense"
    elif tamper == "payload_changed":
        from payments.tests.fake_stripe import sign

        kwargs["signature"] = sign(payload, WEBHOOK_SECRET)
        kwargs["payload"] = payload.replace('"amount": 3000', '"amount": 1')
        assert kwargs["payload"] != payload
    elif tamper == "not_v1":
        from payments.tests.fake_stripe import sign

        kwargs["signature"] = sign(payload, WEBHOOK_SECRET).replace("v1=", "v0=")
    response = post_event(event, **kwargs)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert not WebhookEvent.objects.exists()
    consultation.refresh_from_db()
    assert consultation.state == "requested"


def test_signature_within_tolerance_is_accepted(stripe_fake):
    patient, doctor = people()
    _, event = _authorised_event(stripe_fake, patient, doctor)
    assert post_event(event, timestamp=int(time.time()) - 290).status_code == 200


def test_unconfigured_secret_refuses_webhooks(stripe_fake, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    patient, doctor = people()
    _, event = _authorised_event(stripe_fake, patient, doctor)
    response = post_event(event)
    assert response.status_code == 503
    assert not WebhookEvent.objects.exists()


def test_replayed_event_is_applied_once(stripe_fake, deliver):
    patient, doctor = people()
    onboarded(doctor, stripe_fake)
    consultation = authorised(patient, doctor, stripe_fake)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    services.consultation_complete(user=doctor, consultation_id=consultation.pk)
    consultation.refresh_from_db()
    stripe_fake.refund_in_dashboard(consultation.payment_intent_id, 600)
    charge = stripe_fake.objects[stripe_fake.payment_intent(consultation.payment_intent_id)["latest_charge"]]
    event = stripe_fake.event("charge.refunded", charge)
    first, second = deliver(event), deliver(event)
    assert first.status_code == second.status_code == 200
    assert first.json()["duplicate"] is False
    assert second.json()["duplicate"] is True
    assert WebhookEvent.objects.filter(event_id=event["id"]).count() == 1
    assert LedgerEntry.objects.filter(consultation=consultation, kind="refund").count() == 1
    assert len(stripe_fake.calls("POST", f"/v1/transfers/{consultation.transfer_id}/reversals")) == 1
    summary = selectors.ledger_summary(consultation_id=consultation.pk)
    assert (summary.refunded, summary.transfer, summary.fee) == (600, 2040, 360)


@pytest.mark.django_db(transaction=True)
def test_five_concurrent_deliveries_of_one_event_have_one_effect(stripe_fake):
    patient, doctor = people()
    consultation, event = _authorised_event(stripe_fake, patient, doctor)
    payload = json.dumps(event)
    barrier = threading.Barrier(5)
    statuses: list[int] = []

    def send() -> None:
        try:
            barrier.wait(timeout=10)
            statuses.append(post_event(event, payload=payload).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert statuses == [200] * 5
    assert WebhookEvent.objects.filter(event_id=event["id"]).count() == 1
    assert ConsultationTransition.objects.filter(consultation=consultation, to_state="paid").count() == 1
    consultation.refresh_from_db()
    assert consultation.state == "paid"


def _scenario_events(fake, patient, doctor):
    """A completed consultation and the events Stripe sends for it, two dashboard refunds included."""
    onboarded(doctor, fake)
    consultation = requested(patient, doctor)
    pi_id = consultation.payment_intent_id
    events = [fake.event("payment_intent.amount_capturable_updated", fake.authorize(pi_id))]
    # Our own actions (the doctor accepts and completes) sync by themselves, before any webhook.
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    services.consultation_complete(user=doctor, consultation_id=consultation.pk)
    events.append(fake.event("payment_intent.succeeded", fake.payment_intent(pi_id)))
    fake.refund_in_dashboard(pi_id, 1000)
    events.append(fake.event("charge.refunded", fake.objects[fake.payment_intent(pi_id)["latest_charge"]]))
    fake.refund_in_dashboard(pi_id, 500)
    events.append(fake.event("charge.refunded", fake.objects[fake.payment_intent(pi_id)["latest_charge"]]))
    return consultation, events


def _final(consultation):
    consultation.refresh_from_db()
    s = selectors.ledger_summary(consultation_id=consultation.pk)
    return consultation.state, s.charge, s.refund, s.fee, s.transfer, s.held


def test_shuffled_events_reach_the_same_final_state(stripe_fake, deliver):
    orders = list(itertools.permutations(range(4)))
    random.Random(12).shuffle(orders)
    finals = set()
    for order in [(0, 1, 2, 3), (3, 2, 1, 0), *orders[:6]]:
        patient, doctor = people(consultation_fee=3000)
        consultation, events = _scenario_events(stripe_fake, patient, doctor)
        for index in order:
            assert deliver(events[index]).status_code == 200
        finals.add(_final(consultation))
        reversed_total = stripe_fake.objects[consultation.transfer_id]["amount_reversed"]
        assert reversed_total == 1275
    # Net 1500 of 3000: the doctor keeps 1275 (half of 2550), the platform 225.
    assert finals == {("completed", 3000, -1500, 225, 1275, 0)}


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_authorised_then_cancelled_at_stripe_in_any_order(stripe_fake, deliver, order):
    patient, doctor = people()
    consultation = requested(patient, doctor)
    pi_id = consultation.payment_intent_id
    events = [
        stripe_fake.event("payment_intent.amount_capturable_updated", stripe_fake.authorize(pi_id)),
        stripe_fake.event("payment_intent.canceled", stripe_fake.cancel_in_dashboard(pi_id)),
    ]
    for index in order:
        assert deliver(events[index]).status_code == 200
    consultation.refresh_from_db()
    assert consultation.state == "expired"


def test_payment_failure_is_recorded_without_changing_state(stripe_fake, deliver):
    patient, doctor = people()
    consultation = requested(patient, doctor)
    intent = stripe_fake.decline_card(consultation.payment_intent_id)
    assert deliver(stripe_fake.event("payment_intent.payment_failed", intent)).status_code == 200
    consultation.refresh_from_db()
    assert consultation.state == "requested"
    assert consultation.last_payment_error == "card_declined"


def test_unknown_events_and_objects_are_recorded_and_acknowledged(stripe_fake, deliver):
    unknown_type = stripe_fake.event("customer.created", {"id": "cus_1", "object": "customer"})
    unknown_pi = stripe_fake.event(
        "payment_intent.succeeded",
        {"id": "pi_elsewhere", "object": "payment_intent", "status": "succeeded", "metadata": {}},
    )
    for event in (unknown_type, unknown_pi):
        response = deliver(event)
        assert response.status_code == 200
        assert response.json()["result"].startswith("ignored")
    assert WebhookEvent.objects.count() == 2
    assert not Consultation.objects.exists()


def test_connect_endpoint_secret_is_accepted_too(stripe_fake, settings):
    settings.STRIPE_CONNECT_WEBHOOK_SECRET = "whsec_connect_endpoint"
    _, doctor = people()
    account, _, _ = payouts.payout_onboarding_start(doctor=doctor)
    event = stripe_fake.event("account.updated", stripe_fake.enable_account(account.account_id))
    assert post_event(event, secret="whsec_connect_endpoint").status_code == 200
    account.refresh_from_db()
    assert account.payouts_enabled
    forged = stripe_fake.event("account.updated", stripe_fake.objects[account.account_id])
    assert post_event(forged, secret="whsec_someone_else").status_code == 400
