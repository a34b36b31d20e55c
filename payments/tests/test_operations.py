"""Operations: reconciliation, the development provider, production refusals, admin, hooks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts import services as account_services
from accounts.models import User
from messaging import services as messaging_services
from payments import booking, selectors
from payments.models import Consultation, LedgerEntry
from payments.tests.factories import authorised, completed, onboarded, people, requested

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def reconcile(*args: str) -> str:
    out = io.StringIO()
    call_command("reconcile_payments", *args, stdout=out)
    return out.getvalue()


def test_reconcile_reports_then_fixes_missed_webhooks(stripe_fake):
    patient, doctor = people(consultation_fee=3000)
    onboarded(doctor, stripe_fake)
    # 1. Authorised at Stripe, webhook lost.
    missed_auth = requested(patient, doctor)
    stripe_fake.authorize(missed_auth.payment_intent_id)
    # 2. Refunded in the dashboard after completion, webhook lost.
    p2, _ = people()
    refunded = completed(p2, doctor, stripe_fake)
    stripe_fake.refund_in_dashboard(refunded.payment_intent_id, 3000)
    # 3. Cancelled at Stripe while still a request.
    p3, _ = people()
    cancelled = requested(p3, doctor)
    stripe_fake.cancel_in_dashboard(cancelled.payment_intent_id)
    # 4. In agreement.
    p4, _ = people()
    fine = completed(p4, doctor, stripe_fake)

    report = reconcile()
    assert f"consultation {missed_auth.pk}" in report
    assert "authorised at the provider" in report
    assert f"consultation {refunded.pk}" in report
    assert "refunded 3000, ledger has 0" in report
    assert f"consultation {cancelled.pk}" in report
    assert "cancelled at the provider" in report
    assert f"consultation {fine.pk}" not in report
    assert "checked 4 payment intent(s): 3 difference(s)" in report
    # Reporting changes nothing.
    assert Consultation.objects.get(pk=missed_auth.pk).state == "requested"

    fixed = reconcile("--fix")
    assert fixed.count("FIXED") == 3
    states = dict(Consultation.objects.values_list("pk", "state"))
    assert states[missed_auth.pk] == "paid"
    assert states[refunded.pk] == "refunded"
    assert states[cancelled.pk] == "expired"
    summary = selectors.ledger_summary(consultation_id=refunded.pk)
    assert (summary.charge, summary.refund, summary.fee, summary.transfer) == (3000, -3000, 0, 0)
    assert reconcile().endswith("checked 4 payment intent(s): 0 difference(s)\n")
    assert LedgerEntry.objects.filter(source="reconcile").exists()


def test_reconcile_releases_authorisations_of_ended_consultations(stripe_fake):
    patient, doctor = people()
    consultation = authorised(patient, doctor, stripe_fake)
    # Declined here while Stripe was unreachable for the cancel (simulated by a direct update).
    Consultation.objects.filter(pk=consultation.pk).update(state="declined", ended_at=consultation.created_at)
    assert "still requires_capture at the provider" in reconcile()
    reconcile("--fix")
    assert stripe_fake.payment_intent(consultation.payment_intent_id)["status"] == "canceled"


def test_reconcile_pays_out_pending_transfers(stripe_fake):
    patient, doctor = people()
    consultation = completed(patient, doctor, stripe_fake)
    assert consultation.payout_status == "pending"
    assert "doctor's share not transferred yet" in reconcile()
    onboarded(doctor, stripe_fake)
    reconcile("--fix")
    consultation.refresh_from_db()
    assert consultation.payout_status == "transferred"


def test_development_provider_runs_the_flow_without_stripe(settings, client_for):
    settings.PAYMENTS_PROVIDER = "development"
    settings.STRIPE_SECRET_KEY = ""
    patient, doctor = people(consultation_fee=2000)
    response = client_for(patient).post(
        "/api/v1/consultations", {"doctor_id": doctor.pk, "kind": "chat"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["consultation"]["state"] == "paid"  # authorised at once, locally
    assert body["payment"]["provider"] == "development"
    consultation_id = body["consultation"]["id"]
    onboarding = client_for(doctor).post("/api/v1/payouts/onboarding").json()
    assert onboarding["account"]["payouts_enabled"] is True
    for action in ("accept", "complete"):
        assert client_for(doctor).post(f"/api/v1/consultations/{consultation_id}/{action}").status_code == 200
    summary = selectors.ledger_summary(consultation_id=consultation_id)
    assert (summary.charge, summary.fee, summary.transfer, summary.held) == (2000, 300, 1700, 0)
    assert "development payment provider" in reconcile()


def _production(overrides: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("FIREBASE", "STRIPE", "PAYMENTS", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG")
        )
    }
    env.update(
        DJANGO_SETTINGS_MODULE="healthchat.settings.production",
        SECRET_KEY="x" * 50,
        ALLOWED_HOSTS="api.example.org",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/healthchat",
        REDIS_URL="redis://127.0.0.1:6379/0",
        FIREBASE_PROJECT_ID="healthchat-prod",
        STRIPE_SECRET_KEY="sk_live_x",
        STRIPE_WEBHOOK_SECRET="whsec_x",
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    code = (
        "import django; django.setup(); from django.conf import settings; print(settings.PAYMENTS_PROVIDER)"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_refuses_development_payments_and_fake_stripe():
    good = _production({})
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == "stripe"
    cases = {
        "STRIPE_SECRET_KEY": None,
        "STRIPE_WEBHOOK_SECRET": None,
        "PAYMENTS_PROVIDER": "development",
        "STRIPE_API_BASE": "http://127.0.0.1:12111",
    }
    for name, value in cases.items():
        result = _production({name: value})
        assert result.returncode != 0, name
        assert name in result.stderr, (name, result.stderr)
        assert "refuse to start" in result.stderr
    assert _production({"STRIPE_API_BASE": "https://api.stripe.com"}).returncode == 0


def test_export_contact_rule_and_erasure(stripe_fake):
    patient, doctor = people()
    consultation = completed(patient, doctor, stripe_fake)
    exported = account_services.user_export(user=patient)["consultations"]
    assert [c["id"] for c in exported] == [consultation.pk]
    assert exported[0]["reason"] == "Headache"
    assert {p["kind"] for p in exported[0]["payments"]} == {"charge"}  # not the doctor's fee/transfer
    doctor_export = account_services.user_export(user=doctor)["consultations"]
    assert {p["kind"] for p in doctor_export[0]["payments"]} == {"charge", "fee"}
    assert "client_secret" not in str(exported)

    assert selectors.has_consultation in messaging_services.contact_rules
    assert selectors.has_consultation(doctor, patient)
    stranger, _ = people()
    assert not selectors.has_consultation(doctor, stranger)
    assert selectors.patient_may_write(patient=patient, doctor=doctor)

    booking.erase_user_consultations(patient)
    consultation.refresh_from_db()
    assert consultation.reason == ""
    assert LedgerEntry.objects.filter(consultation=consultation).exists()  # money records stay


def test_admin_refund_view_and_read_only_ledger(client, stripe_fake):
    patient, doctor = people(consultation_fee=3000)
    onboarded(doctor, stripe_fake)
    consultation = completed(patient, doctor, stripe_fake)
    staff = User.objects.create_superuser("+12025550199", "pw-for-tests-only", display_name="Staff")
    client.force_login(staff)

    page = client.get(f"/admin/payments/consultation/{consultation.pk}/change/")
    assert page.status_code == 200
    assert b"Refund (full or partial)" in page.content
    assert client.get(f"/admin/payments/consultation/{consultation.pk}/refund/").status_code == 200
    response = client.post(
        f"/admin/payments/consultation/{consultation.pk}/refund/", {"amount": "1500", "note": "late"}
    )
    assert response.status_code == 302
    summary = selectors.ledger_summary(consultation_id=consultation.pk)
    assert (summary.refunded, summary.transfer, summary.fee, summary.held) == (1500, 1275, 225, 0)
    transition_count = consultation.transitions.count()

    response = client.post(
        "/admin/payments/consultation/",
        {"action": "refund_in_full", "_selected_action": [consultation.pk]},
    )
    assert response.status_code == 302
    consultation.refresh_from_db()
    assert consultation.state == "refunded"
    assert consultation.transitions.count() == transition_count + 1
    assert consultation.transitions.last().actor_id == staff.pk

    entry = LedgerEntry.objects.filter(consultation=consultation).first()
    assert client.get("/admin/payments/ledgerentry/").status_code == 200
    assert client.get("/admin/payments/ledgerentry/add/").status_code == 403
    assert client.post(f"/admin/payments/ledgerentry/{entry.pk}/delete/").status_code == 403
    assert client.get("/admin/payments/webhookevent/").status_code == 200
    assert client.get("/admin/payments/stripeaccount/").status_code == 200
