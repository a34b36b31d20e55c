"""WebSocket routes (the one socket, ``/ws/v1/``)."""

from typing import Any

websocket_urlpatterns: list[Any] = []
