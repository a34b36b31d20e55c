"""DRF authentication with Firebase ID tokens (``Authorization: Bearer <token>``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from core.errors import ApplicationError

from . import firebase, selectors
from .models import User


@dataclass
class Registrant:
    """A caller with a valid Firebase token who has not registered yet: may only register."""

    token: firebase.VerifiedToken
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    pk: None = None
    id: None = None


def bearer_token(request: Request) -> str | None:
    header = get_authorization_header(request).split()
    if not header or header[0].lower() != b"bearer":
        return None
    if len(header) != 2:
        raise exceptions.AuthenticationFailed("Malformed Authorization header.", code="invalid_token")
    try:
        return header[1].decode("ascii")
    except UnicodeDecodeError as exc:
        raise exceptions.AuthenticationFailed("Malformed token.", code="invalid_token") from exc


def authenticate_token(token: str) -> tuple[User | Registrant, firebase.VerifiedToken]:
    """Shared by REST and WebSocket: verified token → our user (or a registrant)."""
    verified = firebase.verify_id_token(token)
    return principal_for(verified, selectors.user_get_by_firebase_uid(uid=verified.uid))


def principal_for(
    verified: firebase.VerifiedToken, user: User | None
) -> tuple[User | Registrant, firebase.VerifiedToken]:
    """``authenticate_token`` once the token is verified and its user looked up."""
    if user is None:
        return Registrant(token=verified), verified
    if not user.is_active:
        raise ApplicationError("user_inactive", "This account is deactivated.", status=401)
    return user, verified


class FirebaseAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        token = bearer_token(request)
        if token is None:
            return None
        try:
            return authenticate_token(token)
        except ApplicationError as exc:
            if exc.status != 401:
                raise
            # As DRF's own failure, so the 401 carries ``WWW-Authenticate`` (RFC 7235); the
            # error handler keeps the stable code (``token_expired``, ``invalid_token``...).
            raise exceptions.AuthenticationFailed(exc.message, code=exc.code) from exc

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
