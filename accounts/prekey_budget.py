"""How many one-time prekeys a requester may take from another user: Signal's defence against
draining a user's stock.

Two budgets per window (``HEALTHCHAT_PREKEY_BUDGET_WINDOW_SECONDS``): one per (requester,
target) pair (``HEALTHCHAT_PREKEY_BUDGET_PER_PAIR``) and one per target over all requesters
(``HEALTHCHAT_PREKEY_BUDGET_PER_TARGET``). A bundle fetch that fits both spends one unit of each
and gets one-time keys; one that does not gets the bundle without them (the signed prekey and
the last-resort Kyber key: X3DH/PQXDH still work) and spends nothing. The counters live in Redis
(one Lua script: atomic across threads and server processes, kept across restarts), under the
cache's key prefix; without Redis (the embedded local-memory cache) in this process's memory. If
Redis cannot be reached, no one-time keys are handed out (the stock is protected, conversations
still start).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger("healthchat.accounts")

KEY_PREFIX = "prekey_budget"

# KEYS: the pair's and the target's counters; ARGV: pair limit, target limit, window (s).
# Returns 1 (granted, both counted) or 0 (over a budget, nothing counted).
_GRANT = """
local pair = tonumber(redis.call('GET', KEYS[1]) or '0')
local target = tonumber(redis.call('GET', KEYS[2]) or '0')
if pair >= tonumber(ARGV[1]) or target >= tonumber(ARGV[2]) then return 0 end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[3]) end
end
return 1
"""

_script: Any = None
_lock = threading.Lock()
_memory: dict[str, tuple[int, float]] = {}  # key -> (count, window end)


def _keys(requester_id: int, target_id: int) -> list[str]:
    """Both counters carry the target's hash tag: one slot, so Redis Cluster runs the script."""
    return [
        cache.make_key(f"{KEY_PREFIX}:pair:{requester_id}:{{t{target_id}}}"),
        cache.make_key(f"{KEY_PREFIX}:target:{{t{target_id}}}"),
    ]


def _grant_in_memory(keys: list[str], limits: tuple[int, int], window: int) -> bool:
    now = time.monotonic()
    with _lock:
        counts = []
        for key in keys:
            count, ends = _memory.get(key, (0, now + window))
            if ends <= now:
                count, ends = 0, now + window
            counts.append((count, ends))
        if any(count >= limit for (count, _ends), limit in zip(counts, limits, strict=True)):
            return False
        for key, (count, ends) in zip(keys, counts, strict=True):
            _memory[key] = (count + 1, ends)
        return True


def grant(*, requester_id: int, target_id: int) -> bool:
    """Spend one unit of both budgets, if both have one left: may ``requester_id`` take one-time
    prekeys from ``target_id`` in this fetch?"""
    global _script
    limits = (
        int(settings.HEALTHCHAT_PREKEY_BUDGET_PER_PAIR),
        int(settings.HEALTHCHAT_PREKEY_BUDGET_PER_TARGET),
    )
    window = max(1, int(settings.HEALTHCHAT_PREKEY_BUDGET_WINDOW_SECONDS))
    if min(limits) <= 0:
        return False
    keys = _keys(requester_id, target_id)
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return _grant_in_memory(keys, limits, window)
    try:
        client = backend._cache.get_client(keys[0], write=True)
        if _script is None:
            _script = client.register_script(_GRANT)
        return bool(_script(keys=keys, args=[*limits, window], client=client))
    except Exception:  # fail safe: no one-time keys, bundles still served
        logger.warning("prekey budget unavailable; handing out bundles without one-time keys", exc_info=True)
        return False
