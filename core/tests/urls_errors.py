"""Test-only URLs: the real routes plus views that fail on purpose."""

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.throttling import AnonRateThrottle
from healthchat.urls import urlpatterns as real_urlpatterns


class OnePerMinute(AnonRateThrottle):
    rate = "1/minute"
    # A fresh bucket per test process (the cache is shared Redis; it is never flushed).
    scope = f"test-one-per-minute-{uuid.uuid4().hex}"


class BoomApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        raise RuntimeError("secret internal detail")


class ThrottledApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [OnePerMinute]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


def plain_boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret internal detail")


urlpatterns = [
    path("api/v1/test/boom", BoomApi.as_view()),
    path("api/v1/test/plain-boom", plain_boom),
    path("api/v1/test/throttled", ThrottledApi.as_view()),
    *real_urlpatterns,
]
