"""uvicorn with an in-process stack sampler: the server of ``bench/messaging.py --profile FILE
--profile-mode sampler``, for a machine without py-spy.

``python bench/sampler.py <uvicorn arguments>`` from the code under test (the working tree or a
``--rev`` export: the current directory), with ``HC_SAMPLER_CONTROL`` naming a control file. A
daemon thread polls that file: while it reads ``start OUT``, every ``HC_SAMPLER_INTERVAL``
seconds (default 0.002) the thread records the stack of every other thread
(``sys._current_frames``); when it reads ``stop``, the counts are written to ``OUT`` as
collapsed stacks (``thread;outer (file:line);...;inner (file:line) count``, root first, as
py-spy's raw format) and ``OUT.done`` is created.

What a sample means: the sampler needs the GIL to read the stacks, so it samples when the
event loop's thread lets go of it: at the eval breaker after a switch interval (5 ms) of Python
or C code holding the GIL (the time of a C call, ``orjson.dumps`` or ``transport.write``, lands
on its calling line: the check follows the call), or while the loop waits in ``epoll`` or runs
libuv's own C code without the GIL (the stack then ends in the loop's ``run_until_complete``:
"loop, no Python frame"). It is py-spy's ``--gil`` view at a coarser rate; ``--perf FILE``
(``perf record`` of the same phase) splits the C side.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

BENCH = Path(__file__).resolve().parent
# The code under test (the current directory) first; bench/ would shadow the messaging app.
sys.path[:] = [os.getcwd(), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]


def stack_of(frame: FrameType | None) -> str:
    parts: list[str] = []
    while frame is not None:
        code = frame.f_code
        parts.append(f"{code.co_name} ({code.co_filename}:{frame.f_lineno})")
        frame = frame.f_back
    return ";".join(reversed(parts))


def sample(control: Path, interval: float) -> None:
    me = threading.get_ident()
    main_ident = threading.main_thread().ident
    counts: Counter[str] = Counter()
    out: Path | None = None
    taken = 0
    while True:
        if out is None or taken % 100 == 0:
            try:
                command = control.read_text().split()
            except OSError:
                command = []
            if out is None and command[:1] == ["start"] and len(command) == 2:
                out = Path(command[1])
                counts.clear()
            elif out is not None and command[:1] == ["stop"]:
                out.write_text("".join(f"{stack} {n}\n" for stack, n in counts.most_common()))
                Path(f"{out}.done").touch()
                out = None
        if out is None:
            time.sleep(0.05)
            continue
        time.sleep(interval)
        taken += 1
        for ident, frame in sys._current_frames().items():
            if ident != me:
                name = "main" if ident == main_ident else f"thread-{ident}"
                counts[f"{name};{stack_of(frame)}"] += 1


def main() -> None:
    control = os.environ.get("HC_SAMPLER_CONTROL")
    if control:
        interval = float(os.environ.get("HC_SAMPLER_INTERVAL", "0.002"))
        threading.Thread(target=sample, args=(Path(control), interval), daemon=True, name="sampler").start()
    import uvicorn

    sys.argv = ["uvicorn", *sys.argv[1:]]
    uvicorn.main()


if __name__ == "__main__":
    main()
