"""Probes. ``GET /readyz`` (and its older name ``/healthz``): database, Redis and broker status
(200 when all are up, else 503), for a load balancer's readiness check. ``GET /livez``: the
process answers (200, no dependency checked), for a liveness probe: a restart does not fix a
database outage, so liveness must not depend on one."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from kombu import Connection

from core import redis_roles

CHECK_TIMEOUT = 1.0


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _check_redis() -> str:
    """Every Redis in use (one per role at most; behind Sentinel: the master it names now)."""
    checked: set[redis_roles.RedisTarget] = set()
    for role in ("channel_layer", "presence", "cache"):
        target = settings.REDIS_TARGETS.get(role)
        if target is None or target in checked:
            continue
        checked.add(target)
        client = redis_roles.sync_client(role, timeout=CHECK_TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()
    return "ok" if checked else "embedded"


def _check_broker() -> str:
    url = settings.CELERY_BROKER_URL
    if settings.CELERY_TASK_ALWAYS_EAGER or url.startswith("memory://"):
        return "embedded"
    options = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS, "max_retries": 0}
    with Connection(url, connect_timeout=CHECK_TIMEOUT, transport_options=options) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=1)
    return "ok"


CHECKS: dict[str, Callable[[], str]] = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
}


def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def healthz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    healthy = True
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            state = check()
        except Exception as exc:  # any failure means "down"; the reason is logged, not leaked
            state = "down"
            healthy = False
            results[name] = {"status": state, "error": type(exc).__name__}
            continue
        results[name] = {"status": state, "ms": round((time.perf_counter() - started) * 1000, 1)}
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": results}, status=200 if healthy else 503
    )
