"""Where a request came from: channel, client address and user agent.

The address is the peer's (``REMOTE_ADDR`` / the ASGI ``client``). ``X-Forwarded-For`` is
believed only when the peer is one of ``TRUSTED_PROXIES`` (addresses or networks): then the
right-most address that is not a trusted proxy is the client. Anything unparsable is dropped,
never stored as text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings

from .models import USER_AGENT_MAX, AuditEntry

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Client:
    channel: str
    ip: str | None = None
    user_agent: str = ""


SYSTEM = Client(AuditEntry.Channel.SYSTEM)
COMMAND = Client(AuditEntry.Channel.COMMAND)


@lru_cache(maxsize=8)
def _networks(configured: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in configured if item.strip())


def _trusted(address: str) -> bool:
    networks = _networks(tuple(getattr(settings, "TRUSTED_PROXIES", ())))
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _valid_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client's address: the peer, or through trusted proxies the forwarded one."""
    address = _valid_ip(peer)
    if address is None or not forwarded_for or not _trusted(address):
        return address
    for hop in reversed(forwarded_for.split(",")):
        candidate = _valid_ip(hop)
        if candidate is None:
            break  # a malformed hop: keep the last address we could vouch for
        address = candidate
        if not _trusted(candidate):
            break
    return address


def clean_user_agent(value: str | None) -> str:
    """Printable ASCII only, truncated."""
    if not value:
        return ""
    return "".join(ch if " " <= ch <= "~" else "?" for ch in value[:USER_AGENT_MAX])


def from_request(request: Any, channel: str | None = None) -> Client:
    """A Django or DRF request; the channel is ``admin`` under ``/admin/``, else ``rest``."""
    meta: Mapping[str, Any] = getattr(request, "META", {})
    if channel is None:
        path = str(getattr(request, "path", ""))
        channel = AuditEntry.Channel.ADMIN if path.startswith("/admin/") else AuditEntry.Channel.REST
    return Client(
        channel=channel,
        ip=client_ip(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR")),
        user_agent=clean_user_agent(meta.get("HTTP_USER_AGENT")),
    )


def _scope_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return ",".join(values) if values else None


def from_scope(scope: Mapping[str, Any]) -> Client:
    """An ASGI (WebSocket) scope."""
    peer = scope.get("client")
    headers = scope.get("headers", [])
    return Client(
        channel=AuditEntry.Channel.SOCKET,
        ip=client_ip(peer[0] if peer else None, _scope_header(headers, b"x-forwarded-for")),
        user_agent=clean_user_agent(_scope_header(headers, b"user-agent")),
    )
