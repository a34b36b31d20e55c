"""WebSocket routes (the one socket, ``/ws/v1/``)."""

from django.urls import path

from .consumers import ChatConsumer

SOCKET_PATH = "ws/v1/"  # served by ``core.asgi_socket.SocketFront`` in healthchat/asgi.py
websocket_urlpatterns = [path(SOCKET_PATH, ChatConsumer.as_asgi())]
