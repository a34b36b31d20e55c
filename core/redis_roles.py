"""Where each kind of Redis traffic goes: one Redis (``REDIS_URL``) by default, or a Redis per role,
each either at a fixed address or behind Redis Sentinel (a master name and the sentinels).

Roles (``ROLES``):

- ``channel_layer``: the pub/sub channel layer (``core/channel_layer.py``, channels-redis);
- ``presence``: the presence register and the per-user send limit (``messaging/presence.py``,
  ``messaging/send_limits.py``);
- ``cache``: Django's cache and what counts in it (REST throttles, prekey budgets);
- ``broker``: Celery's broker (``CELERY_BROKER_URL`` given explicitly wins: e.g. ``amqp://``).

A role's URL is ``REDIS_<ROLE>_URL`` (the broker's: ``CELERY_BROKER_URL``), else ``REDIS_URL``.
A role that follows ``REDIS_URL`` also follows ``REDIS_SENTINELS`` (``host:port,host:port``) and
``REDIS_SENTINEL_MASTER``; a role with a URL of its own is behind Sentinel only with its own
``REDIS_<ROLE>_SENTINELS`` / ``REDIS_<ROLE>_SENTINEL_MASTER``. Behind Sentinel, the master's
address comes from the sentinels and the URL gives only the database number and password
(``redis://:password@mymaster/0``; the host part is not used). ``REDIS_SENTINEL_PASSWORD``: the
sentinels' own password, if they have one.

Every client made for a Sentinel role retries a command once, at once (``Retry(NoBackoff(), 1)``):
that absorbs the one error of a pooled connection to a master that is gone (the retry reconnects,
asking Sentinel for the master again). redis-py's default backoff would keep retrying, nested in
its connect retries, the old master for as long as Sentinel still names it (14 s seen;
redis/redis-py#3874); the callers' own retries (the channel layer's resubscription loop, the
next heartbeat, the next request or task) each start on a fresh connection instead.

This module is imported by the settings: nothing here may read Django's settings at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool

ROLES = ("channel_layer", "presence", "cache", "broker")
DEFAULT_MASTER = "mymaster"
# Seconds: connecting to a Redis (or a sentinel) that is gone fails this fast on a network where a
# dead host does not refuse (on loopback a killed process refuses at once).
CONNECT_TIMEOUT = 2.0
SENTINEL_TIMEOUT = 1.0


@dataclass(frozen=True)
class RedisTarget:
    """One role's Redis: ``url`` (redis:// or rediss://) and, behind Sentinel, the sentinels'
    addresses and the master's name."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_password: str | None = None

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def db(self) -> int:
        path = urlsplit(self.url).path.strip("/")
        return int(path) if path.isdigit() else 0

    @property
    def password(self) -> str | None:
        password = urlsplit(self.url).password
        return unquote(password) if password else None

    @property
    def username(self) -> str | None:
        username = urlsplit(self.url).username
        return unquote(username) if username else None

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Connection options for the sentinels themselves."""
        options: dict[str, Any] = {
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
        }
        if self.sentinel_password:
            options["password"] = self.sentinel_password
        return options

    def master_kwargs(self, *, asyncio: bool) -> dict[str, Any]:
        """Connection options for the master behind Sentinel (database, credentials, one
        immediate retry; redis-py's asyncio clients need its asyncio ``Retry``)."""
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {
            "db": self.db,
            "retry": AsyncRetry(NoBackoff(), 1) if asyncio else Retry(NoBackoff(), 1),
            "socket_connect_timeout": CONNECT_TIMEOUT,
        }
        if self.password:
            options["password"] = self.password
        if self.username:
            options["username"] = self.username
        return options

    def describe(self) -> str:
        """For logs and errors: where the role goes, without credentials."""
        if self.uses_sentinel:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {self.master_name} via {hosts} db {self.db}"
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}/{self.db}"

    # --- what each library takes ------------------------------------------------------------
    def channels_host(self) -> dict[str, Any] | str:
        """A ``hosts`` entry of channels-redis (both its layers accept a Sentinel dict)."""
        if not self.uses_sentinel:
            return self.url
        return {
            "sentinels": [list(s) for s in self.sentinels],
            "master_name": self.master_name,
            "sentinel_kwargs": self.sentinel_kwargs(),
            **self.master_kwargs(asyncio=True),
        }

    def cache_options(self) -> dict[str, Any]:
        """``OPTIONS`` of Django's ``RedisCache`` (its connection pool comes from
        ``core.redis_roles.SentinelPool`` behind Sentinel)."""
        if not self.uses_sentinel:
            return {}
        return {
            "pool_class": "core.redis_roles.SentinelPool",
            "sentinels": list(self.sentinels),
            "master_name": self.master_name,
            "sentinel_kwargs": self.sentinel_kwargs(),
            **{k: v for k, v in self.master_kwargs(asyncio=False).items() if k != "db"},
        }

    def kombu_url(self) -> str:
        """Celery's broker URL: kombu's ``sentinel://`` transport lists every sentinel (the
        master's name goes into ``kombu_transport_options``)."""
        if not self.uses_sentinel:
            return self.url
        auth = ""
        if self.password:
            auth = f"{self.username or ''}:{self.password}@"
        return ";".join(f"sentinel://{auth}{h}:{p}/{self.db}" for h, p in self.sentinels)

    def kombu_transport_options(self) -> dict[str, Any]:
        if not self.uses_sentinel:
            return {}
        return {"master_name": self.master_name, "sentinel_kwargs": self.sentinel_kwargs()}


def parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """``"h1:26379,h2:26379"`` (a port left out is 26379)."""
    out: list[tuple[str, int]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host:
            host, port = port, "26379"
        if not port.isdigit():
            raise ValueError(f"not a host:port sentinel address: {item!r}")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


def targets_from_env(environ: Mapping[str, str]) -> dict[str, RedisTarget | None]:
    """Each role's Redis from the environment (``None``: no Redis for that role; the broker is
    ``None`` too when ``CELERY_BROKER_URL`` names something other than Redis)."""

    def get(name: str) -> str:
        return environ.get(name, "").strip()

    default_url = get("REDIS_URL")
    default_sentinels = parse_sentinels(get("REDIS_SENTINELS"))
    default_master = get("REDIS_SENTINEL_MASTER") or DEFAULT_MASTER
    sentinel_password = get("REDIS_SENTINEL_PASSWORD") or None
    if default_sentinels and not default_url:
        default_url = "redis:///0"
    out: dict[str, RedisTarget | None] = {}
    for role in ROLES:
        upper = role.upper()
        own_url = get("CELERY_BROKER_URL") if role == "broker" else get(f"REDIS_{upper}_URL")
        if own_url and not own_url.startswith(("redis://", "rediss://")):
            out[role] = None  # another broker (amqp://, memory://...)
            continue
        own_sentinels = parse_sentinels(get(f"REDIS_{upper}_SENTINELS"))
        own_master = get(f"REDIS_{upper}_SENTINEL_MASTER")
        if own_url or own_sentinels:
            url = own_url or default_url or "redis:///0"
            sentinels = own_sentinels
            master = own_master or DEFAULT_MASTER
        elif default_url:
            url, sentinels, master = default_url, default_sentinels, own_master or default_master
        else:
            out[role] = None
            continue
        out[role] = RedisTarget(
            url=url,
            sentinels=sentinels,
            master_name=master if sentinels else "",
            sentinel_password=sentinel_password if sentinels else None,
        )
    return out


# --- clients at run time ------------------------------------------------------------------------
class BlockingSentinelPool(AsyncSentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's master discovery (every new connection asks the sentinels) with the blocking
    pool's waiting for a free connection."""


def _target(role: str) -> RedisTarget:
    from django.conf import settings

    target: RedisTarget | None = settings.REDIS_TARGETS.get(role)
    if target is None:
        raise LookupError(f"no Redis is configured for {role}")
    return target


def async_client(role: str, *, max_connections: int, timeout: float, socket_timeout: float) -> Any:
    """A ``redis.asyncio.Redis`` for ``role`` whose pool makes a caller wait (up to ``timeout``)
    for a free connection instead of failing at ``max_connections`` (a reconnect storm)."""
    from redis.asyncio.sentinel import Sentinel

    target = _target(role)
    if not target.uses_sentinel:
        pool = aioredis.BlockingConnectionPool.from_url(
            target.url,
            max_connections=max_connections,
            timeout=timeout,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=socket_timeout,
        )
        return aioredis.Redis(connection_pool=pool)

    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs())
    sentinel_pool = BlockingSentinelPool(
        target.master_name,
        sentinel,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=socket_timeout,
        **target.master_kwargs(asyncio=True),
    )
    return aioredis.Redis(connection_pool=sentinel_pool)


def sync_client(role: str, *, timeout: float) -> Any:
    """A ``redis.Redis`` for ``role`` (one-off uses: the readiness probe)."""
    import redis
    from redis.sentinel import Sentinel

    target = _target(role)
    if not target.uses_sentinel:
        return redis.Redis.from_url(target.url, socket_connect_timeout=timeout, socket_timeout=timeout)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs())
    options = {
        **target.master_kwargs(asyncio=False),
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
    }
    return sentinel.master_for(target.master_name, **options)


class SentinelPool:
    """Django ``RedisCache``'s ``pool_class`` behind Sentinel: ``from_url`` is called with the
    cache's ``LOCATION`` (its database number is used) and the ``OPTIONS``."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        sentinels: list[tuple[str, int]],
        master_name: str,
        sentinel_kwargs: dict[str, Any],
        parser_class: Any = None,
        **options: Any,
    ) -> Any:
        from redis.sentinel import Sentinel, SentinelConnectionPool

        if parser_class is not None:
            options["parser_class"] = parser_class
        db = RedisTarget(url=url).db
        sentinel = Sentinel([tuple(s) for s in sentinels], sentinel_kwargs=sentinel_kwargs)
        return SentinelConnectionPool(master_name, sentinel, db=db, **options)
