"""Reads that tolerate lag go to a PostgreSQL streaming replica (``DATABASE_REPLICA_URL``).

Off unless ``DATABASE_REPLICA_URL`` is set (the settings then add the ``replica`` database and
this router). Everything reads and writes the primary (``default``) except what a view asks for
explicitly, and only for a caller who has not written lately:

- ``lag_tolerant(fn, user_id=..., **kwargs)``: run a selector with its reads on the replica
  (history pages: ``messaging/apis.py``); ``using_replica(queryset, user_id=...)``: a queryset
  evaluated there (the doctor directory: ``accounts/apis.py``). Never ``sync``, never a send,
  never an authorization check that precedes a write.
- **Read your writes.** A caller's writes (a REST request with an unsafe method:
  ``ReadYourWritesMiddleware``; a socket frame that may write: ``messaging/consumers.py``) stamp
  the user for ``DATABASE_REPLICA_STICKY_SECONDS`` (a key in the cache, i.e. Redis, so every
  process sees it); a stamped user's lag-tolerant reads stay on the primary. The window must be
  longer than the replica's worst replay lag (docs/scaling.md: alert on lag above it).
- **Fallbacks.** A replica read that fails (the replica down, or an answer that only lag can
  explain: a membership not replicated yet, ``404``/``403``) is asked again of the primary; after
  a failure the process skips the replica for ``REPLICA_BACKOFF_SECONDS``. Its connections wait
  at most ``DATABASE_REPLICA_POOL_TIMEOUT`` (default 2 s) for a connection.

Writes always go to the primary, even for an object read from the replica; the replica is never
migrated.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.db.models import Model, QuerySet

from core.errors import ApplicationError

logger = logging.getLogger("healthchat.replica")

REPLICA = "replica"
STAMP_KEY = "replica:wrote:{user_id}"
T = TypeVar("T")
M = TypeVar("M", bound=Model)

_on_replica: contextvars.ContextVar[bool] = contextvars.ContextVar("healthchat_replica_reads", default=False)


def enabled() -> bool:
    return REPLICA in settings.DATABASES


def sticky_seconds() -> float:
    return float(getattr(settings, "DATABASE_REPLICA_STICKY_SECONDS", 5.0))


class ReplicaRouter:
    """``settings.DATABASE_ROUTERS`` when a replica is configured: reads on the replica only
    inside ``lag_tolerant``; writes, migrations and every other read on the primary."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        return REPLICA if _on_replica.get() else DEFAULT_DB_ALIAS

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS  # even for an instance read from the replica

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        return True  # the same data on both

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS


# --- read your writes ---------------------------------------------------------------------------
def note_write(user_id: int, *, seconds: float | None = None) -> None:
    """``user_id`` wrote (or is about to): its lag-tolerant reads stay on the primary for the
    sticky window (or ``seconds``). A cache outage is logged: meanwhile ``wrote_recently``
    cannot read the stamps either and answers ``True`` (the primary)."""
    if not enabled():
        return
    try:
        cache.set(STAMP_KEY.format(user_id=user_id), 1, timeout=seconds or sticky_seconds())
    except Exception:
        logger.warning("replica: could not stamp a write", exc_info=True)


def wrote_recently(user_id: int) -> bool:
    """Within the sticky window of a write by ``user_id``; ``True`` if the cache cannot say."""
    try:
        return cache.get(STAMP_KEY.format(user_id=user_id)) is not None
    except Exception:
        logger.warning("replica: could not read a write stamp; reading the primary", exc_info=True)
        return True


class SocketStamps:
    """One socket's write stamps: a frame that may write stamps its user (``seconds``), but at
    most once per half window, for one and a half windows: a write that takes no new stamp came
    less than half a window after the last one, so it is still covered for a whole window."""

    __slots__ = ("_last",)  # one per open socket

    def __init__(self) -> None:
        self._last = float("-inf")

    def due(self) -> bool:
        if not enabled():
            return False
        now = time.monotonic()
        if now - self._last < sticky_seconds() / 2:
            return False
        self._last = now
        return True

    @staticmethod
    def seconds() -> float:
        return sticky_seconds() * 1.5


# --- lag-tolerant reads -------------------------------------------------------------------------
@contextlib.contextmanager
def _reads_on_replica() -> Iterator[None]:
    token = _on_replica.set(True)
    try:
        yield
    finally:
        _on_replica.reset(token)


# After a replica failure this process leaves the replica alone for a while: a replica that is
# down would otherwise cost every lag-tolerant read its connection timeout before the primary.
REPLICA_BACKOFF_SECONDS = 10.0
_replica_down_until = 0.0


def replica_failed() -> None:
    global _replica_down_until
    _replica_down_until = time.monotonic() + REPLICA_BACKOFF_SECONDS


def use_replica(user_id: int | None) -> bool:
    """Whether this caller's lag-tolerant reads may go to the replica now."""
    if not enabled() or time.monotonic() < _replica_down_until:
        return False
    return user_id is None or not wrote_recently(user_id)


def lag_tolerant(fn: Callable[..., T], *, user_id: int | None, **kwargs: Any) -> T:
    """``fn(**kwargs)``'s reads on the replica when ``use_replica`` for ``user_id``; on the primary
    otherwise, or again there when the replica fails or refuses (see the module)."""
    call_kwargs = dict(kwargs)
    if not use_replica(user_id):
        return fn(**call_kwargs)
    try:
        with _reads_on_replica():
            return fn(**call_kwargs)
    except ApplicationError as exc:
        logger.info("replica: read asked again of the primary (%s)", type(exc).__name__)
    except DatabaseError:
        logger.warning(
            "replica: read failed; the primary answers (replica skipped for a while)", exc_info=True
        )
        replica_failed()
    return fn(**call_kwargs)


def using_replica(queryset: QuerySet[M], *, user_id: int | None) -> QuerySet[M]:
    """``queryset`` evaluated on the replica when ``use_replica`` (public, lag-tolerant lists);
    a replica that cannot be reached is the caller's 5xx: keep this for reads a client retries."""
    return queryset.using(REPLICA) if use_replica(user_id) else queryset


class ReadYourWritesMiddleware:
    """A REST request with an unsafe method stamps its authenticated caller (``note_write``),
    before its response goes out: the caller's next lag-tolerant read sees what it wrote."""

    UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if request.method in self.UNSAFE and enabled():
            user = getattr(request, "user", None)
            if user is not None and getattr(user, "is_authenticated", False):
                note_write(int(user.pk))
        return response
