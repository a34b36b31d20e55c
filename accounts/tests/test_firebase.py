"""Firebase ID tokens on REST: real RS256 signatures checked by firebase-admin.

The throwaway key's certificate is served at Google's certificate URL (root conftest), so
signature, ``kid``, expiry, audience and issuer are all checked by the real SDK.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

import jwt
import pytest

from accounts import firebase
from accounts.models import User
from accounts.tests.factories import PatientFactory
from accounts.tests.helpers import assert_error
from conftest import PROJECT_ID, TEST_KID, unique_phone

pytestmark = pytest.mark.django_db

ME = "/api/v1/me"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict, claims: dict, signature: bytes = b"") -> str:
    """A JWT assembled by hand (PyJWT refuses to build the malicious ones)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture
def patient():
    return PatientFactory()


def test_emulator_mode_is_off():
    """Emulator mode skips signature checks: it must never leak into these tests."""
    assert "FIREBASE_AUTH_EMULATOR_HOST" not in os.environ


# --- accepted ------------------------------------------------------------------------------
def test_valid_token_is_accepted(patient, make_token, bearer):
    response = bearer(make_token(patient.firebase_uid, patient.phone_number)).get(ME)
    assert response.status_code == 200, response.content
    assert response.json()["id"] == patient.pk
    assert response.json()["phone_number"] == patient.phone_number


def test_valid_token_of_unknown_user_may_only_register(make_token, bearer):
    client = bearer(make_token(phone_number=unique_phone()))
    assert_error(client.get(ME), 403, "not_registered")
    assert_error(client.get("/api/v1/doctors"), 403, "not_registered")
    assert client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Ann"}).status_code == 201


# --- refused -------------------------------------------------------------------------------
def test_expired_token(patient, make_token, bearer):
    now = int(time.time())
    token = make_token(
        patient.firebase_uid, patient.phone_number, lifetime=-60, iat=now - 3660, auth_time=now - 3660
    )
    response = bearer(token).get(ME)
    assert_error(response, 401, "token_expired")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_wrong_audience(patient, make_token, bearer):
    token = make_token(patient.firebase_uid, patient.phone_number, aud="someone-elses-project")
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_wrong_issuer(patient, make_token, bearer):
    token = make_token(
        patient.firebase_uid, patient.phone_number, iss="https://securetoken.google.com/someone-else"
    )
    assert_error(bearer(token).get(ME), 401, "invalid_token")
    token = make_token(patient.firebase_uid, patient.phone_number, iss="https://evil.example/" + PROJECT_ID)
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_unknown_key_id(patient, make_token, bearer):
    token = make_token(patient.firebase_uid, patient.phone_number, kid="no-such-key")
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_missing_key_id(patient, token_minter, bearer):
    claims = token_minter.claims(patient.firebase_uid, patient.phone_number)
    token = jwt.encode(claims, token_minter.key, algorithm="RS256")
    assert "kid" not in jwt.get_unverified_header(token)
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_bad_signature(patient, make_token, token_minter, bearer):
    token = make_token(patient.firebase_uid, patient.phone_number, key=token_minter.other_key)
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_tampered_payload(patient, make_token, bearer):
    """A genuine token whose claims were edited after signing (another user's uid)."""
    other = PatientFactory()
    header, _, signature = make_token(patient.firebase_uid, patient.phone_number).split(".")
    claims = jwt.decode(
        make_token(other.firebase_uid, other.phone_number), options={"verify_signature": False}
    )
    token = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_alg_none(patient, token_minter, bearer):
    claims = token_minter.claims(patient.firebase_uid, patient.phone_number)
    for header in ({"alg": "none", "typ": "JWT", "kid": TEST_KID}, {"alg": "none", "typ": "JWT"}):
        assert_error(bearer(craft(header, claims)).get(ME), 401, "invalid_token")


def test_hs256_signed_with_the_public_certificate(patient, token_minter, bearer):
    """Algorithm confusion: an HMAC keyed with the (public) certificate must not verify."""
    claims = token_minter.claims(patient.firebase_uid, patient.phone_number)
    header = {"alg": "HS256", "typ": "JWT", "kid": TEST_KID}
    signing_input = craft(header, claims).rsplit(".", 1)[0]
    for secret in (token_minter.cert_pem.encode(), token_minter.certs_json().encode()):
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert_error(bearer(f"{signing_input}.{b64(signature)}").get(ME), 401, "invalid_token")


def test_issued_in_the_future(patient, make_token, bearer):
    now = int(time.time())
    token = make_token(patient.firebase_uid, patient.phone_number, iat=now + 600, auth_time=now + 600)
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_custom_token_audience_is_refused(patient, make_token, bearer):
    """A custom token (audience = the Identity Toolkit) is not an ID token."""
    aud = "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit"
    token = make_token(patient.firebase_uid, patient.phone_number, aud=aud)
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_empty_or_oversized_subject(token_minter, bearer):
    for sub in ("", "x" * 129):
        token = jwt.encode(
            token_minter.claims(sub, unique_phone()),
            token_minter.key,
            algorithm="RS256",
            headers={"kid": TEST_KID},
        )
        assert_error(bearer(token).get(ME), 401, "invalid_token")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer " + "x" * 9000,
        "Bearer two tokens",
        "Bearer",
    ],
)
def test_malformed_tokens(api, header):
    api.credentials(HTTP_AUTHORIZATION=header)
    assert_error(api.get(ME), 401, "invalid_token")


def test_no_token_and_other_schemes(api):
    assert_error(api.get(ME), 401, "not_authenticated")
    api.credentials(HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert_error(api.get(ME), 401, "not_authenticated")


def test_error_body_leaks_no_sdk_detail(patient, make_token, bearer):
    """The SDK's message names the expected project; clients only get our stable text."""
    token = make_token(patient.firebase_uid, patient.phone_number, aud="someone-elses-project")
    body = bearer(token).get(ME).content
    assert PROJECT_ID.encode() not in body
    assert b"someone-elses-project" not in body


def test_deactivated_user_is_refused(make_token, bearer):
    user = PatientFactory(is_active=False)
    assert_error(bearer(make_token(user.firebase_uid, user.phone_number)).get(ME), 401, "user_inactive")


# --- development tokens (``manage.py dev_token``) ---------------------------------------------
@pytest.fixture
def dev_tokens(settings, tmp_path):
    settings.FIREBASE_DEV_TOKENS = True
    settings.DEV_TOKEN_KEY_PATH = tmp_path / "dev-token-key.pem"
    return settings


def test_dev_token_accepted_when_enabled(dev_tokens, bearer):
    phone = unique_phone()
    client = bearer(firebase.mint_dev_token(phone))
    assert (dev_tokens.DEV_TOKEN_KEY_PATH.stat().st_mode & 0o777) == 0o600
    response = client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Dev"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["phone_number"] == phone
    me = client.get(ME)
    assert me.status_code == 200
    assert me.json()["id"] == response.json()["id"]


def test_dev_token_refused_when_disabled(dev_tokens, bearer):
    phone = unique_phone()
    token = firebase.mint_dev_token(phone)
    client = bearer(token)
    assert client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Dev"}).status_code == 201
    dev_tokens.FIREBASE_DEV_TOKENS = False
    assert_error(client.get(ME), 401, "invalid_token")
    assert_error(
        client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Dev"}), 401, "invalid_token"
    )


def test_minting_refused_when_disabled(settings):
    settings.FIREBASE_DEV_TOKENS = False
    with pytest.raises(firebase.ApplicationError) as excinfo:
        firebase.mint_dev_token(unique_phone())
    assert excinfo.value.code == "dev_tokens_disabled"


def test_dev_kid_signed_with_another_key_is_refused(dev_tokens, token_minter, bearer):
    claims = token_minter.claims(firebase.DEV_UID_PREFIX + "forged", unique_phone())
    token = jwt.encode(
        claims, token_minter.other_key, algorithm="RS256", headers={"kid": firebase.DEV_KEY_ID}
    )
    firebase.mint_dev_token(unique_phone())  # the real development key exists
    assert_error(bearer(token).get(ME), 401, "invalid_token")


def test_dev_token_expired_and_wrong_audience(dev_tokens, bearer):
    expired = firebase.mint_dev_token(unique_phone(), lifetime=-10)
    assert_error(bearer(expired).get(ME), 401, "token_expired")
    key = firebase._dev_private_key()
    claims = jwt.decode(firebase.mint_dev_token(unique_phone()), options={"verify_signature": False})
    claims["aud"] = "someone-elses-project"
    forged = jwt.encode(claims, key, algorithm="RS256", headers={"kid": firebase.DEV_KEY_ID})
    assert_error(bearer(forged).get(ME), 401, "invalid_token")
    none_alg = craft({"alg": "none", "kid": firebase.DEV_KEY_ID}, claims)
    assert_error(bearer(none_alg).get(ME), 401, "invalid_token")


# --- the phone number comes from the token ---------------------------------------------------
def test_phone_number_comes_from_the_token_never_the_body(make_token, bearer):
    token_phone, body_phone = unique_phone(), unique_phone()
    client = bearer(make_token(phone_number=token_phone))
    refused = client.post(
        "/api/v1/auth/register",
        {"role": "patient", "display_name": "Ann", "phone_number": body_phone},
        format="json",
    )
    error = assert_error(refused, 400, "invalid")
    assert error["fields"]["phone_number"][0]["code"] == "unknown_field"
    assert not User.objects.filter(phone_number__in=[token_phone, body_phone]).exists()

    created = client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Ann"}, format="json")
    assert created.status_code == 201
    assert created.json()["phone_number"] == token_phone
    patch = client.patch(ME, {"phone_number": body_phone}, format="json")
    assert_error(patch, 400, "invalid")
    assert User.objects.get(pk=created.json()["id"]).phone_number == token_phone
    assert not User.objects.filter(phone_number=body_phone).exists()


def test_token_without_phone_number_cannot_register(make_token, bearer):
    client = bearer(make_token(phone_number=None))
    response = client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Ann"}, format="json")
    assert_error(response, 400, "phone_number_required")
    assert User.objects.count() == 0


def test_token_phone_number_is_normalised(make_token, bearer):
    client = bearer(make_token(phone_number="+1 (202) 555-0143"))
    response = client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Ann"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["phone_number"] == "+12025550143"
