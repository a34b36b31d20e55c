"""Who runs a staff action, and the one permission check every staff service makes.

Staff services (verify a doctor, erase, deactivate or sign out an account, place or release a
legal hold, refund a consultation) take the acting ``actor`` as a required keyword and call
``require_permission`` before they change anything, so the admin, a management command and any
future API are held to the same rule. The actor is either

- a ``User``: a staff account (the admin). Django's permissions decide: the account must be
  active staff and hold the permission (a superuser holds every one);
- an ``Operator``: someone with shell access running a management command. They could run SQL,
  so a permission check would protect nothing; instead the command says so explicitly
  (``Operator(command="delete_user")``) and writes its audit entry on the ``command`` channel.

There is no default and no ``None``: a caller that forgets the actor fails, it never runs as
nobody. The permissions (``Meta.permissions`` of the models) and which action needs which are
listed in the README ("Staff and operators").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from core.errors import ApplicationError

from .models import User

logger = logging.getLogger("healthchat.staff")


@dataclass(frozen=True)
class Operator:
    """An operator running ``command`` on the server: allowed every staff action, and recorded
    as such (audit channel ``command``, no actor id)."""

    command: str
    pk: ClassVar[None] = None
    is_staff: ClassVar[bool] = False

    def __str__(self) -> str:
        return f"operator ({self.command})"


Actor: TypeAlias = User | Operator


def may(actor: Any, perm: str) -> bool:
    """Whether ``actor`` holds ``perm`` ("app_label.codename")."""
    if isinstance(actor, Operator):
        return True
    if not isinstance(actor, User) or not actor.is_active or not actor.is_staff:
        return False
    return actor.has_perm(perm)


def require_permission(actor: Actor, perm: str) -> None:
    """Refuse (403 ``permission_denied``, naming the permission) unless ``actor`` holds ``perm``."""
    if not may(actor, perm):
        logger.info("staff action refused: %s lacks %s", getattr(actor, "pk", None), perm)
        raise ApplicationError(
            "permission_denied",
            f"This needs the {perm} permission.",
            status=403,
            extra={"permission": perm},
        )


def acting_user(actor: Actor) -> User | None:
    """The account to record as having acted (``verified_by``, a transition's actor), if any."""
    return actor if isinstance(actor, User) else None


def admin_permission(perm: str) -> Callable[[Any, Any], bool]:
    """A ModelAdmin ``has_<codename>_permission(request)`` method, for
    ``@admin.action(permissions=["<codename>"])`` and the admin's own views."""

    def has_permission(model_admin: Any, request: Any) -> bool:
        return may(request.user, perm)

    has_permission.__doc__ = f"Whether the signed-in staff user holds {perm}."
    return has_permission
