"""TURN credentials with the TURN REST API scheme (coturn's ``use-auth-secret``).

username = ``"<expiry unix time>:<user id>"``, password = ``base64(HMAC-SHA1(secret, username))``.
The TURN server shares the secret and recomputes the password, so nothing is stored and a
credential stops working at its expiry time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from core.errors import ApplicationError


def turn_password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def turn_credentials(*, user_id: int, now: float | None = None) -> dict[str, Any]:
    """Short-lived credentials for ``user_id`` plus the ICE servers to use them with."""
    secret: str = settings.TURN_SECRET
    turn_urls: list[str] = list(settings.TURN_URLS)
    stun_urls: list[str] = list(settings.STUN_URLS)
    if turn_urls and not secret:
        raise ApplicationError("turn_unavailable", "TURN is not configured on this server.", status=503)
    ttl = int(settings.TURN_TTL_SECONDS)
    expires = int(time.time() if now is None else now) + ttl
    username = f"{expires}:{user_id}" if secret else None
    password = turn_password(secret, username) if secret and username else None
    ice_servers: list[dict[str, Any]] = []
    if stun_urls:
        ice_servers.append({"urls": stun_urls})
    if turn_urls:
        ice_servers.append({"urls": turn_urls, "username": username, "credential": password})
    return {
        "username": username,
        "password": password,
        "ttl": ttl,
        "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
        "uris": turn_urls,
        "ice_servers": ice_servers,
    }
