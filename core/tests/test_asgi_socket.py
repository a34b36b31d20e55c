"""``core.asgi_socket.SocketFront``: the socket's route without routing frames, the rest unchanged."""

from __future__ import annotations

from typing import Any

from asgiref.compatibility import is_double_callable
from uvicorn.config import Config

from core.asgi_socket import NO_ROUTE_ARGUMENTS, SocketFront


class Recorder:
    """A consumer class and a fallback app that note what they were called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        recorder = self

        class Consumer:
            async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
                recorder.calls.append(("consumer", scope))

        self.consumer_class = Consumer

    async def fallback(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(("fallback", scope))


async def test_the_socket_path_goes_straight_to_a_new_consumer_with_the_servers_scope():
    rec = Recorder()
    front = SocketFront(rec.fallback, "ws/v1/", rec.consumer_class)
    scope = {"type": "websocket", "path": "/ws/v1/", "root_path": "", "headers": []}
    await front(scope, None, None)
    assert rec.calls == [("consumer", scope)]
    assert rec.calls[0][1] is scope  # not a copy
    assert scope["url_route"] == NO_ROUTE_ARGUMENTS == {"args": (), "kwargs": {}}  # as URLRouter sets it
    assert scope["path_remaining"] == ""


async def test_root_path_and_leading_slashes_as_urlrouter_matches_them():
    rec = Recorder()
    front = SocketFront(rec.fallback, "ws/v1/", rec.consumer_class)
    await front({"type": "websocket", "path": "/api/ws/v1/", "root_path": "/api"}, None, None)
    await front({"type": "websocket", "path": "//ws/v1/"}, None, None)
    assert [kind for kind, _ in rec.calls] == ["consumer", "consumer"]


async def test_everything_else_goes_to_the_fallback_unchanged():
    rec = Recorder()
    front = SocketFront(rec.fallback, "ws/v1/", rec.consumer_class)
    scopes: list[dict[str, Any]] = [
        {"type": "http", "path": "/ws/v1/"},
        {"type": "lifespan"},
        {"type": "websocket", "path": "/ws/v2/"},
        {"type": "websocket", "path": "/ws/v1/extra"},
        {"type": "websocket", "path": "/ws/v1"},
        {"type": "websocket", "path": "/other/ws/v1/", "root_path": "/api"},
    ]
    for scope in scopes:
        await front(dict(scope), None, None)
    assert [(kind, s) for kind, s in rec.calls] == [("fallback", s) for s in scopes]
    assert all("url_route" not in s for _, s in rec.calls)


def test_servers_see_an_asgi3_single_callable():
    rec = Recorder()
    front = SocketFront(rec.fallback, "ws/v1/", rec.consumer_class)
    config = Config(front)
    config.load()
    assert config.interface == "asgi3"  # not wrapped as an ASGI 2 app
    assert not is_double_callable(front)  # Channels / asgiref see it the same way


def test_the_project_serves_its_socket_through_the_front():
    from healthchat.asgi import application
    from messaging.consumers import ChatConsumer

    assert isinstance(application, SocketFront)
    assert application.consumer_class is ChatConsumer
    assert application.route({"type": "websocket", "path": "/ws/v1/"})
    assert not application.route({"type": "http", "path": "/ws/v1/"})
