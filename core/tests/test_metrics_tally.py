"""The hot path's metric updates added up on the server's loop (``core.metrics.LoopTally``) give
the same series as updating the metrics one call at a time; and a failing socket handler's log
record (so its Sentry report) does not quote the client's strings (``core.logs.hiding``)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from core import log_context, logs, sentry
from core.metrics import LATENCY_BUCKETS, BatchedHistogram, LoopTally, child

VALUES = [0.0, 0.0004, 0.001, 0.0011, 0.003, 0.003, 0.2, 0.5, 2.4, 9.9, 10.0, 42.0, -1.0]


def exposition(registry: CollectorRegistry) -> list[str]:
    """The registry's samples without the creation times (they differ between metrics)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_bucketed_observations_equal_one_observe_per_value():
    mine, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchedHistogram("t_seconds", "t", ["type"], buckets=LATENCY_BUCKETS, registry=mine)
    plain = Histogram("t_seconds", "t", ["type"], buckets=LATENCY_BUCKETS, registry=theirs)
    tally = LoopTally()

    async def on_the_loop() -> None:
        tally.bind()
        for value in VALUES:
            tally.observe(batched, "message.send", value)
            plain.labels("message.send").observe(value)
        assert "t_seconds_count" not in generate_latest(mine).decode()  # pending until the flush
        assert tally.timer is not None
        tally.flush()

    asyncio.run(on_the_loop())
    assert exposition(mine) == exposition(theirs)
    assert 't_seconds_count{type="message.send"} 13.0' in exposition(mine)


def test_counts_are_applied_by_the_loop_timer_within_the_interval():
    registry = CollectorRegistry()
    frames = Counter("t_frames", "t", ["type"], registry=registry)
    tally = LoopTally()
    tally.INTERVAL = 0.05

    async def on_the_loop() -> float:
        tally.bind()
        for _ in range(1000):
            tally.count(frames, "ack")
        tally.count(frames, "message.new", 5)
        pending = registry.get_sample_value("t_frames_total", {"type": "ack"})
        await asyncio.sleep(0.2)
        assert tally.timer is None
        assert tally.counts == {}
        return pending or 0.0

    assert asyncio.run(on_the_loop()) == 0.0
    assert registry.get_sample_value("t_frames_total", {"type": "ack"}) == 1000.0
    assert registry.get_sample_value("t_frames_total", {"type": "message.new"}) == 5.0


def test_updates_off_the_tally_loop_are_applied_at_once():
    """A worker thread, a loop that is not the server's, or no loop at all: no pending state
    that no timer would ever apply."""
    registry = CollectorRegistry()
    frames = Counter("t_frames", "t", ["type"], registry=registry)
    seconds = BatchedHistogram("t_seconds", "t", registry=registry)
    tally = LoopTally()
    tally.count(frames, "ping")  # no loop, nothing bound

    async def server_loop() -> None:
        tally.bind()
        thread = threading.Thread(target=lambda: tally.count(frames, "ping"))
        thread.start()
        thread.join()
        assert registry.get_sample_value("t_frames_total", {"type": "ping"}) == 2.0
        tally.flush()

    asyncio.run(server_loop())

    async def another_loop() -> None:  # the server's loop has ended: a new socket rebinds
        tally.observe(seconds, None, 0.5)
        assert registry.get_sample_value("t_seconds_count") == 1.0
        tally.bind()
        tally.observe(seconds, None, 0.5)
        assert registry.get_sample_value("t_seconds_count") == 1.0
        tally.flush()

    asyncio.run(another_loop())
    assert registry.get_sample_value("t_seconds_count") == 2.0
    assert registry.get_sample_value("t_seconds_sum") == 1.0


def test_child_is_looked_up_once():
    registry = CollectorRegistry()
    frames = Counter("t_frames", "t", ["type"], registry=registry)
    assert child(frames, "ack") is child(frames, "ack") is frames.labels("ack")
    assert child(frames) is frames


def test_hiding_keeps_a_frames_strings_out_of_the_log_line_and_the_sentry_report():
    body = "canary-zebra-quartz-7731 my own words"
    stream = io.StringIO()
    config = log_context.logging_config("json", "INFO")
    formatter_config = dict(config["formatters"]["main"])
    formatter_config.pop("()")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_context.JsonFormatter(**formatter_config))
    logger = logging.getLogger("ops.test.hiding")
    logger.addHandler(handler)
    logger.propagate = False
    data = {"conversation_id": 5, "body": body, "mentions": [{"note": "second-string"}], "ref": "ok"}
    try:
        raise RuntimeError(f'failing row contains ("{body}", "second-string", ok)')
    except RuntimeError as exc:
        with logs.hiding(logs.strings_in(data)):
            logger.exception("socket handler failed for %s", "message.edit")
            report = sentry.scrub(
                {"exception": {"values": [{"type": "RuntimeError", "value": str(exc)}]}}, None
            )
        after = logs.redact(str(exc))  # the block ended: nothing hidden any more
    record = json.loads(stream.getvalue())
    assert record["event"] == "socket handler failed for message.edit"
    assert "RuntimeError" in record["exc_info"]
    for text in (record["exc_info"], json.dumps(report)):
        assert "canary-zebra" not in text, text
        assert "second-string" not in text, text
        assert '"[redacted]"' in text or '\\"[redacted]\\"' in text, text
        assert "ok)" in text  # strings shorter than HIDDEN_MIN_LENGTH are left alone
    assert body in after


MULTIPROCESS_SCRIPT = """
import asyncio, sys
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from core.metrics import LATENCY_BUCKETS, BatchedHistogram, LoopTally

values = [float(v) for v in sys.argv[1:]]
batched = BatchedHistogram("a_seconds", "t", ["type"], buckets=LATENCY_BUCKETS)
plain = Histogram("b_seconds", "t", ["type"], buckets=LATENCY_BUCKETS)
counted = Counter("a_frames", "t", ["type"])
tally = LoopTally()

async def on_the_loop():
    tally.bind()
    for value in values:
        tally.observe(batched, "message.send", value)
        tally.count(counted, "ack")
        plain.labels("message.send").observe(value)
    tally.flush()

asyncio.run(on_the_loop())
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
print(generate_latest(registry).decode())
"""


def test_bucketed_observations_in_multiprocess_mode(tmp_path):
    """With ``PROMETHEUS_MULTIPROC_DIR`` (uvicorn ``--workers``) the flushed buckets land in the
    process's files and the collector reads the same series as one ``observe`` per value."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT, *map(str, VALUES)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    batched = sorted(line.replace("a_seconds", "x") for line in lines if line.startswith("a_seconds"))
    plain = sorted(line.replace("b_seconds", "x") for line in lines if line.startswith("b_seconds"))
    assert batched == plain
    assert 'a_seconds_count{type="message.send"} 13.0' in lines
    assert 'a_frames_total{type="ack"} 13.0' in lines


class SendBatcher:
    """Stands for ``messaging.batching.SendBatcher`` (``batch_ran`` labels by class name)."""


# One 1:1 message's hook calls (as bench/metrics_cost.py makes them) and what each adds.
MESSAGE_SERIES = {
    ("healthchat_frames_in_total", ("message.send",)): 1.0,
    ("healthchat_frames_out_total", ("ack",)): 1.0,
    ("healthchat_frames_out_total", ("message.new",)): 2.0,
    ("healthchat_frame_seconds_count", ("message.send",)): 1.0,
    ("healthchat_delivery_seconds_count", ()): 1.0,
    ("healthchat_layer_publishes_total", ("ok",)): 2.0,
    ("healthchat_batch_size_count", ("loop_writer",)): 1.0,
    ("healthchat_batch_size_sum", ("loop_writer",)): 3.0,
    ("healthchat_batch_seconds_count", ("loop_writer",)): 1.0,
    ("healthchat_batch_size_count", ("SendBatcher",)): 1.0,
    ("healthchat_batch_size_sum", ("SendBatcher",)): 3.0,
    ("healthchat_batch_seconds_count", ("SendBatcher",)): 1.0,
}
LABEL_NAMES = {
    "healthchat_frames_in_total": ("type",),
    "healthchat_frames_out_total": ("type",),
    "healthchat_frame_seconds_count": ("type",),
    "healthchat_delivery_seconds_count": (),
    "healthchat_layer_publishes_total": ("result",),
    "healthchat_batch_size_count": ("batcher",),
    "healthchat_batch_size_sum": ("batcher",),
    "healthchat_batch_seconds_count": ("batcher",),
}


def message_series() -> dict[tuple[str, tuple[str, ...]], float]:
    from prometheus_client import REGISTRY

    return {
        (name, labels): REGISTRY.get_sample_value(name, dict(zip(LABEL_NAMES[name], labels, strict=True)))
        or 0.0
        for name, labels in MESSAGE_SERIES
    }


def one_message() -> None:
    from core import metrics

    started = time.perf_counter()
    metrics.frame_in("message.send")
    event: dict[str, Any] = {"type": "client.event", "frame": {"type": "message.new", "data": {}}}
    metrics.writer_ran("loop_writer", True, 3, started)
    metrics.published([event, event])  # the sender's and the peer's user group: one event
    assert isinstance(event["published_at"], float)
    metrics.batch_ran(SendBatcher(), 3, started)
    metrics.frame_out("ack")
    metrics.frame_answered("message.send", started)
    metrics.delivered(event)
    metrics.delivered(event)  # a second socket: a frame out, no second delivery time
    assert "published_at" not in event


def test_a_messages_hooks_add_the_same_series_on_the_loop_and_off_it():
    """The per-message hooks (their loop check and dict updates written out) count every call:
    added up on the tally's loop until the flush, applied at once anywhere else."""
    from core import metrics

    async def on_the_loop() -> tuple[dict[tuple[str, tuple[str, ...]], float], ...]:
        metrics.tally.bind()  # (applies what an earlier test's loop left)
        assert metrics.tally.loop is asyncio.get_running_loop()
        start = message_series()
        for _ in range(5):
            one_message()
        pending = message_series()
        assert metrics.tally.timer is not None
        metrics.tally.timer.cancel()
        metrics.tally.flush()
        return start, pending

    start, pending = asyncio.run(on_the_loop())
    assert pending == start  # nothing applied before the flush
    flushed = message_series()
    assert flushed == {key: start[key] + 5 * added for key, added in MESSAGE_SERIES.items()}

    thread = threading.Thread(target=lambda: [one_message() for _ in range(2)])  # a writer thread
    thread.start()
    thread.join()
    one_message()  # no loop at all
    assert message_series() == {key: flushed[key] + 3 * added for key, added in MESSAGE_SERIES.items()}
