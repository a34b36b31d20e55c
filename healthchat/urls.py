"""URL routes: admin, REST API v1, OpenAPI schema and docs, probes, metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from core.health import healthz, livez
from core.metrics import metrics_view

api_v1 = [
    path("", include("accounts.urls")),
    path("", include("messaging.urls")),
    path("", include("groups.urls")),
    path("", include("payments.urls")),
    path("", include("appointments.urls")),
    path("", include("notifications.urls")),
    path("", include("moderation.urls")),
    path("", include("calls.urls")),
    path("", include("scheduled.urls")),
    path("", include("documents.urls")),
    path("", include("records.urls")),
    path("", include("ratings.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", healthz, name="readyz"),
    path("livez", livez, name="livez"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("console/", include("console.urls")),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]),
        name="schema",
    ),
    path(
        "api/docs/",
        # The split view serves its script from a URL instead of inline: the page's CSP allows no
        # inline scripts.
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", permission_classes=[], authentication_classes=[]
        ),
        name="api-docs",
    ),
]
