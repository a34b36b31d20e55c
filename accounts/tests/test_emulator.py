"""The real phone sign-in flow, revocation and deletion through the Firebase Auth emulator.

One emulator (npm ``firebase-tools``, offline, no Java) per test module on a free port. In
emulator mode firebase-admin skips signature and expiry checks, so the emulator host is set
for this module only and the firebase-admin app is rebuilt on the way in and out.
"""

from __future__ import annotations

import importlib
import os
import shutil
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
import requests
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts import firebase
from accounts.models import DoctorProfile, PatientProfile, User
from conftest import PROJECT_ID, unique_phone

pytestmark = [pytest.mark.emulator, pytest.mark.django_db]

EMULATOR_HOST_ENV = "FIREBASE_AUTH_EMULATOR_HOST"
ADMIN = {"Authorization": "Bearer owner"}  # the emulator's admin credential


def tooling() -> Any:
    """``scripts/firebase_emulator.py`` (a script directory, not a package: loaded by name)."""
    try:
        return importlib.import_module("scripts.firebase_emulator")
    except ImportError as exc:  # pragma: no cover - a broken checkout
        pytest.fail(f"scripts/firebase_emulator.py cannot be imported: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running Auth emulator; FIREBASE_AUTH_EMULATOR_HOST points at it for this module only."""
    firebase_emulator = tooling()
    if shutil.which("node") is None:
        pytest.fail(
            "Node.js is not installed: the Firebase Auth emulator needs `node` >= 20 on PATH "
            "(then run `npm ci` in the repository root).",
            pytrace=False,
        )
    try:
        handle = firebase_emulator.start_auth_emulator(
            0, PROJECT_ID, workdir=tmp_path_factory.mktemp("firebase-emulator")
        )
    except firebase_emulator.EmulatorError as exc:
        pytest.fail(f"The Firebase Auth emulator did not start: {exc}", pytrace=False)
    previous = os.environ.get(EMULATOR_HOST_ENV)
    os.environ[EMULATOR_HOST_ENV] = handle.host
    firebase.reset_app()
    try:
        yield handle
    finally:
        if previous is None:
            os.environ.pop(EMULATOR_HOST_ENV, None)
        else:
            os.environ[EMULATOR_HOST_ENV] = previous
        firebase.reset_app()  # the next module gets an app pointed at Google again
        handle.stop()


@pytest.fixture
def auth(emulator: Any) -> Any:
    """The emulator, emptied before each test."""
    tooling().reset_accounts(emulator.host, emulator.project)
    return emulator


def identity_url(emulator: Any, method: str) -> str:
    return f"{emulator.base_url}/identitytoolkit.googleapis.com/v1/{method}"


def sign_in(emulator: Any, phone: str) -> str:
    return tooling().phone_sign_in(emulator.host, phone, emulator.project)


def lookup(emulator: Any, uid: str) -> list[dict[str, Any]]:
    """The emulator's own record of ``uid`` (an admin lookup, independent of our code)."""
    response = requests.post(
        identity_url(emulator, f"projects/{emulator.project}/accounts:lookup"),
        json={"localId": [uid]},
        headers=ADMIN,
        timeout=10,
    )
    response.raise_for_status()
    users: list[dict[str, Any]] = response.json().get("users", [])
    return users


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def register(token: str, **body: Any) -> dict[str, Any]:
    response = bearer(token).post(
        "/api/v1/auth/register", {"role": "patient", "display_name": "Emu Lator", **body}, format="json"
    )
    assert response.status_code == 201, response.content
    data: dict[str, Any] = response.json()
    return data


def test_phone_sign_in_register_and_me(auth):
    phone = unique_phone()
    # 1. The app asks Firebase to text a code.
    sent = requests.post(
        identity_url(auth, "accounts:sendVerificationCode"),
        params={"key": "any"},
        json={"phoneNumber": phone},
        timeout=10,
    )
    assert sent.status_code == 200, sent.text
    session_info = sent.json()["sessionInfo"]
    # 2. The "SMS": the emulator shows the code it sent.
    codes = requests.get(
        f"{auth.base_url}/emulator/v1/projects/{auth.project}/verificationCodes", timeout=10
    ).json()["verificationCodes"]
    code = next(c["code"] for c in codes if c["sessionInfo"] == session_info)
    # 3. The user types it in: Firebase signs them in and returns an ID token.
    signed_in = requests.post(
        identity_url(auth, "accounts:signInWithPhoneNumber"),
        params={"key": "any"},
        json={"sessionInfo": session_info, "code": code},
        timeout=10,
    )
    assert signed_in.status_code == 200, signed_in.text
    id_token = signed_in.json()["idToken"]
    uid = signed_in.json()["localId"]

    # 4. Our API: register, then me.
    client = bearer(id_token)
    response = client.post(
        "/api/v1/auth/register", {"role": "patient", "display_name": "Emu Lator"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["phone_number"] == phone
    me = client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["id"] == response.json()["id"]
    user = User.objects.get(pk=me.json()["id"])
    assert (user.firebase_uid, user.phone_number) == (uid, phone)
    assert PatientProfile.objects.filter(user=user).exists()
    assert lookup(auth, uid)[0]["phoneNumber"] == phone

    # Signing in again (a new token for the same Firebase user) reaches the same account.
    again = bearer(sign_in(auth, phone)).post(
        "/api/v1/auth/register", {"role": "patient", "display_name": "Emu Lator"}, format="json"
    )
    assert again.status_code == 200
    assert again.json()["id"] == user.pk


def test_doctor_registers_through_the_emulator(auth):
    token = sign_in(auth, unique_phone())
    body = register(
        token,
        role="doctor",
        display_name="Dr Emu",
        specialty="dermatology",
        licence_number="EMU-1",
        jurisdiction="GB",
        consultation_fee=2500,
        currency="GBP",
    )
    assert body["doctor_profile"]["verification_status"] == "pending"
    assert DoctorProfile.objects.get(user_id=body["id"]).verification_status == "pending"


def test_revoked_tokens_are_refused(auth, settings):
    settings.FIREBASE_CHECK_REVOKED = True
    phone = unique_phone()
    token = sign_in(auth, phone)
    user_id = register(token)["id"]
    client = bearer(token)
    assert client.get("/api/v1/me").status_code == 200
    uid = User.objects.get(pk=user_id).firebase_uid
    assert uid is not None

    # Revocation has one-second granularity: a token issued in the revoking second still passes.
    time.sleep(1.1)
    firebase.revoke_refresh_tokens(uid)
    assert lookup(auth, uid)[0]["validSince"]
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_revoked"

    # Without the revocation check the old token is still accepted (it is only not yet expired).
    settings.FIREBASE_CHECK_REVOKED = False
    assert client.get("/api/v1/me").status_code == 200
    settings.FIREBASE_CHECK_REVOKED = True

    # Signing in again gives a fresh token for the same account.
    time.sleep(1.1)
    fresh = bearer(sign_in(auth, phone)).get("/api/v1/me")
    assert fresh.status_code == 200, fresh.content
    assert fresh.json()["id"] == user_id


def test_disabled_firebase_user_is_refused(auth, settings):
    settings.FIREBASE_CHECK_REVOKED = True
    token = sign_in(auth, unique_phone())
    user_id = register(token)["id"]
    uid = User.objects.get(pk=user_id).firebase_uid
    disabled = requests.post(
        identity_url(auth, f"projects/{auth.project}/accounts:update"),
        json={"localId": uid, "disableUser": True},
        headers=ADMIN,
        timeout=10,
    )
    assert disabled.status_code == 200, disabled.text
    response = bearer(token).get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "user_disabled"


def test_delete_me_deletes_the_firebase_user(auth, settings):
    phone = unique_phone()
    token = sign_in(auth, phone)
    user_id = register(token)["id"]
    uid = User.objects.get(pk=user_id).firebase_uid
    assert uid is not None
    assert lookup(auth, uid), "the emulator should know the user before deletion"

    client = bearer(token)
    assert client.delete("/api/v1/me").status_code == 204
    assert lookup(auth, uid) == []
    row = User.objects.get(pk=user_id)
    assert (row.phone_number, row.firebase_uid, row.is_active) == (None, None, False)
    assert row.deleted_at is not None

    # The old token no longer reaches an account...
    assert client.get("/api/v1/me").status_code == 403
    # ...and with the revocation check on, it is refused outright (it cannot even re-register).
    settings.FIREBASE_CHECK_REVOKED = True
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_revoked"
    again = client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Zombie"}, format="json")
    assert again.status_code == 401
    assert not User.objects.filter(phone_number=phone).exists()


def test_delete_user_command_deletes_the_firebase_user(auth):
    token = sign_in(auth, unique_phone())
    user_id = register(token)["id"]
    uid = User.objects.get(pk=user_id).firebase_uid
    assert uid is not None
    call_command("delete_user", str(user_id), stdout=StringIO())
    assert lookup(auth, uid) == []
    # Deleting a Firebase user that is already gone is fine (idempotent).
    firebase.delete_user(uid)
    firebase.revoke_refresh_tokens(uid)
