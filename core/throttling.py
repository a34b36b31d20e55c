"""REST rate limits counted in Redis, atomically, shared by every server process.

DRF's throttles read the request history from the cache, append and write it back: two
processes (or threads) doing that at once both see room, so a burst of concurrent requests gets
past the limit. Here, with the Redis cache, one Lua script per request trims a sliding window
(a sorted set of request times), counts it and records the request, or answers how long until
the oldest request leaves the window. The counters live in Redis under the cache's key prefix,
so they survive server restarts. Without Redis (the embedded local-memory cache) DRF's own
counting is used. While Redis cannot be reached, requests pass uncounted (fail open).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from rest_framework import throttling
from rest_framework.request import Request

# KEYS[1] the window's sorted set; ARGV: now (ms), window (ms), limit, a unique member.
# Returns 0 when the request is counted, else the milliseconds until a slot frees up.
_SLIDING_WINDOW = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


logger = logging.getLogger("healthchat.throttling")

_script: Any = None


def _sliding_window(client: Any) -> Any:
    """The script, loaded once per Redis server and then run by its SHA (EVALSHA)."""
    global _script
    if _script is None:
        _script = client.register_script(_SLIDING_WINDOW)
    return _script


def _redis(key: str) -> Any:
    """The Redis client behind the default cache, or None when the cache is not Redis."""
    backend = caches["default"]  # the backend itself (``cache`` is a proxy to it)
    if not isinstance(backend, RedisCache):
        return None
    return backend._cache.get_client(key, write=True)


class RedisRateMixin(throttling.SimpleRateThrottle):
    """Atomic sliding-window counting for DRF's rate throttles (put it first in the bases)."""

    _wait: float | None = None

    def get_rate(self) -> str | None:
        """The rate from the current settings (DRF reads them once, when it is imported)."""
        from rest_framework.settings import api_settings

        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:  # a typo must not leave a view unlimited
            raise ImproperlyConfigured(f"No throttle rate set for scope {self.scope!r}.")
        rate = rates[self.scope]
        return str(rate) if rate is not None else None

    def allow_request(self, request: Request, view: Any) -> bool:
        if isinstance(self, throttling.ScopedRateThrottle):
            # What DRF's ScopedRateThrottle does first: the scope and rate come from the view.
            self.scope = getattr(view, self.scope_attr, None)
            if not self.scope:
                return True
            self.rate = self.get_rate()
            self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        full_key = cache.make_key(self.key)
        client = _redis(full_key)
        if client is None:
            return throttling.SimpleRateThrottle.allow_request(self, request, view)
        assert self.duration is not None
        assert self.num_requests is not None
        now_ms = int(self.timer() * 1000)
        args = [now_ms, self.duration * 1000, self.num_requests, uuid.uuid4().hex]
        try:
            wait_ms = int(_sliding_window(client)(keys=[full_key], args=args, client=client))
        except redis.RedisError:
            # Redis unreachable (restarting, or a Sentinel failover without a master for ~2 s):
            # the request is let through uncounted rather than answered 500, as the socket's
            # send limit does.
            logger.warning("rate limit %s unavailable: request allowed uncounted", self.scope, exc_info=True)
            return True
        if wait_ms == 0:
            return True
        self._wait = wait_ms / 1000
        return False

    def wait(self) -> float | None:
        return self._wait if self._wait is not None else super().wait()


class UserRateThrottle(RedisRateMixin, throttling.UserRateThrottle):
    """Per signed-in user (``THROTTLE_USER_RATE``), anonymous callers by address."""


class AnonRateThrottle(RedisRateMixin, throttling.AnonRateThrottle):
    """Per address for callers without a token (``THROTTLE_ANON_RATE``)."""


class ScopedRateThrottle(RedisRateMixin, throttling.ScopedRateThrottle):
    """Per user and view scope (``throttle_scope``: ``export``, ``upload``...)."""
