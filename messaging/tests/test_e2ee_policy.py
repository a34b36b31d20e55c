"""The deployment's end-to-end encryption policy (HEALTHCHAT_E2EE_POLICY): the client cannot
override it (trust finding 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from accounts.tests.factories import DoctorFactory, PatientFactory
from messaging.models import Conversation

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
CONVERSATIONS = "/api/v1/conversations"
GROUPS = "/api/v1/groups"


def open_direct(api, opener, peer, **body):
    return api(opener).post(CONVERSATIONS, {"peer_id": peer.pk, **body}, format="json")


def test_required_policy_encrypts_patient_doctor_conversations_whatever_the_client_asks(api, settings):
    settings.HEALTHCHAT_E2EE_POLICY = "required"
    patient, doctor = PatientFactory(), DoctorFactory()
    refused = open_direct(api, patient, doctor, e2ee=False)
    assert refused.status_code == 422, refused.content
    assert refused.json()["error"]["code"] == "e2ee_mandatory"
    assert not Conversation.objects.exists()

    opened = open_direct(api, patient, doctor)  # no choice given: encrypted
    assert opened.status_code == 201
    assert opened.json()["e2ee"] is True
    # The doctor opening it (or asking again) gets the same encrypted conversation.
    assert open_direct(api, doctor, patient, e2ee=False).status_code == 422
    again = open_direct(api, doctor, patient)
    assert (again.status_code, again.json()["id"], again.json()["e2ee"]) == (200, opened.json()["id"], True)


def test_required_policy_leaves_other_conversations_to_the_opener(api, settings):
    settings.HEALTHCHAT_E2EE_POLICY = "required"
    doctor, colleague = DoctorFactory(), DoctorFactory()
    plain = open_direct(api, doctor, colleague, e2ee=False)
    assert (plain.status_code, plain.json()["e2ee"]) == (201, False)
    group = api(doctor).post(GROUPS, {"name": "Ward", "member_ids": [colleague.pk]}, format="json")
    assert (group.status_code, group.json()["e2ee"]) == (201, False)


def test_off_policy_refuses_encryption(api, settings):
    settings.HEALTHCHAT_E2EE_POLICY = "off"
    patient, doctor = PatientFactory(), DoctorFactory()
    refused = open_direct(api, patient, doctor, e2ee=True)
    assert refused.status_code == 422, refused.content
    assert refused.json()["error"]["code"] == "e2ee_disabled"
    group = api(doctor).post(GROUPS, {"name": "Ward", "e2ee": True}, format="json")
    assert group.status_code == 422
    assert group.json()["error"]["code"] == "e2ee_disabled"
    assert not Conversation.objects.exists()
    opened = open_direct(api, patient, doctor)
    assert (opened.status_code, opened.json()["e2ee"]) == (201, False)


def test_optional_policy_is_the_default_and_the_opener_chooses(api, settings):
    assert settings.HEALTHCHAT_E2EE_POLICY == "optional"
    patient, other_patient, doctor = PatientFactory(), PatientFactory(), DoctorFactory()
    plain = open_direct(api, patient, doctor)
    assert (plain.status_code, plain.json()["e2ee"]) == (201, False)
    encrypted = open_direct(api, other_patient, doctor, e2ee=True)
    assert (encrypted.status_code, encrypted.json()["e2ee"]) == (201, True)


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "healthchat.settings.production",
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "api.example.org",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/healthchat",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "FIREBASE_PROJECT_ID": "healthchat-prod",
    "STRIPE_SECRET_KEY": "sk_live_test",
    "STRIPE_WEBHOOK_SECRET": "whsec_test",
}


def settings_value(env_overrides: dict[str, str], name: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HEALTHCHAT_E2EE", "FIREBASE", "DEBUG", "PAYMENTS", "STRIPE"))
    }
    env["DJANGO_SETTINGS_MODULE"] = "healthchat.settings.local"
    env.update(env_overrides)
    code = f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_policy_from_the_environment_and_the_deprecated_alias():
    assert settings_value({}, "HEALTHCHAT_E2EE_POLICY").stdout.strip() == "optional"
    assert (
        settings_value({"HEALTHCHAT_E2EE_POLICY": "Required"}, "HEALTHCHAT_E2EE_POLICY").stdout.strip()
        == "required"
    )
    # The old boolean still means what its operator wanted, and says it is deprecated.
    alias = settings_value({"HEALTHCHAT_E2EE_DEFAULT": "true"}, "HEALTHCHAT_E2EE_POLICY")
    assert alias.stdout.strip() == "required"
    assert "HEALTHCHAT_E2EE_DEFAULT is deprecated" in alias.stderr
    assert settings_value({"HEALTHCHAT_E2EE_DEFAULT": "false"}, "HEALTHCHAT_E2EE_POLICY").stdout.strip() == (
        "optional"
    )
    # A typo, or the two variables disagreeing, refuses to start (never a silent guess).
    for env in (
        {"HEALTHCHAT_E2EE_POLICY": "always"},
        {"HEALTHCHAT_E2EE_POLICY": "off", "HEALTHCHAT_E2EE_DEFAULT": "true"},
        {"HEALTHCHAT_E2EE_DEFAULT": "yes please"},
    ):
        result = settings_value(env, "HEALTHCHAT_E2EE_POLICY")
        assert result.returncode != 0, env
        assert "HEALTHCHAT_E2EE" in result.stderr, (env, result.stderr)


def test_production_reads_the_policy_and_the_alias_the_same_way():
    assert settings_value(PRODUCTION, "HEALTHCHAT_E2EE_POLICY").stdout.strip() == "optional"
    alias = settings_value({**PRODUCTION, "HEALTHCHAT_E2EE_DEFAULT": "true"}, "HEALTHCHAT_E2EE_POLICY")
    assert alias.stdout.strip() == "required", alias.stderr
    refused = settings_value({**PRODUCTION, "HEALTHCHAT_E2EE_POLICY": "on"}, "HEALTHCHAT_E2EE_POLICY")
    assert refused.returncode != 0
    assert "HEALTHCHAT_E2EE_POLICY must be one of off, optional, required" in refused.stderr
