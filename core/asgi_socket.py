"""The ASGI application's front: the one WebSocket route without routing layers (issue 26).

Every coroutine in the chain from the server's task to the consumer stays suspended, frame and
locals, for as long as a socket is open. Channels' ``ProtocolTypeRouter`` → ``URLRouter`` →
``as_asgi`` closure are three such frames per socket, and ``URLRouter`` copies the whole scope
(plus a ``url_route`` dict) for the consumer while the server keeps the original: ~1.5 KB per idle
socket for a route table of one entry. ``SocketFront`` hands a socket for ``socket_path`` straight
to a new consumer (one frame: the consumer's own ``__call__``), with the scope the server made and
the ``url_route`` the router would have set (no arguments: the route has none). Anything else (HTTP,
lifespan, another WebSocket path) goes to ``fallback``, the usual router, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# What Channels' URLRouter puts in the scope for a route without arguments (read-only here:
# one object shared by every socket).
NO_ROUTE_ARGUMENTS: dict[str, Any] = {"args": (), "kwargs": {}}


class SocketFront:
    """``application(scope, receive, send)``: ``consumer_class()(scope, receive, send)`` for a
    WebSocket on ``socket_path`` (``"ws/v1/"``: after the scope's ``root_path``, leading slashes
    stripped, as ``URLRouter`` matches it), else ``fallback(scope, receive, send)``."""

    def __init__(self, fallback: ASGIApp, socket_path: str, consumer_class: type[Any]) -> None:
        self.fallback = fallback
        self.socket_path = socket_path.lstrip("/")
        self.consumer_class = consumer_class

    def route(self, scope: Scope) -> bool:
        if scope.get("type") != "websocket":
            return False
        path = scope.get("path")
        if not isinstance(path, str):
            return False
        root = scope.get("root_path", "")
        if root:
            if not path.startswith(root):
                return False
            path = path[len(root) :]
        return path.lstrip("/") == self.socket_path

    # A plain function returning the app's coroutine (no frame of its own while the socket is
    # open), marked so that servers and asgiref see an ASGI 3 single callable.
    @markcoroutinefunction
    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        if self.route(scope):
            scope.setdefault("url_route", NO_ROUTE_ARGUMENTS)
            scope.setdefault("path_remaining", "")
            consumer = self.consumer_class()
            coroutine: Awaitable[None] = consumer(scope, receive, send)
            return coroutine
        return self.fallback(scope, receive, send)
