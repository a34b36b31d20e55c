"""A real Celery worker (prefork pool, Redis broker, prometheus-client's multi-process mode)
serves its metrics on METRICS_WORKER_PORT: task duration, failures and queue lag arrive for
tasks published by this process, and the worker's log lines are JSON carrying each task's id
and name (issue 21). Every line is JSON, the shutdown line included, and no line carries a
task's arguments (Celery's own "received", "succeeded" and "failed" lines keep ids only).

Error tracking in the worker: sentry-sdk's Celery integration reports the failing task (its
arguments carry canaries) to a local stand-in for Sentry's ingest; it arrives, scrubbed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from healthchat.celery import app
from tests.live import free_port
from tests.metrics_labels import label_violations
from tests.sentry_ingest import CANARIES, CANARY_FILE, CANARY_PHONE, CANARY_TEXT, CANARY_TOKEN, Ingest

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
TASK = "notifications.tasks.push_cleanup"


def scrape(port: int) -> dict[tuple[str, str], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert label_violations(text) == []
    return {
        (sample.name, sample.labels.get("task", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_worker_exports_task_metrics_and_json_logs(tmp_path, settings):
    with Ingest() as ingest:
        run_worker(tmp_path, settings, ingest)


def run_worker(tmp_path: Path, settings: Any, ingest: Ingest) -> None:
    queue = f"ops-{uuid.uuid4().hex[:8]}"
    port = free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "healthchat.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DATABASE_POOL_MAX_SIZE": "0",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "METRICS_WORKER_PORT": str(port),
        "LOG_FORMAT": "json",
        "SENTRY_DSN": f"http://publickey@127.0.0.1:{ingest.port}/1",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "--quiet", "-A", "healthchat", "worker", "-l", "info", "-Q", queue,
             "--concurrency", "1", "--pool", "prefork", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"{queue}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        started = time.monotonic()
        while True:
            try:
                scrape(port)
                break
            except requests.ConnectionError:
                assert worker.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() - started < 60, log_path.read_text()[-3000:]
                time.sleep(0.3)
        sent = app.send_task(TASK, queue=queue)
        # A TypeError in the worker; its arguments are canaries (a log line or report must not show them).
        failing = app.send_task(
            TASK, args=[CANARY_TEXT, CANARY_PHONE, CANARY_FILE], kwargs={"token": CANARY_TOKEN}, queue=queue
        )
        deadline = time.monotonic() + 60
        while True:
            figures = scrape(port)
            done = figures.get(("healthchat_task_seconds_count", TASK), 0)
            failed = figures.get(("healthchat_task_failures_total", TASK), 0)
            if done >= 2 and failed >= 1:
                break
            assert time.monotonic() < deadline, (figures, log_path.read_text()[-3000:])
            time.sleep(0.3)
        assert figures[("healthchat_task_queue_lag_seconds_count", TASK)] >= 2
        assert figures[("healthchat_task_queue_lag_seconds_sum", TASK)] < 60
        ingest.wait_for(1, timeout=30)  # the failing task's report (Celery integration)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    # Every line is JSON, the one Celery prints when it is stopped too (core.log_context.WorkerSay).
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith("{")] == []
    records = [json.loads(line) for line in lines]
    assert any(r["event"] == "worker: Warm shutdown (MainProcess)" for r in records), records[-5:]
    # Celery's "received" / "failed" lines name the task by id and name only: no argument.
    assert any(r.get("data", {}).get("id") == failing.id for r in records), records[-10:]
    leaks = [line for line in lines for canary in CANARIES if canary.lower() in line.lower()]
    assert leaks == [], leaks[:5]
    # The Celery integration reported the failing task, scrubbed: its arguments are not in it.
    events = [item for body in ingest.bodies() for item in ingest.items(body) if item.get("exception")]
    types = {value["type"] for event in events for value in event["exception"]["values"]}
    assert "TypeError" in types, events
    assert any(
        value.get("mechanism", {}).get("type") == "celery"
        for event in events
        for value in event["exception"]["values"]
    ), events
    text = "\n".join(ingest.bodies())
    assert [canary for canary in CANARIES if canary.lower() in text.lower()] == [], text[:3000]
    by_task = [r for r in records if r.get("request_id") in (sent.id, failing.id)]
    assert any(r.get("route") == TASK and r.get("request_id") == sent.id for r in by_task), records[-10:]
