"""The one adapter around firebase-admin (Auth). Nothing else imports the SDK for auth.

Production verifies Firebase ID tokens with firebase-admin: RS256 signature against Google's
published certificates, expiry, audience (our project) and issuer, and revocation when
``FIREBASE_CHECK_REVOKED`` is on. Development may also use tokens from the local development
issuer (``manage.py dev_token``), which production settings refuse.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import firebase_admin
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from firebase_admin import auth as fb_auth
from firebase_admin import credentials
from firebase_admin.exceptions import FirebaseError
from google.auth.credentials import AnonymousCredentials

from core.errors import ApplicationError

logger = logging.getLogger("healthchat.accounts.firebase")

DEV_KEY_ID = "healthchat-dev"
DEV_UID_PREFIX = "dev-"
_APP_NAME = "healthchat"
_lock = threading.Lock()


class TokenError(ApplicationError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=401)


@dataclass(frozen=True)
class VerifiedToken:
    uid: str
    phone_number: str | None
    expires_at: int
    sign_in_provider: str | None


class _AnonymousCredential(credentials.Base):
    """Used without a service account: enough to verify tokens and to talk to the emulator."""

    def get_credential(self) -> Any:
        return AnonymousCredentials()


def app_credential() -> credentials.Base:
    """The service account when configured, else anonymous (token checks, the emulator, fakes).
    Shared with the push adapter (``notifications/fcm.py``)."""
    if settings.FIREBASE_CREDENTIALS:
        return credentials.Certificate(settings.FIREBASE_CREDENTIALS)
    return _AnonymousCredential()


@lru_cache(maxsize=1)
def _app() -> firebase_admin.App:
    with _lock:
        try:
            return firebase_admin.get_app(_APP_NAME)
        except ValueError:
            pass
        return firebase_admin.initialize_app(
            app_credential(), {"projectId": settings.FIREBASE_PROJECT_ID}, name=_APP_NAME
        )


def _is_dev_uid(uid: str) -> bool:
    return uid.startswith(DEV_UID_PREFIX)


def _dev_tokens_enabled() -> bool:
    return bool(settings.FIREBASE_DEV_TOKENS)


def verify_id_token(token: str) -> VerifiedToken:
    """Verify a Firebase ID token; raise ``TokenError`` (401) with a stable code if it fails."""
    if not token or len(token) > 8192:
        raise TokenError("invalid_token", "The token is missing or malformed.")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("invalid_token", "The token is malformed.") from exc
    if header.get("kid") == DEV_KEY_ID:
        if not _dev_tokens_enabled():
            raise TokenError("invalid_token", "Development tokens are not accepted here.")
        return _verify_dev_token(token)
    try:
        claims = fb_auth.verify_id_token(token, app=_app(), check_revoked=settings.FIREBASE_CHECK_REVOKED)
    except fb_auth.ExpiredIdTokenError as exc:
        raise TokenError("token_expired", "The token has expired.") from exc
    except fb_auth.RevokedIdTokenError as exc:
        raise TokenError("token_revoked", "The token has been revoked.") from exc
    except fb_auth.UserDisabledError as exc:
        raise TokenError("user_disabled", "This account is disabled.") from exc
    except fb_auth.UserNotFoundError as exc:
        # The revocation check looks the user up: a deleted account's tokens are dead.
        raise TokenError("token_revoked", "The account behind this token no longer exists.") from exc
    except fb_auth.CertificateFetchError as exc:
        logger.error("could not fetch Firebase certificates: %s", type(exc).__name__)
        raise _unavailable() from exc
    except (fb_auth.InvalidIdTokenError, ValueError) as exc:
        raise TokenError("invalid_token", "The token is invalid.") from exc
    except (TypeError, KeyError, AttributeError) as exc:
        # The SDK trips over some well-formed but odd JWTs (e.g. a non-object "d" claim).
        logger.warning("token verification failed: %s", type(exc).__name__)
        raise TokenError("invalid_token", "The token is invalid.") from exc
    except FirebaseError as exc:
        # The revocation check could not reach Firebase: neither accept nor blame the token.
        logger.error("firebase unavailable during token check: %s", type(exc).__name__)
        raise _unavailable() from exc
    return _to_verified(claims)


def _unavailable() -> ApplicationError:
    return ApplicationError("auth_unavailable", "Sign-in cannot be checked right now.", status=503)


def _to_verified(claims: dict[str, Any]) -> VerifiedToken:
    firebase_claims = claims.get("firebase") or {}
    return VerifiedToken(
        uid=str(claims["uid"] if "uid" in claims else claims["sub"]),
        phone_number=claims.get("phone_number"),
        expires_at=int(claims.get("exp", 0)),
        sign_in_provider=firebase_claims.get("sign_in_provider"),
    )


# --- Account administration ---------------------------------------------------------------
def delete_user(uid: str) -> None:
    """Delete the Firebase user (a missing user is fine: deletion is idempotent)."""
    if _is_dev_uid(uid):
        return
    try:
        fb_auth.delete_user(uid, app=_app())
    except fb_auth.UserNotFoundError:
        logger.info("firebase user already gone")
    except FirebaseError as exc:
        logger.error("could not delete firebase user: %s", type(exc).__name__)
        raise _unavailable() from exc


def revoke_refresh_tokens(uid: str) -> None:
    """Invalidate the user's refresh tokens (ID tokens issued before now fail ``check_revoked``)."""
    if _is_dev_uid(uid):
        return
    try:
        fb_auth.revoke_refresh_tokens(uid, app=_app())
    except fb_auth.UserNotFoundError:
        logger.info("firebase user already gone")
    except FirebaseError as exc:
        logger.error("could not revoke firebase tokens: %s", type(exc).__name__)
        raise _unavailable() from exc


def reset_app() -> None:
    """Forget the firebase-admin app, so the next call builds it from the current environment.

    firebase-admin fixes its endpoints (Google or ``FIREBASE_AUTH_EMULATOR_HOST``) when the app's
    auth client is first built; tests that switch to the emulator and back call this.
    """
    with _lock:
        _app.cache_clear()
        with contextlib.suppress(ValueError):
            firebase_admin.delete_app(firebase_admin.get_app(_APP_NAME))


# --- Development issuer (never in production) ---------------------------------------------
def _dev_private_key() -> rsa.RSAPrivateKey:
    path = Path(settings.DEV_TOKEN_KEY_PATH)
    if path.exists():
        return _load_dev_key(str(path), path.stat().st_mtime_ns)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return key


@lru_cache(maxsize=4)
def _load_dev_key(path: str, mtime_ns: int) -> rsa.RSAPrivateKey:
    """Parsing and checking an RSA key costs ~40 ms: once per key file (and version)."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _issuer() -> str:
    return f"https://securetoken.google.com/{settings.FIREBASE_PROJECT_ID}"


def mint_dev_token(phone_number: str, *, lifetime: int = 3600) -> str:
    """Issue a development ID token for ``phone_number`` (local runs without Google)."""
    if not _dev_tokens_enabled():
        raise ApplicationError(
            "dev_tokens_disabled", "Development tokens are disabled (FIREBASE_DEV_TOKENS).", status=403
        )
    now = int(time.time())
    uid = DEV_UID_PREFIX + uuid.uuid5(uuid.NAMESPACE_URL, f"tel:{phone_number}").hex
    claims = {
        "iss": _issuer(),
        "aud": settings.FIREBASE_PROJECT_ID,
        "auth_time": now,
        "iat": now,
        "exp": now + lifetime,
        "sub": uid,
        "phone_number": phone_number,
        "firebase": {"identities": {"phone": [phone_number]}, "sign_in_provider": "phone"},
    }
    return jwt.encode(claims, _dev_private_key(), algorithm="RS256", headers={"kid": DEV_KEY_ID})


def _verify_dev_token(token: str) -> VerifiedToken:
    public_key = _dev_private_key().public_key()
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=["RS256"],
            audience=settings.FIREBASE_PROJECT_ID,
            issuer=_issuer(),
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token_expired", "The token has expired.") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("invalid_token", "The token is invalid.") from exc
    return _to_verified(claims)
