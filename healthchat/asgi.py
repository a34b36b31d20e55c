"""ASGI entry point: HTTP (Django) and WebSocket (Channels) on one application."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "healthchat.settings.local")

django_asgi_app = get_asgi_application()

from core.database import refuse_persistent_connections  # noqa: E402

refuse_persistent_connections()  # pooled, never kept by a request's thread (core/database.py)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from core.asgi_limits import BodySizeLimit  # noqa: E402
from core.asgi_socket import SocketFront  # noqa: E402
from messaging.consumers import ChatConsumer  # noqa: E402
from messaging.routing import SOCKET_PATH, websocket_urlpatterns  # noqa: E402

# ``/ws/v1/`` goes straight to its consumer (no routing frames held per open socket: issue 26);
# everything else through the routers as before.
application = SocketFront(
    ProtocolTypeRouter(
        {
            "http": BodySizeLimit(django_asgi_app),  # type: ignore[arg-type]
            "websocket": URLRouter(websocket_urlpatterns),
        }
    ),
    SOCKET_PATH,
    ChatConsumer,
)

from core.gc_tuning import tune_for_server  # noqa: E402

tune_for_server()  # after everything above is loaded: it is frozen out of the collector's walks

from core import latency_probe  # noqa: E402

latency_probe.install_from_settings()  # benchmarks only (HEALTHCHAT_LATENCY_PROBE); off by default
