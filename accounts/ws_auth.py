"""Socket authentication: the same token check as REST, plus the socket's device."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from audit import actions as audited
from audit import client as audit_client
from audit import services as audit
from audit.models import AuditEntry
from core.errors import ApplicationError

from . import firebase, selectors
from .authentication import Registrant, authenticate_token, principal_for
from .models import Device, User

logger = logging.getLogger("healthchat.accounts")


SocketAuthResult = tuple[User, firebase.VerifiedToken, int | None]


@dataclass(frozen=True)
class SocketAuth:
    """One socket's sign-in: its token, the device it names, where it came from."""

    token: str
    device_id: int | None = None
    scope: Mapping[str, Any] | None = None


def authenticate_socket(
    token: str, device_id: int | None, scope: Mapping[str, Any] | None = None
) -> SocketAuthResult:
    """Verify ``token`` and the optional ``device_id`` (must be the caller's own device).

    Each attempt is one ``auth.signin`` audit entry (ok or denied, with the error code);
    ``scope`` (the socket's ASGI scope) says where it came from."""
    answer = authenticate_sockets([SocketAuth(token, device_id, scope)])[0]
    if isinstance(answer, BaseException):
        raise answer
    return answer


def authenticate_sockets(requests: list[SocketAuth]) -> list[SocketAuthResult | Exception]:
    """``authenticate_socket`` for many sockets at once (a reconnect storm, ``coalesce``): each
    token verified on its own, then one query for all their users, one for the devices they
    name and one INSERT for all their ``auth.signin`` entries. Each socket gets its own answer:
    the user, or the error it is refused with (denied entries carry its code)."""
    answers: list[SocketAuthResult | Exception | None] = [None] * len(requests)
    verified: dict[int, firebase.VerifiedToken] = {}
    for i, request in enumerate(requests):
        try:
            verified[i] = firebase.verify_id_token(request.token)
        except Exception as exc:  # ApplicationError: refused (audited below); else internal
            answers[i] = exc
    users = selectors.users_by_firebase_uid(uids=[v.uid for v in verified.values()])
    principals: dict[int, User | Registrant] = {}
    for i, token in verified.items():
        try:
            principals[i] = principal_for(token, users.get(token.uid))[0]
        except ApplicationError as exc:
            answers[i] = exc
    named = {
        requests[i].device_id: principal.pk
        for i, principal in principals.items()
        if requests[i].device_id is not None and isinstance(principal, User)
    }
    owners = dict(Device.objects.filter(pk__in=list(named)).values_list("pk", "user_id")) if named else {}
    for i, principal in principals.items():
        device_id = requests[i].device_id
        if isinstance(principal, Registrant):
            answers[i] = ApplicationError(
                "not_registered", "Register first (POST /api/v1/auth/register).", status=403
            )
        elif device_id is not None and owners.get(device_id) != principal.pk:
            answers[i] = ApplicationError(
                "device_not_found", "This device is not registered to you.", status=403
            )
        else:
            answers[i] = (principal, verified[i], device_id)
    entries: list[tuple[int, AuditEntry]] = []
    for i, answer in enumerate(answers):
        client = audit_client.from_scope(requests[i].scope or {})
        if isinstance(answer, ApplicationError):
            row = audit.entry(
                audited.AUTH_SIGNIN,
                actor=principals.get(i),
                outcome=AuditEntry.Outcome.DENIED,
                code=answer.code,
                client=client,
            )
            entries.append((i, row))
        elif isinstance(answer, tuple):
            entries.append((i, audit.entry(audited.AUTH_SIGNIN, actor=answer[0], client=client)))
    try:
        with transaction.atomic():  # a savepoint when the caller has a transaction
            audit.record_many([row for _i, row in entries])
    except Exception:
        # One entry at a time, as each socket alone would have written it: a refusal stays a
        # refusal (its entry is best-effort); a sign-in that cannot be audited is refused.
        logger.warning("could not write %d auth.signin entries at once", len(entries), exc_info=True)
        for i, row in entries:
            try:
                with transaction.atomic():
                    row.save(force_insert=True)
            except Exception as exc:
                if isinstance(answers[i], tuple):
                    answers[i] = exc
                else:
                    logger.warning("could not write the audit entry for auth.signin", exc_info=True)
    assert all(answer is not None for answer in answers)
    return answers  # type: ignore[return-value]


def reverify_socket(token: str, user_id: int) -> firebase.VerifiedToken:
    """``auth.refresh``: a new token for the same user."""
    principal, verified = authenticate_token(token)
    if not isinstance(principal, User) or principal.pk != user_id:
        raise ApplicationError("token_user_mismatch", "The new token belongs to another user.", status=401)
    return verified
