"""Benchmark-only latency probe (``HEALTHCHAT_LATENCY_PROBE=<path>``; off by default).

Where a send's time goes between its frame and its ack, for ``bench/messaging.py
--latency-probe`` (``bench/latency_breakdown.py`` joins it with the load generator's send and
receive times by ``client_id``; both sides read ``CLOCK_MONOTONIC``). When on, a server process
keeps in memory, and writes to ``<path>.<pid>`` (JSON) when it exits:

- every garbage-collector pass (``gc.callbacks``): start, duration, generation;
- the event loop's lag: a timer every 2 ms, its lateness when over 1.5 ms (libuv's timers have
  a resolution of 1 ms, so lateness below that is the timer's own);
- every batch of sends (``messaging.batching``): each send's ``client_id`` and submit time, the
  batch's start, its round trips' ends (``mark``), the end of the write, of the publish and
  when the callers were answered.

The file is written at exit and on SIGUSR1 (uvicorn re-raises SIGTERM, so the benchmark asks
with SIGUSR1 before stopping the server). Nothing of it is logged and no message text is kept (ids and times only). Off, every hook is
one global check.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import gc
import json
import os
import signal
import time
from typing import Any

LAG_PERIOD = 0.002
LAG_KEEP = 0.0015
MAX_RECORDS = 500_000

_path = ""
_gc_passes: list[tuple[float, float, int, int]] = []
_gc_started: list[float] = [0.0]
_lags: list[tuple[float, float]] = []
_batches: list[dict[str, Any]] = []
_submitted: dict[int, float] = {}
_lag_loops: set[int] = set()
_lag_tasks: set[asyncio.Task[None]] = set()
_batch: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("latency_batch", default=None)


def enabled() -> bool:
    return bool(_path)


def install_from_settings() -> bool:
    """In a server process, once the application is loaded (``healthchat/asgi.py``)."""
    from django.conf import settings

    return install(getattr(settings, "HEALTHCHAT_LATENCY_PROBE", ""))


def install(path: str) -> bool:
    """Turn the probe on in this process (once); ``path`` empty: stays off."""
    global _path
    if not path or _path:
        return False
    _path = path
    gc.callbacks.append(_on_gc)
    atexit.register(write)
    # uvicorn re-raises SIGTERM after its shutdown (no atexit then): the benchmark asks for the
    # file with SIGUSR1 before it stops the server.
    with contextlib.suppress(ValueError):  # not the main thread (a test)
        signal.signal(signal.SIGUSR1, _write_on_signal)
    return True


def _write_on_signal(_signum: int, _frame: Any) -> None:
    write()


def uninstall() -> None:
    """Off again, everything kept dropped (tests)."""
    global _path
    _path = ""
    if _on_gc in gc.callbacks:
        gc.callbacks.remove(_on_gc)
    atexit.unregister(write)
    if signal.getsignal(signal.SIGUSR1) is _write_on_signal:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    for task in _lag_tasks:
        with contextlib.suppress(RuntimeError):  # a test's loop, closed already
            task.cancel()
    _lag_tasks.clear()
    _lag_loops.clear()
    for kept in (_gc_passes, _lags, _batches):
        kept.clear()
    _submitted.clear()


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    now = time.perf_counter()
    if phase == "start":
        _gc_started[0] = now
    elif len(_gc_passes) < MAX_RECORDS:
        _gc_passes.append((_gc_started[0], now - _gc_started[0], info["generation"], info["collected"]))


async def _lag_sampler() -> None:
    while True:
        due = time.perf_counter() + LAG_PERIOD
        await asyncio.sleep(LAG_PERIOD)
        late = time.perf_counter() - due
        if late > LAG_KEEP and len(_lags) < MAX_RECORDS:
            _lags.append((due, late))


def submitted(request: Any) -> None:
    """A send (``messaging.services.SendRequest``) is handed to the batcher."""
    if len(_submitted) < MAX_RECORDS:
        _submitted[id(request)] = time.perf_counter()


def start_batch(requests: list[Any]) -> dict[str, Any] | None:
    """A batch of sends begins (on the event loop); later ``mark`` calls in its task land in it."""
    if not _path:
        return None
    loop = asyncio.get_running_loop()
    if id(loop) not in _lag_loops:
        _lag_loops.add(id(loop))
        _lag_tasks.add(loop.create_task(_lag_sampler()))
    record: dict[str, Any] = {
        "ids": [str(r.client_id) for r in requests],
        "submitted": [_submitted.pop(id(r), 0.0) for r in requests],
        "t": {"start": time.perf_counter()},
    }
    if len(_batches) < MAX_RECORDS:
        _batches.append(record)
    _batch.set(record)
    return record


def mark(name: str, record: dict[str, Any] | None = None) -> None:
    """The current batch reached ``name`` (a round trip answered, the publish done, ...)."""
    if not _path:
        return
    target = record if record is not None else _batch.get()
    if target is not None:
        target["t"][name] = time.perf_counter()


def write() -> None:
    if not _path:
        return
    out = {
        "pid": os.getpid(),
        "gc_threshold": gc.get_threshold(),
        "gc_stats": gc.get_stats(),
        "gc_frozen": gc.get_freeze_count(),
        "gc": _gc_passes,
        "lag": _lags,
        "batches": _batches,
    }
    partial = f"{_path}.{os.getpid()}.partial"
    with open(partial, "w") as f:
        json.dump(out, f)
    os.replace(partial, f"{_path}.{os.getpid()}")
