"""Socket authentication: the same token check as REST, plus the socket's device."""

from __future__ import annotations

from healthchat.errors import ApplicationError

from . import firebase
from .authentication import Registrant, authenticate_token
from .models import Device, User


def authenticate_socket(token: str, device_id: int | None) -> tuple[User, firebase.VerifiedToken, int | None]:
    """Verify ``token`` and the optional ``device_id`` (must be the caller's own device)."""
    principal, verified = authenticate_token(token)
    if isinstance(principal, Registrant):
        raise ApplicationError("not_registered", "Register first (POST /api/v1/auth/register).", status=403)
    if device_id is not None and not Device.objects.filter(pk=device_id, user=principal).exists():
        raise ApplicationError("device_not_found", "This device is not registered to you.", status=403)
    return principal, verified, device_id


def reverify_socket(token: str, user_id: int) -> firebase.VerifiedToken:
    """``auth.refresh``: a new token for the same user."""
    principal, verified = authenticate_token(token)
    if not isinstance(principal, User) or principal.pk != user_id:
        raise ApplicationError("token_user_mismatch", "The new token belongs to another user.", status=401)
    return verified
