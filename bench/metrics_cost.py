"""What the metric hooks cost one 1:1 message on the server, measured in one process, without a
quiet machine: ``python bench/metrics_cost.py [--messages 20000] [--rounds 15] [--batch-sizes 1
32] [--server-cpu-ms 0.13 | --from-json FILE ...] [--rev REV ...] [--instructions]``.

On a running event loop (uvloop, as the server's) with the hot path's tally bound to it
(``core.metrics.tally.bind()``, what the first socket does), it makes exactly the hook calls
one 1:1 ``message.send`` causes on the server, for ``--messages`` messages, then the same with
every hook a no-op (the ones ``bench/metrics_off.py`` replaces, as ``--metrics off`` serves),
in alternating rounds, and prints the median µs per message of each and their difference:

- per message: ``frame_in("message.send")`` (``ChatConsumer.receive``), ``frame_out("ack")``
  (``send_frame``), ``frame_answered("message.send", started)`` (after the ack), and one
  ``delivered(event)`` per recipient socket (``client_event``; ``--recipients``, 1 in
  ``bench/messaging.py``: the peer's socket. The sender's own socket is the event's
  ``exclude_channel``, skipped by the layer before any hook, so no echo is delivered there);
- per send batch of ``--batch-sizes`` messages: ``writer_ran("loop_writer", ...)``
  (``SendBatcher.run``), ``published([...])`` with the batch's pending events, two per message
  (the sender's and the peer's user group, the same event dict: ``core.realtime.flush``, with
  the list it builds), and ``batch_ran(batcher, ...)`` (``Batcher._drain``);
- per message, the event through the channel layer's real serializer
  (``LocalFirstChannelLayer.serialize``, msgpack, plus the layer's 8-byte origin: what
  ``group_send_many`` publishes, once per message) — with metrics on it carries the
  ``published_at`` stamp, off it does not; ``--decode`` also parses it once per message, as
  each other server process with a recipient does (not in the one-process benchmark);
- the tally's flush (the loop timer's, once a second on the server) every ``--flush-every``
  messages (default 5,000: about one second's at saturation).

The events are built before each round (the same in both modes); the garbage collector is off
during a round (the allocations are the same but for the tally's). The cost is printed as µs
per message and as a share of the server's CPU per message: ``--server-cpu-ms`` (default 0.13,
the quiet saturation figure of ``48c0574``) or the metrics-on servers' saturation and offered
figures of ``bench/messaging.py --json`` files (``--from-json``); the saturation share uses
the largest batch size, the offered one (500 msgs/s, batches of one or two) the smallest.

``--rev REV`` (repeatable; ``.`` is the working tree) measures each revision's code (exported
with ``git archive``) in a child process, alternating the revisions ``--repeat`` times, and
prints them side by side: before/after in one run. ``--instructions`` also counts instructions
with ``valgrind --tool=callgrind`` (two child processes, hooks on and hooks off, same messages,
``PYTHONHASHSEED=0``): (on - off) / messages, independent of the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

# A 1:1 message as ``messaging.frames.message_wire`` spells it (64-byte body, as bench/messaging.py).
MESSAGE: dict[str, Any] = {
    "id": 1_234_567,
    "conversation_id": 4_321,
    "seq": 987,
    "client_id": str(uuid.UUID(int=7)),
    "sender_id": 8_642,
    "kind": "text",
    "created_at": "2026-12-07T12:00:00.123456+00:00",
    "body": "x" * 64,
    "attachments": [],
    "reply_to": None,
    "edited_at": None,
    "edit_count": 0,
    "deleted": False,
    "mentions": [],
    "reactions": [],
}


class SendBatcher:
    """Stands for ``messaging.batching.SendBatcher`` in ``batch_ran`` (its label is the class name)."""


def load_metrics_off() -> Any:
    spec = importlib.util.spec_from_file_location("metrics_off", BENCH / "metrics_off.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts the code under test (the current directory) first
    return module


def make_batches(messages: int, batch: int, recipients: int) -> list[tuple[list[dict[str, Any]], list[Any]]]:
    """Each batch's events (one per message, a fresh dict as ``fan_out`` makes) and the pending
    (group, event) pairs ``core.realtime.flush`` gets: the sender's group, then each recipient's."""
    batches = []
    channel = f"healthchat.specific.{uuid.uuid4().hex}"
    for start in range(0, messages, batch):
        events = []
        pending = []
        for n in range(start, min(messages, start + batch)):
            frame = {"type": "message.new", "data": {"message": MESSAGE}, "event": n}
            event = {"type": "client.event", "frame": frame, "exclude_channel": channel}
            events.append(event)
            pending.append(("healthchat.user.1", event))
            pending.extend(("healthchat.user.2", event) for _ in range(recipients))
        batches.append((events, pending))
    return batches


def one_round(metrics: Any, layer: Any, batches: list[Any], on: bool, args: argparse.Namespace) -> int:
    """The hook calls of every message of ``batches``; nanoseconds."""
    origin = b"\x00" * 8
    serialize, deserialize = layer.serialize, layer.deserialize
    perf_counter = time.perf_counter
    batcher = SendBatcher()
    recipients = args.recipients
    decode = args.decode
    flush_every = args.flush_every
    tally = metrics.tally
    done = 0
    gc.disable()
    began = time.perf_counter_ns()
    for events, pending in batches:
        started = perf_counter()
        for _ in events:
            metrics.frame_in("message.send")
        metrics.writer_ran("loop_writer", True, len(events), started)
        metrics.published([event for _, event in pending])
        for event in events:
            wire = bytes(origin + serialize(event))
            if decode:
                deserialize(wire[8:])
        metrics.batch_ran(batcher, len(events), started)
        for event in events:
            metrics.frame_out("ack")
            metrics.frame_answered("message.send", started)
            for _ in range(recipients):
                metrics.delivered(event)
        done += len(events)
        if on and done >= flush_every:
            done = 0
            if tally.timer is not None:
                tally.timer.cancel()
            tally.flush()
    ended = time.perf_counter_ns()
    gc.enable()
    return ended - began


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    metrics_off = load_metrics_off()
    from core import metrics
    from core.channel_layer import LocalFirstChannelLayer

    layer = LocalFirstChannelLayer(hosts=["redis://127.0.0.1:6379/0"], prefix="healthchat")
    hooks = {name: getattr(metrics, name) for name in metrics_off.HOOKS}
    metrics.tally.bind()
    assert metrics.tally.loop is asyncio.get_running_loop()
    gc.collect()
    gc.freeze()
    modes = ["on", "off"] if args.only is None else [args.only]
    out: dict[str, Any] = {"messages": args.messages, "rounds": args.rounds, "batches": {}}
    for batch in args.batch_sizes:
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode in modes:
                for name in metrics_off.HOOKS:
                    setattr(metrics, name, hooks[name] if mode == "on" else metrics_off.nothing)
                batches = make_batches(args.messages, batch, args.recipients)
                elapsed = one_round(metrics, layer, batches, mode == "on", args)
                times[mode].append(elapsed / args.messages / 1000)
                await asyncio.sleep(0)  # the loop runs its own callbacks (the tally's timer)
        figures = {mode: statistics.median(values) for mode, values in times.items()}
        if "on" in figures and "off" in figures:
            figures["cost"] = figures["on"] - figures["off"]
        out["batches"][str(batch)] = figures
    for name in metrics_off.HOOKS:
        setattr(metrics, name, hooks[name])
    out["stamp_bytes"] = stamp_bytes(metrics, layer)
    return out


def stamp_bytes(metrics: Any, layer: Any) -> int:
    """Bytes the publication stamp adds to one event on the wire."""
    frame = {"type": "message.new", "data": {"message": MESSAGE}, "event": 1}
    plain = {"type": "client.event", "frame": frame, "exclude_channel": "x" * 52}
    stamped = dict(plain)
    metrics.published([stamped])
    size: int = len(layer.serialize(stamped)) - len(layer.serialize(plain))
    return size


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the code in the current directory (the working tree or an export)."""
    try:
        import uvloop
    except ImportError:  # the server runs on uvloop; asyncio's loop otherwise
        return asyncio.run(measure(args))
    return uvloop.run(measure(args))


def server_cpu(args: argparse.Namespace) -> dict[str, float]:
    """ms of server CPU per message (saturation, offered) of the metrics-on servers."""
    if not args.from_json:
        return {"saturation": args.server_cpu_ms, "offered": args.server_cpu_ms}
    found: dict[str, list[float]] = {"saturation": [], "offered": []}
    for path in args.from_json:
        results = json.loads(Path(path).read_text())
        for name, server in results.items():
            if (
                name.startswith("healthchat")
                and isinstance(server, dict)
                and server.get("metrics", "on") == "on"
            ):
                for phase in found:
                    value = server.get(phase, {}).get("resources", {}).get("server_cpu_s_per_1k")
                    if value:
                        found[phase].append(float(value))
    if not found["saturation"]:
        raise SystemExit(f"no metrics-on saturation figure in {args.from_json}")
    sat = statistics.median(found["saturation"])
    return {"saturation": sat, "offered": statistics.median(found["offered"]) if found["offered"] else sat}


def child_command(args: argparse.Namespace, json_out: str, only: str | None = None) -> list[str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--messages",
        str(args.messages),
        "--rounds",
        str(args.rounds),
        "--recipients",
        str(args.recipients),
        "--flush-every",
        str(args.flush_every),
        "--json",
        json_out,
        "--batch-sizes",
        *(str(b) for b in args.batch_sizes),
        "--quiet",
    ]
    if args.decode:
        command.append("--decode")
    if only is not None:
        command += ["--only", only]
    return command


def instructions(args: argparse.Namespace, source: Path, tmp: Path) -> dict[str, float]:
    """Instructions per message, hooks on minus hooks off (callgrind, one round, same messages)."""
    counts: dict[str, int] = {}
    for mode in ("on", "off"):
        small = argparse.Namespace(**{**vars(args), "rounds": 1})
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            *child_command(small, str(tmp / f"cg-{mode}.json"), only=mode),
        ]
        done = subprocess.run(
            command, cwd=source, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}
        )
        match = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
        if done.returncode != 0 or match is None:
            raise SystemExit(f"callgrind failed ({done.returncode}): {done.stderr[-2000:]}")
        counts[mode] = int(match.group(1))
    messages = args.messages * len(args.batch_sizes)
    return {
        "on": counts["on"],
        "off": counts["off"],
        "per_message": (counts["on"] - counts["off"]) / messages,
    }


def print_report(label: str, result: dict[str, Any], cpu: dict[str, float], args: argparse.Namespace) -> None:
    sizes = sorted(int(b) for b in result["batches"])
    print(f"\n{label}: {result['messages']:,} messages x {result['rounds']} rounds per mode, medians")
    print("| batch size | on µs/msg | off µs/msg | hooks µs/msg | % of server CPU/msg |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for size in sizes:
        figures = result["batches"][str(size)]
        shares = []
        if size == sizes[-1]:
            shares.append(f"saturation {100 * figures['cost'] / 1000 / cpu['saturation']:.2f} %")
        if size == sizes[0]:
            shares.append(f"offered {100 * figures['cost'] / 1000 / cpu['offered']:.2f} %")
        print(
            f"| {size} | {figures['on']:.3f} | {figures['off']:.3f} | {figures['cost']:.3f} | {'; '.join(shares)} |"
        )
    print(f"published_at on the wire: +{result['stamp_bytes']} bytes per event")
    if "instructions" in result:
        ins = result["instructions"]
        print(f"instructions per message, on - off (callgrind): {ins['per_message']:,.0f}")
    print(
        f"server CPU per message: saturation {cpu['saturation']:.3f} ms, offered {cpu['offered']:.3f} ms"
        + (f" (from {', '.join(args.from_json)})" if args.from_json else " (--server-cpu-ms)")
    )


def run_revisions(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(BENCH))
    from harness import export_source

    cpu = server_cpu(args)
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as name:
        tmp = Path(name)
        sources: dict[str, tuple[Path, str]] = {}
        for n, rev in enumerate(args.rev):
            where = tmp / f"rev{n}"
            where.mkdir()
            sources[rev] = export_source(None if rev == "." else rev, where)
        runs: dict[str, list[dict[str, Any]]] = {rev: [] for rev in args.rev}
        for repeat in range(args.repeat):
            for rev in args.rev if repeat % 2 == 0 else list(reversed(args.rev)):
                source, _ = sources[rev]
                out = tmp / f"out-{len(runs[rev])}-{abs(hash(rev))}.json"
                subprocess.run(child_command(args, str(out)), cwd=source, check=True)
                runs[rev].append(json.loads(out.read_text()))
        summary: dict[str, Any] = {}
        for rev in args.rev:
            source, revision = sources[rev]
            merged = merge(runs[rev])
            if args.instructions:
                merged["instructions"] = instructions(args, source, tmp)
            merged["revision"] = revision
            summary[rev] = merged
            print_report(f"{rev} ({revision})", merged, cpu, args)
    print(f"\nload: {os.getloadavg()}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"server_cpu_ms": cpu, "revisions": summary}, indent=2))
    return 0


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several child runs of one revision: the median of each figure."""
    first = runs[0]
    merged: dict[str, Any] = {
        "messages": first["messages"],
        "rounds": sum(run["rounds"] for run in runs),
        "stamp_bytes": first["stamp_bytes"],
        "batches": {},
    }
    for size in first["batches"]:
        merged["batches"][size] = {
            key: statistics.median(run["batches"][size][key] for run in runs) for key in ("on", "off", "cost")
        }
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per mode (alternating on, off)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32], help="messages per send batch")
    parser.add_argument(
        "--recipients", type=int, default=1, help="recipient sockets per message (the peer's)"
    )
    parser.add_argument("--flush-every", type=int, default=5_000, help="the tally's flush every N messages")
    parser.add_argument(
        "--decode", action="store_true", help="also parse each event (another process's work)"
    )
    parser.add_argument("--server-cpu-ms", type=float, default=0.13, help="server CPU ms per message")
    parser.add_argument("--from-json", nargs="+", help="bench/messaging.py --json files (metrics-on servers)")
    parser.add_argument("--rev", action="append", help="measure this revision ('.': the working tree)")
    parser.add_argument("--repeat", type=int, default=2, help="with --rev: child runs per revision")
    parser.add_argument("--instructions", action="store_true", help="with --rev: callgrind counts")
    parser.add_argument("--only", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)  # a child: JSON only
    parser.add_argument("--json", dest="json_out", help="write the figures to this file")
    args = parser.parse_args()
    if args.rev:
        return run_revisions(args)
    result = child(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    if args.only is None and not args.quiet:
        print_report("working directory", result, server_cpu(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
