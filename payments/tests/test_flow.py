"""The consultation money flow against a fake Stripe API (stripe-python runs for real)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError, transaction
from django.utils import timezone

from accounts.actors import Operator
from payments import payouts, selectors, services
from payments.models import Consultation, LedgerEntry, WebhookEvent
from payments.tasks import expire_consultations, retry_payouts
from payments.tests.factories import authorised, completed, onboarded, people, requested

pytestmark = pytest.mark.django_db


def ledger(consultation: Consultation) -> dict[str, int]:
    s = selectors.ledger_summary(consultation_id=consultation.pk)
    return {"charge": s.charge, "refund": s.refund, "fee": s.fee, "transfer": s.transfer, "held": s.held}


def test_happy_path_request_authorise_accept_complete_transfer(client_for, stripe_fake, deliver):
    patient, doctor = people(consultation_fee=3000, currency="GBP")
    account = onboarded(doctor, stripe_fake)

    response = client_for(patient).post(
        "/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "video", "reason": "Rash"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    consultation_id = body["consultation"]["id"]
    pi_id = body["payment"]["payment_intent_id"]
    assert body["consultation"]["state"] == "requested"
    assert body["consultation"]["price"] == 3000
    assert body["consultation"]["currency"] == "GBP"
    assert body["payment"]["client_secret"].startswith(f"{pi_id}_secret_")
    assert body["payment"]["amount"] == 3000
    (create,) = stripe_fake.calls("POST", "/v1/payment_intents")
    assert create.params["capture_method"] == "manual"
    assert create.params["amount"] == "3000"
    assert create.params["currency"] == "gbp"
    assert create.params["metadata"]["consultation_id"] == str(consultation_id)
    assert create.idempotency_key == f"consultation:{consultation_id}:create"

    # The patient's app confirms; Stripe tells us the amount is capturable.
    intent = stripe_fake.authorize(pi_id)
    assert deliver(stripe_fake.event("payment_intent.amount_capturable_updated", intent)).status_code == 200
    assert Consultation.objects.get(pk=consultation_id).state == "paid"

    doctor_api = client_for(doctor)
    accepted = doctor_api.post(f"/api/v1/consultations/{consultation_id}/accept")
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["state"] == "accepted"
    (capture,) = stripe_fake.calls("POST", f"/v1/payment_intents/{pi_id}/capture")
    assert capture.idempotency_key == f"consultation:{consultation_id}:capture"
    assert capture.params == {"amount_to_capture": "3000"}
    # Stripe's succeeded webhook after our capture changes nothing.
    succeeded = stripe_fake.payment_intent(pi_id)
    assert deliver(stripe_fake.event("payment_intent.succeeded", succeeded)).status_code == 200

    assert doctor_api.post(f"/api/v1/consultations/{consultation_id}/start").json()["state"] == "in_progress"
    done = doctor_api.post(f"/api/v1/consultations/{consultation_id}/complete")
    assert done.status_code == 200
    assert done.json()["state"] == "completed"
    assert done.json()["payout_status"] == "transferred"

    (transfer,) = stripe_fake.calls("POST", "/v1/transfers")
    assert transfer.idempotency_key == f"consultation:{consultation_id}:transfer"
    assert transfer.params["amount"] == "2550"  # 3000 less the 15% platform fee
    assert transfer.params["destination"] == account.account_id
    assert transfer.params["source_transaction"] == stripe_fake.payment_intent(pi_id)["latest_charge"]
    assert transfer.params["transfer_group"] == f"consultation-{consultation_id}"

    consultation = Consultation.objects.get(pk=consultation_id)
    assert ledger(consultation) == {"charge": 3000, "refund": 0, "fee": 450, "transfer": 2550, "held": 0}
    assert selectors.ledger_summary(consultation_id=consultation_id).balanced
    steps = [(t.from_state, t.to_state, t.actor_id) for t in consultation.transitions.all()]
    assert steps == [
        ("", "requested", patient.pk),
        ("requested", "paid", None),
        ("paid", "accepted", doctor.pk),
        ("accepted", "in_progress", doctor.pk),
        ("in_progress", "completed", doctor.pk),
    ]
    assert all(t.at is not None for t in consultation.transitions.all())
    assert consultation.closes_at == consultation.completed_at + dt.timedelta(days=7)
    # Every mutating call carried an idempotency key.
    assert all(r.idempotency_key for r in stripe_fake.calls("POST"))


def test_decline_releases_the_authorisation(stripe_fake):
    patient, doctor = people()
    consultation = authorised(patient, doctor, stripe_fake)
    services.consultation_decline(user=doctor, consultation_id=consultation.pk, note="Not my specialty")
    consultation.refresh_from_db()
    assert consultation.state == "declined"
    (cancel,) = stripe_fake.calls("POST", f"/v1/payment_intents/{consultation.payment_intent_id}/cancel")
    assert cancel.idempotency_key == f"consultation:{consultation.pk}:cancel"
    assert stripe_fake.payment_intent(consultation.payment_intent_id)["status"] == "canceled"
    assert not LedgerEntry.objects.filter(consultation=consultation).exists()
    assert consultation.payout_status == "not_due"
    assert stripe_fake.calls("POST", "/v1/refunds") == []


def test_patient_cancels_before_acceptance(stripe_fake):
    patient, doctor = people()
    consultation = requested(patient, doctor)
    services.consultation_cancel(user=patient, consultation_id=consultation.pk)
    consultation.refresh_from_db()
    assert consultation.state == "cancelled"
    assert stripe_fake.payment_intent(consultation.payment_intent_id)["status"] == "canceled"


def test_doctor_cancelling_after_acceptance_refunds_in_full(stripe_fake):
    patient, doctor = people()
    consultation = authorised(patient, doctor, stripe_fake)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    services.consultation_cancel(user=doctor, consultation_id=consultation.pk)
    consultation.refresh_from_db()
    assert consultation.state == "refunded"
    assert ledger(consultation) == {"charge": 3000, "refund": -3000, "fee": 0, "transfer": 0, "held": 0}
    (refund,) = stripe_fake.calls("POST", "/v1/refunds")
    assert refund.params["amount"] == "3000"
    assert consultation.payout_status == "none"


def test_partial_refund_reverses_the_doctors_share_and_fee_proportionally(stripe_fake):
    patient, doctor = people(consultation_fee=3000)
    onboarded(doctor, stripe_fake)
    consultation = completed(patient, doctor, stripe_fake)
    assert ledger(consultation)["transfer"] == 2550

    services.consultation_refund(
        consultation_id=consultation.pk, actor=Operator(command="test"), amount=1000, source="admin"
    )
    consultation.refresh_from_db()
    assert consultation.state == "completed"
    # Net 2000: the doctor keeps 2000 * 2550 / 3000 = 1700, the platform 300.
    assert ledger(consultation) == {"charge": 3000, "refund": -1000, "fee": 300, "transfer": 1700, "held": 0}
    (reversal,) = stripe_fake.calls("POST", f"/v1/transfers/{consultation.transfer_id}/reversals")
    assert reversal.params == {"amount": "850"}
    assert reversal.idempotency_key == f"consultation:{consultation.pk}:reverse-transfer:1700"
    (refund,) = stripe_fake.calls("POST", "/v1/refunds")
    assert refund.idempotency_key == f"consultation:{consultation.pk}:refund:1000"

    # The rest: everything reversed, the consultation refunded.
    services.consultation_refund(
        consultation_id=consultation.pk, actor=Operator(command="test"), source="admin"
    )
    consultation.refresh_from_db()
    assert consultation.state == "refunded"
    assert ledger(consultation) == {"charge": 3000, "refund": -3000, "fee": 0, "transfer": 0, "held": 0}
    assert stripe_fake.objects[consultation.transfer_id]["amount_reversed"] == 2550
    with pytest.raises(Exception) as excinfo:
        services.consultation_refund(
            consultation_id=consultation.pk, actor=Operator(command="test"), amount=1
        )
    assert getattr(excinfo.value, "code", "") == "not_refundable"


def test_refund_amount_is_checked(stripe_fake):
    patient, doctor = people(consultation_fee=3000)
    consultation = completed(patient, doctor, stripe_fake)
    for amount, code in ((3001, "refund_too_large"), (0, "invalid_amount"), (-5, "invalid_amount")):
        with pytest.raises(Exception) as excinfo:
            services.consultation_refund(
                consultation_id=consultation.pk, actor=Operator(command="test"), amount=amount
            )
        assert excinfo.value.code == code
    assert stripe_fake.calls("POST", "/v1/refunds") == []


def test_completion_without_payout_account_queues_the_transfer(
    stripe_fake, deliver, django_capture_on_commit_callbacks
):
    patient, doctor = people(consultation_fee=3000)
    consultation = completed(patient, doctor, stripe_fake)
    assert consultation.payout_status == "pending"
    assert ledger(consultation) == {"charge": 3000, "refund": 0, "fee": 450, "transfer": 0, "held": 2550}
    assert stripe_fake.calls("POST", "/v1/transfers") == []

    account, _, _ = payouts.payout_onboarding_start(doctor=doctor)
    enabled = stripe_fake.enable_account(account.account_id)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        # account.updated queues retry_payouts after commit (eager Celery in tests).
        assert deliver(stripe_fake.event("account.updated", enabled)).status_code == 200
    assert callbacks
    consultation.refresh_from_db()
    assert consultation.payout_status == "transferred"
    assert ledger(consultation)["held"] == 0
    assert retry_payouts() == 0  # idempotent


def test_expiry_task_releases_unaccepted_requests(stripe_fake):
    patient, doctor = people()
    other_patient, _ = people()
    unpaid = requested(patient, doctor)
    paid = authorised(other_patient, doctor, stripe_fake)
    fresh_patient, _ = people()
    fresh = requested(fresh_patient, doctor)
    Consultation.objects.filter(pk__in=[unpaid.pk, paid.pk]).update(
        expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    assert expire_consultations() == 2
    for c in (unpaid, paid):
        c.refresh_from_db()
        assert c.state == "expired"
        assert stripe_fake.payment_intent(c.payment_intent_id)["status"] == "canceled"
        assert c.transitions.last().actor_id is None
    fresh.refresh_from_db()
    assert fresh.state == "requested"
    assert expire_consultations() == 0


def test_capture_retried_after_a_500_with_the_same_idempotency_key(stripe_fake):
    patient, doctor = people()
    consultation = authorised(patient, doctor, stripe_fake)
    stripe_fake.fail_next(1)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    attempts = [r for r in stripe_fake.requests if r.path.endswith("/capture")]
    assert [r.status for r in attempts] == [500, 200]
    assert {r.idempotency_key for r in attempts} == {f"consultation:{consultation.pk}:capture"}


def test_lost_response_is_replayed_not_repeated(stripe_fake):
    patient, doctor = people()
    onboarded(doctor, stripe_fake)
    consultation = authorised(patient, doctor, stripe_fake)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    stripe_fake.lose_next(1)  # the transfer is made, its response lost; the SDK retries
    services.consultation_complete(user=doctor, consultation_id=consultation.pk)
    attempts = [r for r in stripe_fake.requests if r.path == "/v1/transfers"]
    assert len(attempts) == 2
    assert attempts[1].replayed
    assert len([o for o in stripe_fake.objects.values() if o["object"] == "transfer"]) == 1


def test_provider_failure_stores_nothing(stripe_fake, client_for):
    patient, doctor = people()
    stripe_fake.fail_next(3)  # first try and both retries
    response = client_for(patient).post(
        "/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "chat"}, format="json"
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "payment_provider_error"
    assert not Consultation.objects.exists()
    from messaging.models import Conversation

    assert not Conversation.objects.exists()


def test_accept_before_authorisation_is_refused_and_late_webhook_is_caught_up(stripe_fake):
    patient, doctor = people()
    consultation = requested(patient, doctor)
    with pytest.raises(Exception) as excinfo:
        services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    assert excinfo.value.code == "payment_not_authorised"
    # Authorised at Stripe but the webhook is late: accept asks Stripe and goes ahead.
    stripe_fake.authorize(consultation.payment_intent_id)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    consultation.refresh_from_db()
    assert consultation.state == "accepted"
    assert [t.to_state for t in consultation.transitions.all()] == ["requested", "paid", "accepted"]


def test_actions_are_idempotent_and_monotonic(stripe_fake):
    patient, doctor = people()
    consultation = authorised(patient, doctor, stripe_fake)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    assert (
        len(stripe_fake.calls("POST", f"/v1/payment_intents/{consultation.payment_intent_id}/capture")) == 1
    )
    with pytest.raises(Exception) as excinfo:
        services.consultation_decline(user=doctor, consultation_id=consultation.pk)
    assert excinfo.value.code == "invalid_transition"
    assert excinfo.value.status == 409


def test_ledger_is_append_only(stripe_fake):
    patient, doctor = people()
    consultation = completed(patient, doctor, stripe_fake)
    entry = LedgerEntry.objects.filter(consultation=consultation).first()
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=1)
    with pytest.raises(DatabaseError), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).delete()


def test_webhook_event_and_effect_commit_together(stripe_fake, deliver, monkeypatch):
    patient, doctor = people()
    consultation = requested(patient, doctor)
    intent = stripe_fake.authorize(consultation.payment_intent_id)
    event = stripe_fake.event("payment_intent.amount_capturable_updated", intent)

    def boom(*args, **kwargs):
        raise RuntimeError("effect failed")

    monkeypatch.setattr(services, "sync_payment_intent", boom)
    response = deliver(event)
    assert response.status_code == 500
    assert not WebhookEvent.objects.filter(event_id=event["id"]).exists()
    monkeypatch.undo()
    assert deliver(event).status_code == 200  # Stripe's redelivery is applied
    consultation.refresh_from_db()
    assert consultation.state == "paid"


def test_pending_payout_checks_the_account_at_stripe_when_the_webhook_never_came(stripe_fake):
    patient, doctor = people(consultation_fee=3000)
    account, _, _ = payouts.payout_onboarding_start(doctor=doctor)
    consultation = completed(patient, doctor, stripe_fake)
    assert consultation.payout_status == "pending"
    assert retry_payouts() == 0  # Stripe says: not yet
    stripe_fake.enable_account(account.account_id)  # onboarding finished; no webhook
    assert retry_payouts() == 1
    consultation.refresh_from_db()
    assert consultation.payout_status == "transferred"
    account.refresh_from_db()
    assert account.payouts_enabled


def test_participants_devices_hear_of_each_transition_after_commit(
    stripe_fake, monkeypatch, django_capture_on_commit_callbacks
):
    from messaging import services as messaging_services

    sent = []
    monkeypatch.setattr(messaging_services.events, "fan_out", lambda **kwargs: sent.append(kwargs))
    patient, doctor = people()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        consultation = requested(patient, doctor)
    assert sent == []  # nothing before commit
    for callback in callbacks:
        callback()
    frames = [s for s in sent if s["frame"]["type"] == "consultation.updated"]
    assert frames
    assert frames[-1]["user_ids"] == [patient.pk, doctor.pk]
    assert frames[-1]["frame"]["data"]["consultation"]["id"] == consultation.pk
    assert "secret" not in str(frames)
