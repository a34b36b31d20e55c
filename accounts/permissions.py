"""DRF permissions: registered users by default; registrants may only register."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .authentication import Registrant
from .models import User


class IsRegistered(BasePermission):
    message = "Register first (POST /api/v1/auth/register)."
    code = "not_registered"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if isinstance(user, Registrant):
            return False
        return isinstance(user, User) and user.is_active and user.deleted_at is None


class HasFirebaseToken(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, Registrant | User)


def request_user(request: Request) -> User:
    """The registered caller of a view guarded by ``IsRegistered`` (the default permission)."""
    user = request.user
    assert isinstance(user, User)
    return user
