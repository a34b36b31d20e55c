"""The server's samples by component: ``python bench/profile_table.py PROFILE [--cpu-ms-per-msg X]``.

``PROFILE``: collapsed stacks (``bench/messaging.py --profile``: py-spy's raw format, or
``--profile-mode sampler``'s). Each sample of the event loop's thread goes to the component of
its innermost frame that one of ``COMPONENTS`` names (a C call's time sits on the line that
calls it: ``--leaves`` lists the busiest lines). A sample whose innermost frame is the loop's
``run_until_complete`` (no Python frame: the loop in ``epoll`` or libuv's C code) is counted
apart, as "loop, no Python frame". With ``--cpu-ms-per-msg`` (the phase's server CPU per
message) the busy samples' shares are also shown as µs per message.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (component, a pattern of the frame's "function (file:line)"), the first match wins per frame.
COMPONENTS: list[tuple[str, str]] = [
    ("metrics hooks", r"core/metrics\.py|prometheus_client"),
    ("logging", r"/logging/"),
    ("frame parse + validation (json, pydantic)", r"messaging/protocol\.py|/json/|pydantic"),
    (
        "websocket framing (websockets, uvicorn, ws_protocol)",
        r"/websockets/|uvicorn/protocols|core/ws_protocol\.py",
    ),
    (
        "channel layer + Redis client (redis-py, msgpack)",
        r"/redis/|channels_redis|core/channel_layer\.py|msgpack",
    ),
    ("loop writer: psycopg, pipeline", r"/psycopg|messaging/raw_pipeline\.py|messaging/loop_writer\.py"),
    (
        "send service: outcome, wire dicts, fan-out",
        r"messaging/services/|messaging/selectors/|messaging/frames\.py|messaging/send_rules\.py|messaging/send_limits\.py",
    ),
    ("batcher", r"messaging/batching\.py|core/batcher\.py"),
    ("realtime: collect, flush", r"core/realtime\.py"),
    ("consumer + handler", r"messaging/consumers\.py|messaging/handlers\.py|/channels/|core/asgi_socket\.py"),
    ("presence, heartbeats", r"messaging/presence\.py"),
    ("Django (connections, settings)", r"/django/"),
    ("asyncio (tasks, futures, events in Python)", r"/asyncio/"),
]
IDLE = "loop, no Python frame (epoll, libuv C)"
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
        if thread and frames[0] != thread:
            continue
        frames = frames[1:] if thread else frames
        n = int(count)
        components[classify(frames)] += n
        leaves[frames[-1] if frames else "?"] += n
    return components, leaves


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument(
        "--thread", default="main", help="the first field of the stacks to count ('' for all)"
    )
    parser.add_argument(
        "--cpu-ms-per-msg", type=float, help="server CPU ms per message in the profiled phase"
    )
    parser.add_argument("--leaves", type=int, default=30, help="the busiest innermost lines to list")
    args = parser.parse_args()
    components, leaves = read(args.profile, args.thread)
    total = sum(components.values())
    busy = total - components[IDLE]
    print(f"{total} samples, {busy} with a Python frame\n")
    print("| component | samples | % of busy samples | µs per message |")
    print("| --- | ---: | ---: | ---: |")
    for name, n in components.most_common():
        share = n / busy if busy and name != IDLE else 0.0
        per_msg = f"{share * args.cpu_ms_per_msg * 1000:.1f}" if args.cpu_ms_per_msg and name != IDLE else ""
        pct = f"{share * 100:.1f}" if name != IDLE else f"({n / total * 100:.1f} % of all)"
        print(f"| {name} | {n} | {pct} | {per_msg} |")
    print(f"\nbusiest innermost lines (of {total}):")
    for leaf, n in leaves.most_common(args.leaves):
        print(f"{n:6d} {n / total * 100:5.1f}%  {leaf}")


if __name__ == "__main__":
    main()
