"""The per-user message send limit, shared by every server process and surviving restarts and
reconnects (Redis), checked once per group-commit batch (one pipelined round trip).

Fixed one-minute windows per user: ``HEALTHCHAT_SEND_LIMIT_PER_MINUTE`` sends (0 = off). A send
over the limit gets ``rate_limited`` with ``retry_after`` (seconds to the next window) and is not
stored. When Redis cannot be reached the limit fails open: messaging never stops for it. Without
Redis (embedded mode, one process) the windows are counted in memory.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from django.conf import settings

from core.errors import ApplicationError

from . import presence

logger = logging.getLogger("healthchat.ws")

WINDOW_SECONDS = 60
_memory: dict[tuple[int, int], int] = {}
_scripts: dict[int, Any] = {}
# One command per hash slot of the batch's users: KEYS = each user's counter of the window,
# ARGV = ttl, then each user's sends in KEYS' order; returns each user's total in the window after
# counting this batch. The keys of one call share a slot (``presence.slot_tag``): Redis Cluster
# runs it.
_COUNT_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
    local total = redis.call('INCRBY', key, ARGV[i + 1])
    if total == tonumber(ARGV[i + 1]) then redis.call('EXPIRE', key, ARGV[1]) end
    out[i] = total
end
return out
"""


def _key(prefix: str, user_id: int, window: int) -> str:
    return f"{prefix}:sendlimit:{presence.slot_tag(user_id)}:{user_id}:{window}"


def limit() -> int:
    return int(settings.HEALTHCHAT_SEND_LIMIT_PER_MINUTE)


def _refusal(retry_after: int) -> ApplicationError:
    return ApplicationError(
        "rate_limited",
        "Too many messages; retry later.",
        status=429,
        extra={"retry_after": retry_after},
    )


async def refusals(sender_ids: list[int]) -> dict[int, ApplicationError]:
    """For a batch of sends (by sender id, in order): ``{position: error}`` for those over the
    limit. Counts every send of the batch, refused or not (a flood keeps being refused)."""
    cap = limit()
    if cap <= 0 or not sender_ids:
        return {}
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now) + 1)
    per_user = Counter(sender_ids)
    totals: dict[int, int] = {}
    store = presence.store()
    if isinstance(store, presence.RedisPresence):
        try:
            client = store._client()
            script = _scripts.get(id(client))
            if script is None:
                script = _scripts[id(client)] = client.register_script(_COUNT_SCRIPT)
            for group in presence.by_slot(list(per_user.items())):
                keys = [_key(store.prefix, user_id, window) for user_id, _ in group]
                replies = await script(keys=keys, args=[2 * WINDOW_SECONDS, *(n for _, n in group)])
                totals.update(
                    (user_id, int(total)) for (user_id, _), total in zip(group, replies, strict=True)
                )
        except Exception:  # fail open: the limit never stops messaging
            logger.warning("send limit unavailable", exc_info=True)
            return {}
    else:
        for stale in [k for k in _memory if k[1] < window]:
            del _memory[stale]
        for user_id, count in per_user.items():
            _memory[(user_id, window)] = totals[user_id] = _memory.get((user_id, window), 0) + count
    # Sends of a user before this batch: total - count; this batch's first (cap - before) pass.
    allowed = {user_id: cap - (totals[user_id] - per_user[user_id]) for user_id in per_user}
    out: dict[int, ApplicationError] = {}
    for position, user_id in enumerate(sender_ids):
        allowed[user_id] -= 1
        if allowed[user_id] < 0:
            out[position] = _refusal(retry_after)
    return out
