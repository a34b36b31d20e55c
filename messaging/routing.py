"""WebSocket routes (the one socket, ``/ws/v1/``)."""

from django.urls import path

from .consumers import ChatConsumer

websocket_urlpatterns = [path("ws/v1/", ChatConsumer.as_asgi())]
