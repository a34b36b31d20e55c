"""Prometheus metrics: every metric of the project, defined once, and the one-line hooks.

Each concern is measured at ONE place (docs/operations.md lists them): the socket consumer
(connects, frames, errors, frame→reply latency, delivery), the batcher (batch size and time per
writer), ``core/realtime`` and the channel layer (publishes, resubscribes, ``sync.required``),
the presence heartbeat, the sync handler, the REST middleware (``MetricsMiddleware``), Celery's
signals (``connect_celery``), push delivery and the payments webhook.

Label values are bounded: frame types and error codes the server registered (a client's text
never becomes a label: an unparsed frame is not labelled by its ``type``), URL route templates
(never a path), task names, fixed outcome words. No user, phone, conversation id or text.
``tests/metrics_labels.py`` is the allow-list every label value of a scrape is checked against.

The hot path (the socket consumer, the send batches, publications: several updates per message)
updates plain process-local counts on the server's event loop, applied to these metrics once a
second (``LoopTally``; histograms counted per bucket, ``BatchedHistogram``): no lock, label
lookup or file write per call. Every observation counts (nothing is sampled); the figures lag
by up to a second.

Multi-process: with ``PROMETHEUS_MULTIPROC_DIR`` set (a writable, emptied-at-start directory,
shared by the uvicorn workers or the Celery pool), prometheus-client keeps the values in files
and ``/metrics`` (and the worker exporter) aggregate every process's. The ``livesum`` gauge
(``healthchat_sockets_open``) counts the live processes only: before each collection, the files
of processes that no longer run (a worker killed, crashed or restarted: no exit hook ran) are
removed (``forget_dead_processes``, prometheus-client's ``mark_process_dead``).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable
from threading import get_ident
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)


class BatchedHistogram(Histogram):
    """A histogram that also takes observations already counted per bucket (``LoopTally``):
    one locked update per bucket that was hit (in multi-process mode one file write each),
    however many observations they hold. The same series as ``Histogram``."""

    @property
    def upper_bounds(self) -> list[float]:
        """The buckets' upper bounds, ``+Inf`` last (a value goes in the first bound >= it)."""
        return self._upper_bounds

    def observe_bucketed(self, counts: list[int], total: float) -> None:
        """Add ``counts[i]`` observations to bucket ``i`` (``upper_bounds`` order) and ``total``
        to the sum: as ``observe`` called once per value, each value in its bucket."""
        self._raise_if_not_observable()
        self._sum.inc(total)
        for bucket, count in zip(self._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# --- Sockets ----------------------------------------------------------------------------------
SOCKETS_OPEN = Gauge("healthchat_sockets_open", "Open WebSockets.", multiprocess_mode="livesum")
SOCKET_CONNECTS = Counter("healthchat_socket_connects", "WebSocket connections accepted for handshake.")
SOCKET_DISCONNECTS = Counter(
    "healthchat_socket_disconnects", "WebSocket disconnections by close code.", ["close_code"]
)
FRAMES_IN = Counter("healthchat_frames_in", "Parsed client frames by type (refused ones too).", ["type"])
FRAMES_OUT = Counter("healthchat_frames_out", "Server frames sent by type.", ["type"])
ERRORS = Counter("healthchat_errors", "Error replies (socket and REST) by code.", ["code"])
FRAME_SECONDS = BatchedHistogram(
    "healthchat_frame_seconds",
    "A client frame until its reply (message.send: frame to ack).",
    ["type"],
    buckets=LATENCY_BUCKETS,
)
DELIVERY_SECONDS = BatchedHistogram(
    "healthchat_delivery_seconds",
    "An event's publication after its commit until it is sent on a recipient's socket.",
    buckets=LATENCY_BUCKETS,
)
# --- Batches, channel layer, presence, sync ---------------------------------------------------
BATCH_SIZE = BatchedHistogram(
    "healthchat_batch_size", "Items per batch, per batcher.", ["batcher"], buckets=SIZE_BUCKETS
)
BATCH_SECONDS = BatchedHistogram(
    "healthchat_batch_seconds", "Time to run one batch (its database work), per batcher.", ["batcher"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
PUBLISHES = Counter("healthchat_layer_publishes", "Channel-layer publications by result.", ["result"])
RESUBSCRIBES = Counter("healthchat_layer_resubscribes", "Channel-layer subscriptions made again.")
SYNC_REQUIRED = Counter("healthchat_sync_required", "Sockets told to sync (sync.required).")
PRESENCE_HEARTBEAT_SECONDS = Histogram(
    "healthchat_presence_heartbeat_seconds", "One presence heartbeat round.", buckets=LATENCY_BUCKETS
)
SYNC_REQUESTS = Counter("healthchat_sync_requests", "Sync requests answered.")
SYNC_EVENTS = Counter("healthchat_sync_events_replayed", "Events replayed by sync.")
# --- REST -------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "healthchat_http_requests", "HTTP requests by route template and status.", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "healthchat_http_request_seconds", "HTTP request latency by route template.", ["method", "route"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
# --- Celery, push, payments -------------------------------------------------------------------
TASK_SECONDS = Histogram(
    "healthchat_task_seconds", "Celery task run time.", ["task"], buckets=(*LATENCY_BUCKETS, 30.0, 60.0)
)
TASK_FAILURES = Counter("healthchat_task_failures", "Celery tasks that raised.", ["task"])
TASK_RETRIES = Counter("healthchat_task_retries", "Celery task retries.", ["task"])
TASK_QUEUE_LAG = Histogram(
    "healthchat_task_queue_lag_seconds", "From a task's publication until a worker starts it.", ["task"],
    buckets=(*LATENCY_BUCKETS, 30.0, 60.0, 300.0),
)  # fmt: skip
PUSH_OUTCOMES = Counter("healthchat_push_outcomes", "Push deliveries by result.", ["result"])
WEBHOOKS = Counter(
    "healthchat_payment_webhooks", "Payment webhooks by type and outcome.", ["type", "outcome"]
)

PUSH_RESULTS = ("sent", "pruned", "failed", "skipped", "retrying")
# A webhook that fails while being processed is answered 5xx: healthchat_http_requests_total
# {route="api/v1/payments/stripe/webhook", status=~"5.."} counts it (the alert uses both).
WEBHOOK_OUTCOMES = ("processed", "duplicate", "refused")
SENT_AT_HEADER = "hc_sent_at"  # Celery message header: publication time (queue lag)


class Bucketed:
    """Observations of one histogram series not yet applied: a count per bucket and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0


_children: dict[tuple[Any, str | None], Any] = {}


def child(metric: Any, label: str | None = None) -> Any:
    """The metric's series for ``label`` (the metric itself when it has no label), looked up
    once: ``labels()`` takes a lock and checks its arguments on every call."""
    key = (metric, label)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric if label is None else metric.labels(label)
    return found


def never() -> bool:
    return False


class LoopTally:
    """Metric updates made on the server's event loop, several per message (frames in and out,
    frame→ack, commit→delivery, each send batch's size and times, publications), are added up in
    plain dicts (a histogram's per bucket, found by bisection) and applied to the metrics once a
    second by a loop timer: a dict update per call on the hot path instead of a ``labels()``
    lookup and locked value updates (in multi-process mode a file write per value). The loop is
    uvicorn's: the one the first socket opened on (``socket_opened`` binds it). Updates from any
    other thread or loop (the writer threads, Celery, commands, tests' own loops) are applied at
    once. The figures on /metrics lag by up to a second; a process that exits loses at most its
    last second.

    "On the tally's loop" is checked as "in the loop's thread while the loop runs" (one loop
    runs in a thread at a time): ``threading.get_ident`` and ``loop.is_running``, not
    ``asyncio.get_running_loop``, which on Python 3.11 makes a ``getpid`` system call per call
    (its fork check; ~0.2 µs here, more than the update itself). ``count`` and ``observe`` check
    per call; a hook making several updates checks once (``here``) and then ``put``s; the hooks
    run per message (a frame in, a frame out, frame→ack, a delivery) write the check and the
    update out (one call each). ``bench/metrics_cost.py`` measures every hook call of a message."""

    INTERVAL = 1.0

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: int | None = None  # the loop's thread
        self.running: Callable[[], bool] = never  # the loop's ``is_running``
        # Per metric, per label (no key tuple to build and hash per update).
        self.counts: dict[Any, dict[str | None, int]] = {}
        self.observed: dict[BatchedHistogram, dict[str | None, Bucketed]] = {}
        self.timer: asyncio.TimerHandle | None = None

    def bind(self) -> None:
        """Tally on the running loop from now on (unless one already runs it): the first socket's
        loop is the server's; a loop that ended (one test's, then the next's) is replaced."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.loop is None or (loop is not self.loop and self.loop.is_closed()):
            self.flush()  # what an ended loop's timer never applied
            self.loop = loop
            self.thread = get_ident()
            self.running = loop.is_running

    def here(self) -> bool:
        """Whether the caller runs on the tally's loop: its observations may then be added up
        (``put``), and the flush timer is set if none is (the first update after a flush)."""
        if get_ident() != self.thread or not self.running():
            return False  # another thread (a writer thread, Celery, a command) or loop
        if self.timer is None:
            self.arm()
        return True

    def arm(self) -> None:
        """Set the flush timer (on the tally's loop, running: the caller checked)."""
        if self.loop is not None:
            self.timer = self.loop.call_later(self.INTERVAL, self.flush)

    def put(self, metric: BatchedHistogram, label: str | None, value: float) -> None:
        """Observe on the tally (the caller is ``here``): the value's bucket and the sum."""
        series = self.observed.get(metric)
        if series is None:
            series = self.observed[metric] = {}
        pending = series.get(label)
        if pending is None:
            pending = series[label] = Bucketed(metric.upper_bounds)
        pending.counts[bisect_left(pending.bounds, value)] += 1
        pending.total += value

    def count(self, metric: Counter, label: str | None = None, amount: int = 1) -> None:
        if get_ident() != self.thread or not self.running():
            child(metric, label).inc(amount)
            return
        if self.timer is None:
            self.arm()
        counts = self.counts.get(metric)
        if counts is None:
            counts = self.counts[metric] = {}
        counts[label] = counts.get(label, 0) + amount

    def observe(self, metric: BatchedHistogram, label: str | None, value: float) -> None:
        if get_ident() != self.thread or not self.running():
            child(metric, label).observe(value)
            return
        if self.timer is None:
            self.arm()
        self.put(metric, label, value)

    def flush(self) -> None:
        self.timer = None  # the next update on the loop sets the next one
        counts, self.counts = self.counts, {}
        observed, self.observed = self.observed, {}
        for counter, amounts in counts.items():
            for label, amount in amounts.items():
                child(counter, label).inc(amount)
        for histogram, series in observed.items():
            for label, pending in series.items():
                child(histogram, label).observe_bucketed(pending.counts, pending.total)


tally = LoopTally()
perf_counter = time.perf_counter
wall_clock = time.time


# --- Hooks (each called from one place, in one line) -----------------------------------------
def socket_opened() -> None:
    tally.bind()  # the server's loop: the hot path's updates are added up there
    SOCKET_CONNECTS.inc()
    SOCKETS_OPEN.inc()


def socket_closed(code: Any) -> None:
    SOCKETS_OPEN.dec()
    label = str(code) if isinstance(code, int) and 1000 <= code <= 4999 else "other"
    child(SOCKET_DISCONNECTS, label).inc()


# The hooks below run once or more per message. On the tally's loop with its timer set (nearly
# every call on the server), each is one function call: the check and the dict update are
# written out; anything else goes through ``tally.count`` / ``tally.observe``.
def frame_in(frame_type: str) -> None:
    """A parsed frame (``frame.type`` is one of the server's registered types, never a client's
    text: a frame that does not parse is counted by its error code only)."""
    here = get_ident() == tally.thread and tally.timer is not None and tally.running()
    counts = tally.counts.get(FRAMES_IN) if here else None
    if counts is not None:
        counts[frame_type] = counts.get(frame_type, 0) + 1
    else:
        tally.count(FRAMES_IN, frame_type)


def frame_answered(frame_type: str, started: float) -> None:
    """A frame's handler answered it (for ``message.send``: the ack was sent)."""
    seconds = perf_counter() - started
    here = get_ident() == tally.thread and tally.timer is not None and tally.running()
    series = tally.observed.get(FRAME_SECONDS) if here else None
    pending = series.get(frame_type) if series is not None else None
    if pending is not None:
        pending.counts[bisect_left(pending.bounds, seconds)] += 1
        pending.total += seconds
    else:
        tally.observe(FRAME_SECONDS, frame_type, seconds)


def frame_out(frame_type: str) -> None:
    here = get_ident() == tally.thread and tally.timer is not None and tally.running()
    counts = tally.counts.get(FRAMES_OUT) if here else None
    if counts is not None:
        counts[frame_type] = counts.get(frame_type, 0) + 1
    else:
        tally.count(FRAMES_OUT, frame_type)


def error(code: str) -> None:
    tally.count(ERRORS, code)


def rest_error(response: Any) -> None:
    """A REST error answer in the one error format: its code (``core.errors.error_body``)."""
    data = getattr(response, "data", None)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error(str(data["error"].get("code")))


# An event's publication time (``published``), read by its first delivery in each process.
PUBLISHED_AT = "published_at"


def delivered(event: dict[str, Any]) -> None:
    """An event from the channel layer sent on a socket: its type, and the time since its
    publication (``published_at``, stamped by ``core.realtime`` right after the commit). The
    event reaches every local member socket as one shared dict: the first delivery takes the
    stamp, so a fan-out to a group costs one observation per process, not one per member."""
    frame = event.get("frame")
    published_at = event.pop(PUBLISHED_AT, None)
    here = get_ident() == tally.thread and tally.timer is not None and tally.running()
    if isinstance(frame, dict):
        frame_type = frame.get("type")
        if type(frame_type) is not str:
            frame_type = str(frame_type)
        counts = tally.counts.get(FRAMES_OUT) if here else None
        if counts is not None:
            counts[frame_type] = counts.get(frame_type, 0) + 1
        else:
            tally.count(FRAMES_OUT, frame_type)
    if type(published_at) is float:
        since = wall_clock() - published_at
        if here:
            tally.put(DELIVERY_SECONDS, None, since if since > 0.0 else 0.0)
        else:
            tally.observe(DELIVERY_SECONDS, None, since if since > 0.0 else 0.0)


def published(events: list[dict[str, Any]]) -> None:
    """Events about to be published (after their commit): stamped with the time, counted."""
    now = wall_clock()
    for event in events:
        event[PUBLISHED_AT] = now
    tally.count(PUBLISHES, "ok", len(events))


def publish_failed(count: int) -> None:
    tally.count(PUBLISHES, "failed", count)


def batch_ran(batcher: object, size: int, started: float) -> None:
    seconds = perf_counter() - started
    name = type(batcher).__name__
    if tally.here():
        tally.put(BATCH_SIZE, name, size)
        tally.put(BATCH_SECONDS, name, seconds)
    else:
        tally.observe(BATCH_SIZE, name, size)
        tally.observe(BATCH_SECONDS, name, seconds)


def writer_ran(writer: str, wrote: bool, size: int, started: float) -> None:
    """A send batch on one writer (``loop_writer``, ``thread_writer``): its size and database
    time; a batch the loop writer handed over counts as ``loop_writer_handover``."""
    seconds = perf_counter() - started
    name = writer if wrote else f"{writer}_handover"
    if tally.here():
        tally.put(BATCH_SIZE, name, size)
        tally.put(BATCH_SECONDS, name, seconds)
    else:
        tally.observe(BATCH_SIZE, name, size)
        tally.observe(BATCH_SECONDS, name, seconds)


WRITERS = ("loop_writer", "loop_writer_handover", "thread_writer", "thread_writer_handover")


def push_report(report: Any, results: list[Any]) -> None:
    """``notifications.services.DeliveryReport`` and FCM's results: a failed row whose token was
    dead (``unregistered``, ``invalid_token``) was pruned, the other failed rows failed."""
    PUSH_OUTCOMES.labels("sent").inc(len(report.sent))
    PUSH_OUTCOMES.labels("skipped").inc(len(report.skipped))
    PUSH_OUTCOMES.labels("retrying").inc(len(report.retrying))
    pruned = sum(1 for result in results if getattr(result.outcome, "value", "") in PRUNED_OUTCOMES)
    PUSH_OUTCOMES.labels("pruned").inc(pruned)
    PUSH_OUTCOMES.labels("failed").inc(len(report.failed) - pruned)


PRUNED_OUTCOMES = frozenset({"unregistered", "invalid_token"})


def webhook(event_type: str, outcome: str) -> None:
    label = event_type if event_type in WEBHOOK_TYPES else "other"
    WEBHOOKS.labels(label, outcome).inc()


WEBHOOK_TYPES = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.processing",
        "payment_intent.requires_action",
        "charge.refunded",
        "charge.dispute.created",
        "account.updated",
    }
)


def timed(histogram: Histogram) -> Callable[[float], None]:
    def observe(started: float) -> None:
        histogram.observe(time.perf_counter() - started)

    return observe


heartbeat_done = timed(PRESENCE_HEARTBEAT_SECONDS)


def sync_answered(events: int) -> None:
    SYNC_REQUESTS.inc()
    SYNC_EVENTS.inc(events)


# --- REST middleware --------------------------------------------------------------------------
class MetricsMiddleware:
    """Requests by route template (``resolver_match.route``; "unmatched" for a 404 without a
    route), method and status, with latency. The path itself (ids) is never a label."""

    METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        route = match.route if match is not None else "unmatched"
        method = request.method if request.method in self.METHODS else "other"
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
        return response


# --- Exposition -------------------------------------------------------------------------------
def registry() -> CollectorRegistry:
    """Every process's metrics in multi-process mode (the dead processes' live gauges
    forgotten), else this process's."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        forget_dead_processes(path)
        aggregated = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregated)
        return aggregated
    return REGISTRY


# A live gauge's file per process: gauge_livesum_<pid>.db (prometheus-client's naming).
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def forget_dead_processes(path: str) -> list[int]:
    """Remove the live gauges' files of the processes that no longer run; their pids."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    pids = {int(match.group(1)) for name in names if (match := _LIVE_GAUGE_FILE.fullmatch(name))}
    dead = sorted(pid for pid in pids if not process_running(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return dead


def process_running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: 404 unless ``METRICS_TOKEN`` is set, 401 without that bearer token."""
    token: str = getattr(settings, "METRICS_TOKEN", "")
    if not token:
        return HttpResponse(status=404)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return HttpResponse(status=401, headers={"WWW-Authenticate": "Bearer"})
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


# --- Celery -----------------------------------------------------------------------------------
_task_started: dict[str, float] = {}


def connect_celery() -> None:
    """Task duration, failures, retries and queue lag through Celery's signals; with
    ``METRICS_WORKER_PORT`` the worker's main process serves them (multi-process registry)."""
    from celery import signals

    signals.before_task_publish.connect(_stamp, weak=False)
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    signals.task_failure.connect(_failure, weak=False)
    signals.task_retry.connect(_retry, weak=False)
    signals.worker_init.connect(_serve_worker_metrics, weak=False)


def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers[SENT_AT_HEADER] = time.time()


def _prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    _task_started[task_id] = time.perf_counter()
    sent_at = getattr(task.request, SENT_AT_HEADER, None) if task is not None else None
    if sent_at is None and task is not None:
        sent_at = (getattr(task.request, "headers", None) or {}).get(SENT_AT_HEADER)
    if isinstance(sent_at, int | float) and not getattr(task.request, "is_eager", False):
        TASK_QUEUE_LAG.labels(task.name).observe(max(0.0, time.time() - sent_at))


def _postrun(task_id: str = "", task: Any = None, **_: Any) -> None:
    started = _task_started.pop(task_id, None)
    if started is not None and task is not None:
        TASK_SECONDS.labels(task.name).observe(time.perf_counter() - started)


def _failure(sender: Any = None, **_: Any) -> None:
    TASK_FAILURES.labels(getattr(sender, "name", "unknown")).inc()


def _retry(sender: Any = None, **_: Any) -> None:
    TASK_RETRIES.labels(getattr(sender, "name", "unknown")).inc()


def _serve_worker_metrics(**_: Any) -> None:
    port = int(os.environ.get("METRICS_WORKER_PORT") or 0)
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=os.environ.get("METRICS_WORKER_ADDR", "127.0.0.1"), registry=registry())
