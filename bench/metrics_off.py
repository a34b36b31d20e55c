"""uvicorn with every metric hook of ``core.metrics`` replaced by a no-op: the server of
``bench/messaging.py --metrics off`` (and the ``off`` half of ``on-off`` / ``off-on``), to
measure what the metrics cost on the hot path against the same code with them on, in one run.

``python bench/metrics_off.py <uvicorn arguments>`` from the code under test (the working tree
or a ``--rev`` export: the current directory). The hooks are the functions the code calls as
``metrics.<hook>(...)`` (socket, frame, error, delivery, publish, batch, writer, push, webhook,
sync and heartbeat hooks); they are looked up at call time, so replacing them on the module
before the app is imported removes every metric update. The REST middleware and the
``/metrics`` view stay (REST is not on the messaging hot path).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# The code under test (the current directory) first; bench/ would shadow the messaging app.
sys.path[:] = [os.getcwd(), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

HOOKS = (
    "socket_opened",
    "socket_closed",
    "frame_in",
    "frame_answered",
    "frame_out",
    "error",
    "rest_error",
    "delivered",
    "published",
    "publish_failed",
    "batch_ran",
    "writer_ran",
    "push_report",
    "webhook",
    "sync_answered",
    "heartbeat_done",
)


def nothing(*args: object, **kwargs: object) -> None:
    return None


def main() -> None:
    try:
        from core import metrics
    except ImportError as exc:
        raise SystemExit(f"no core.metrics here ({exc}): this revision predates the metrics") from exc

    missing = [name for name in HOOKS if not callable(getattr(metrics, name, None))]
    if missing:
        raise SystemExit(f"core.metrics has no hook {missing}: this revision predates them")
    for name in HOOKS:
        setattr(metrics, name, nothing)
    import uvicorn

    sys.argv = ["uvicorn", *sys.argv[1:]]
    uvicorn.main()


if __name__ == "__main__":
    main()
