"""Writing the audit log: one function, ``record``, that everything calls (one INSERT).

- ``record``: inside the caller's transaction when there is one (a legal hold change and its
  entry commit together); raises if the row cannot be written, so a read that cannot be
  audited is not served.
- ``record_quietly``: for refusals and sign-in failures, where the answer is already an
  error: a failed write is logged (codes only) and never replaces that answer.
- ``record_many``: several entries in one INSERT.
- ``arecord_socket_denial``: from the socket's event loop, through ``run_service``.

Nothing here accepts free text: actions are codes from ``actions.ACTIONS``, objects are a type
code and an id, refusals carry their error code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from django.db import connection, transaction

from . import actions
from .client import SYSTEM, Client, from_request, from_scope
from .models import CODE_PATTERN, OBJECT_ID_PATTERN, AuditEntry

logger = logging.getLogger("healthchat.audit")

_CODE = re.compile(CODE_PATTERN)
_OBJECT_ID = re.compile(OBJECT_ID_PATTERN)
# Socket frame fields that name the object a frame is about, in order of preference.
_FRAME_OBJECTS = ("message_id", "conversation_id", "call_id", "consultation_id", "attachment_id")


def _actor(actor: Any) -> tuple[int | None, bool]:
    if actor is None or isinstance(actor, bool):
        return None, False
    if isinstance(actor, int):
        return actor, False
    pk = getattr(actor, "pk", None)
    if not isinstance(pk, int):
        return None, False  # anonymous, or signed in to Firebase but not registered
    return pk, bool(getattr(actor, "is_staff", False))


def request_actor(request: Any) -> Any:
    """The caller of a request, without running authentication again (DRF keeps it in
    ``_user`` once it has run; a Django request has ``user`` from the auth middleware)."""
    if hasattr(request, "_request"):  # DRF Request
        return getattr(request, "_user", None)
    return getattr(request, "user", None)


def _code(value: str) -> str:
    value = (value or "")[:64]
    return value if _CODE.match(value) else "invalid_code"


def _object_id(value: Any) -> str:
    text = "" if value is None else str(value)[:64]
    return text if _OBJECT_ID.match(text) else ""


def entry(
    action: str,
    *,
    actor: Any = None,
    object_type: str = "",
    object_id: Any = None,
    outcome: str = AuditEntry.Outcome.OK,
    code: str = "",
    client: Client | None = None,
    request: Any = None,
) -> AuditEntry:
    """An unsaved entry (see ``record``)."""
    if action not in actions.ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if outcome not in AuditEntry.Outcome.values:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    if request is not None:
        client = client or from_request(request)
        if actor is None:
            actor = request_actor(request)
    client = client or SYSTEM
    actor_id, staff = _actor(actor)
    return AuditEntry(
        actor_id=actor_id,
        actor_staff=staff,
        action=action,
        object_type=_code(object_type) if object_type else "",
        object_id=_object_id(object_id),
        outcome=outcome,
        code=_code(code) if code else "",
        channel=client.channel,
        ip=client.ip,
        user_agent=client.user_agent,
    )


def record(
    action: str,
    *,
    actor: Any = None,
    object_type: str = "",
    object_id: Any = None,
    outcome: str = AuditEntry.Outcome.OK,
    code: str = "",
    client: Client | None = None,
    request: Any = None,
) -> AuditEntry:
    """Append one entry. ``actor``: a user, a user id or None; ``request`` (Django or DRF)
    gives the client and, unless ``actor`` is given, the caller; else ``client``."""
    row = entry(
        action,
        actor=actor,
        object_type=object_type,
        object_id=object_id,
        outcome=outcome,
        code=code,
        client=client,
        request=request,
    )
    row.save(force_insert=True)
    return row


def record_many(entries: list[AuditEntry]) -> None:
    """Append several entries (built with ``entry``) in one INSERT."""
    if entries:
        AuditEntry.objects.bulk_create(entries)


def record_quietly(action: str, **kwargs: Any) -> AuditEntry | None:
    """``record`` for paths that already answer with an error: never raises; inside a
    transaction the insert runs in a savepoint so a failure cannot poison it."""
    try:
        if connection.in_atomic_block:
            with transaction.atomic():
                return record(action, **kwargs)
        return record(action, **kwargs)
    except Exception:
        logger.warning("could not write the audit entry for %s", action, exc_info=True)
        return None


def frame_object(data: Any) -> tuple[str, Any]:
    """(object type, id) a socket frame's ``data`` is about, or ("", None)."""
    for name in _FRAME_OBJECTS:
        value = getattr(data, name, None) if not isinstance(data, Mapping) else data.get(name)
        if isinstance(value, int | str) and not isinstance(value, bool):
            return name.removesuffix("_id"), value
    return "", None


def _socket_denial(*, user: Any, frame_type: str, data: Any, code: str, client: Client) -> None:
    object_type, object_id = frame_object(data)
    record_quietly(
        actions.AUTHZ_DENIED,
        actor=user,
        object_type=object_type or _code(frame_type),
        object_id=object_id,
        outcome=AuditEntry.Outcome.DENIED,
        code=code,
        client=client,
    )


async def arecord_socket_denial(*, scope: Mapping[str, Any], user: Any, frame: Any, code: str) -> None:
    """A socket frame was refused as forbidden or not found: one entry, written off the event
    loop. Never raises (the error frame has been sent already)."""
    from core.realtime import run_service

    try:
        await run_service(
            _socket_denial,
            user=user,
            frame_type=str(getattr(frame, "type", "")),
            data=getattr(frame, "data", None),
            code=code,
            client=from_scope(scope),
        )
    except Exception:
        logger.warning("could not write the audit entry for a socket refusal", exc_info=True)
