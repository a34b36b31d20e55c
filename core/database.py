"""How server processes hold PostgreSQL connections (``DATABASE_POOL_*``; docs/performance.md).

Under ASGI every HTTP request's sync code runs in a thread of its own. A persistent connection
(``CONN_MAX_AGE`` > 0) belongs to the thread that opened it: it outlived its request and its
thread, until the garbage collector happened to free it, so ordinary REST traffic opened one
connection per request and ran PostgreSQL out of them ("sorry, too many clients already",
answered 500 to every user of every process). Connections come instead from Django's psycopg
pool, per process: a request borrows one at its first query and gives it back when it ends.

- ``refuse_persistent_connections``: the ASGI application refuses to start with
  ``CONN_MAX_AGE`` other than 0 (an old ``.env`` with ``DATABASE_CONN_MAX_AGE=60``, or the pool
  turned off without resetting it), which would bring the hole back.
- ``pool_exhausted``: whether an error is the pool's timeout (every connection of this process
  stayed in use for ``DATABASE_POOL_TIMEOUT`` seconds); the REST error handler answers it 503
  ``server_busy`` with ``Retry-After`` instead of 500.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from psycopg_pool import PoolTimeout

# Seconds a client is asked to wait after ``server_busy`` (the pool frees a connection as soon
# as any request of this process ends: a second is plenty).
BUSY_RETRY_AFTER = 1


def refuse_persistent_connections(databases: dict[str, dict[str, Any]] | None = None) -> None:
    """Raise ``ImproperlyConfigured`` when a database keeps connections past their request."""
    for alias, config in (databases if databases is not None else settings.DATABASES).items():
        if config.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured(
                f"DATABASES[{alias!r}]['CONN_MAX_AGE'] is {config['CONN_MAX_AGE']!r}: under ASGI "
                "each request runs in a thread of its own, and a persistent connection stays with "
                "that thread after the request, one PostgreSQL connection per request. Unset "
                "DATABASE_CONN_MAX_AGE (0) and size the pool instead (DATABASE_POOL_MAX_SIZE; "
                "docs/performance.md)."
            )


def pool_exhausted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was raised from, the connection pool's timeout (Django wraps it
    in its own ``OperationalError``)."""
    for _ in range(8):  # a chain of causes is short; never loop on a cycle
        if exc is None:
            return False
        if isinstance(exc, PoolTimeout):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
