"""uvicorn under ``tracemalloc`` (analysis only: several times slower): on SIGUSR1 the server
writes a snapshot and a count of live objects by type to ``$HC_TRACE_DIR/snap-<n>.pickle``.

``python bench/traceboot.py healthchat.asgi:application --port ...`` (uvicorn's arguments);
``bench/idle.py --tracemalloc`` starts it, signals it after the warm-up and after the idle
period, and prints what one idle socket holds.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

FRAMES = 1


def dump(_signum: int, _frame: Any) -> None:
    gc.collect()
    directory = Path(os.environ["HC_TRACE_DIR"])
    n = len(list(directory.glob("snap-*.pickle")))
    types = Counter(f"{type(o).__module__}.{type(o).__name__}" for o in gc.get_objects())
    snapshot = tracemalloc.take_snapshot()
    with (directory / f"snap-{n}.pickle").open("wb") as fh:
        pickle.dump({"snapshot": snapshot, "types": types}, fh)
    (directory / f"snap-{n}.done").write_text("ok")


if __name__ == "__main__":
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]  # bench/messaging.py
    tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["uvicorn", *sys.argv[1:]]
    import uvicorn.main

    uvicorn.main.main()
