"""Metrics endpoint, Celery task metrics, JSON log lines and the Sentry scrubber (issue 21).
The live end-to-end checks are tests/test_ops_live.py."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from celery import shared_task
from django.test import Client
from prometheus_client import generate_latest

from core import log_context, metrics, sentry
from tests.metrics_labels import label_violations
from tests.sentry_ingest import CANARY_CIPHERTEXT, CANARY_FILE, CANARY_PHONE, CANARY_TOKEN


@pytest.mark.django_db
def test_metrics_404_without_a_token_configured_401_without_the_bearer(settings):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics").status_code == 404
    settings.METRICS_TOKEN = "s3cret-token-value"
    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    answer = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token-value")
    assert answer.status_code == 200
    assert b"healthchat_http_requests_total" in answer.content
    assert b'route="metrics"' in answer.content  # the earlier refusals, by route template


@shared_task(name="core.tests.flaky_probe_task", bind=True, max_retries=1)
def flaky_probe_task(self: Any, fail: bool) -> str:
    if fail:
        raise RuntimeError("probe failure")
    return "ok"


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_celery_task_duration_failures_and_queue_lag(settings):
    settings.CELERY_TASK_EAGER_PROPAGATES = False
    before_runs = sample("healthchat_task_seconds_count", task="core.tests.flaky_probe_task")
    before_failures = sample("healthchat_task_failures_total", task="core.tests.flaky_probe_task")
    flaky_probe_task.apply(args=(False,))
    flaky_probe_task.apply(args=(True,))
    assert sample("healthchat_task_seconds_count", task="core.tests.flaky_probe_task") == before_runs + 2
    assert sample("healthchat_task_failures_total", task="core.tests.flaky_probe_task") == before_failures + 1
    # Queue lag: the publication time a worker reads from the message's header.
    headers: dict[str, Any] = {}
    metrics.connect_celery()
    from celery import signals

    signals.before_task_publish.send(sender="core.tests.flaky_probe_task", headers=headers)
    assert isinstance(headers[metrics.SENT_AT_HEADER], float)

    class Request:
        is_eager = False
        hc_sent_at = headers[metrics.SENT_AT_HEADER] - 2.0

    class Task:
        name = "core.tests.flaky_probe_task"
        request = Request()

    lag_before = sample("healthchat_task_queue_lag_seconds_sum", task=Task.name)
    metrics._prerun(task_id="lag-probe", task=Task())
    assert sample("healthchat_task_queue_lag_seconds_sum", task=Task.name) >= lag_before + 2.0


@pytest.mark.django_db
def test_in_process_label_values_are_allowed(api):
    from accounts.tests.factories import PatientFactory

    # The registry is the process's: other tests on this worker (some with test-only URLconfs)
    # recorded their own labels before; only what these requests add is judged here (the live
    # test judges a real server's whole exposition).
    before = set(label_violations(generate_latest().decode()))
    client = api(PatientFactory())
    client.get("/api/v1/me")
    client.get("/api/v1/conversations/987654321/messages")
    client.get(f"/api/v1/nowhere/{CANARY_PHONE}")
    exposition = generate_latest().decode()
    assert CANARY_PHONE not in exposition
    assert "987654321" not in exposition
    assert sorted(set(label_violations(exposition)) - before) == []


def test_json_log_line_fields_and_pseudonymous_user():
    stream = io.StringIO()
    config = log_context.logging_config("json", "INFO")
    formatter_config = dict(config["formatters"]["main"])
    factory = formatter_config.pop("()")
    module, _, name = factory.rpartition(".")
    formatter = getattr(__import__(module, fromlist=[name]), name)(**formatter_config)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(log_context.ContextFilter())
    logger = logging.getLogger("ops.test.json")
    logger.addHandler(handler)
    logger.propagate = False
    token = log_context.request_id.set("req-1234567890")
    log_context.bind_user(42)
    try:
        logger.warning("sent", extra={"duration_ms": 1.5, "outcome": "ok"})
        logger.debug("> %s", 'TEXT \'{"body": "secret"}\'')  # a frame's content: dropped
    finally:
        log_context.request_id.reset(token)
        log_context.user.set(None)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "sent"
    assert record["level"] == "WARNING"
    assert record["logger"] == "ops.test.json"
    assert record["request_id"] == "req-1234567890"
    assert record["duration_ms"] == 1.5
    assert record["user"] == log_context.pseudonym(42) != "42"
    assert record["timestamp"].endswith("+00:00")


def test_sentry_scrubber_removes_bodies_variables_and_canaries():
    event = {
        "message": f"failed for {CANARY_PHONE} with {CANARY_TOKEN}",
        "user": {"id": 7, "ip_address": "10.0.0.1"},
        "extra": {"body": "secret"},
        "request": {
            "method": "POST",
            "url": f"https://x/api/v1/me?phone={CANARY_PHONE}",
            "data": {"body": "secret"},
            "cookies": {"sessionid": "abc"},
            "headers": {"Authorization": f"Bearer {CANARY_TOKEN}", "Content-Type": "application/json"},
        },
        "exception": {
            "values": [
                {
                    "type": "RuntimeError",
                    "value": f"{CANARY_FILE} {CANARY_CIPHERTEXT}",
                    "stacktrace": {"frames": [{"function": "f", "vars": {"body": "secret"}}]},
                }
            ]
        },
    }
    clean = json.dumps(sentry.scrub(event))
    for canary in (CANARY_PHONE, CANARY_TOKEN, CANARY_FILE, CANARY_CIPHERTEXT, "secret", "10.0.0.1", "abc"):
        assert canary not in clean, canary
    assert "RuntimeError" in clean
    assert "application/json" in clean
