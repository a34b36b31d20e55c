"""/healthz reports database, Redis and broker: 200 when up, 503 when Redis is down."""

import socket

import pytest
from django.test import Client

from core.redis_roles import RedisTarget


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.django_db
def test_healthz_ok_against_real_services(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = settings.REDIS_URL
    response = Client().get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "ok"
    assert body["checks"]["broker"]["status"] == "ok"


@pytest.mark.django_db
def test_healthz_503_when_redis_is_down(settings):
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    settings.REDIS_TARGETS = {**settings.REDIS_TARGETS, "cache": RedisTarget(url=dead)}
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = dead
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["broker"]["status"] == "down"


@pytest.mark.django_db
def test_readyz_is_healthz_and_livez_checks_nothing(settings):
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    settings.REDIS_TARGETS = {**settings.REDIS_TARGETS, "cache": RedisTarget(url=dead)}
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.CELERY_BROKER_URL = dead
    ready = Client().get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["status"] == "down"
    live = Client().get("/livez")  # Redis down does not make the process dead
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
