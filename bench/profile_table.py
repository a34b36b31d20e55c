"""The server's samples by component: ``python bench/profile_table.py PROFILE [--cpu-ms-per-msg X]``.

``PROFILE``: py-spy's raw collapsed stacks (``bench/messaging.py --profile FILE``, ``--gil`` by
default: the thread holding the GIL). Each sample goes to the component of its innermost frame
that one of ``COMPONENTS`` names (a C call's time sits on the line that calls it: ``--leaves``
lists the busiest lines). A sample whose innermost frame is the loop's ``run_until_complete``
(no Python frame: libuv's C code with the GIL) is counted apart. With ``--cpu-ms-per-msg`` (the
phase's server CPU per message, from the benchmark's table) each share is also shown as µs per
message: the share of the samples times that CPU (GIL samples overstate the time on a loaded
machine, where a thread can hold the GIL while it waits for a core: shares are steadier).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (component, a pattern of the frame's "function (file:line)"), the first match wins per frame.
# py-spy names installed packages' files relative to site-packages ("(psycopg/...").
COMPONENTS: list[tuple[str, str]] = [
    ("metrics hooks", r"core/metrics\.py|[(/]prometheus_client/"),
    ("logging", r"[(/]logging/"),
    ("frame parse + validation (json, pydantic)", r"messaging/protocol\.py|[(/]json/|[(/]pydantic"),
    (
        "websocket framing (websockets, uvicorn, ws_protocol)",
        r"[(/]websockets/|[(/]uvicorn/protocols/|core/ws_protocol\.py",
    ),
    (
        "channel layer + Redis client (redis-py, msgpack)",
        r"[(/]redis/|[(/]channels_redis/|core/channel_layer\.py|[(/]msgpack/",
    ),
    (
        "database writers: psycopg, parameters, rows",
        r"[(/]psycopg(_pool)?/|messaging/raw_pipeline\.py|messaging/loop_writer\.py|[(/]django/db/",
    ),
    (
        "send service: outcome, wire dicts, fan-out",
        r"messaging/services/|messaging/selectors/|messaging/frames\.py|messaging/send_rules\.py"
        r"|messaging/send_limits\.py|payments/",
    ),
    ("batcher", r"messaging/batching\.py|core/batcher\.py"),
    ("realtime: collect, flush", r"core/realtime\.py"),
    (
        "consumer + handler",
        r"messaging/consumers\.py|messaging/handlers\.py|[(/]channels/|core/asgi_socket\.py|core/eager\.py",
    ),
    ("presence, heartbeats", r"messaging/presence\.py"),
    ("thread hops (asgiref, executor)", r"[(/]asgiref/|[(/]concurrent/|[(/]threading\.py"),
    ("Django (settings, signals)", r"[(/]django/"),
    ("asyncio (tasks, futures, timeouts, streams)", r"[(/]asyncio/"),
]
IDLE = "loop, no Python frame (libuv C)"
COMPILED = [(name, re.compile(pattern)) for name, pattern in COMPONENTS]


def classify(frames: list[str]) -> str:
    if frames and frames[-1].startswith("run_until_complete ("):
        return IDLE
    for frame in reversed(frames):
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return "other"


def read(path: Path, thread: str) -> tuple[Counter[str], Counter[str]]:
    components: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        head = [f for f in frames[:2] if f.startswith(("process ", "thread "))]
        if thread and not any(thread in f for f in head):
            continue
        frames = frames[len(head) :]
        n = int(count)
        components[classify(frames)] += n
        leaves[frames[-1] if frames else "?"] += n
    return components, leaves


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--thread", default="", help="count only the thread whose py-spy name holds this")
    parser.add_argument(
        "--cpu-ms-per-msg", type=float, help="the phase's server CPU ms per message (the µs column)"
    )
    parser.add_argument("--leaves", type=int, default=30, help="the busiest innermost lines to list")
    args = parser.parse_args()
    components, leaves = read(args.profile, args.thread)
    total = sum(components.values())
    print(f"{total} samples\n")
    print("| component | samples | % | µs per message |")
    print("| --- | ---: | ---: | ---: |")
    for name, n in components.most_common():
        per_msg = f"{n / total * args.cpu_ms_per_msg * 1000:.1f}" if args.cpu_ms_per_msg else ""
        print(f"| {name} | {n} | {n / total * 100:.1f} | {per_msg} |")
    if args.cpu_ms_per_msg:
        print(f"| total | {total} | 100 | {args.cpu_ms_per_msg * 1000:.1f} |")
    print(f"\nbusiest innermost lines (of {total}):")
    for leaf, n in leaves.most_common(args.leaves):
        print(f"{n:6d} {n / total * 100:5.1f}%  {leaf}")


if __name__ == "__main__":
    main()
