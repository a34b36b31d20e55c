"""Where a send's time goes, frame to delivery, at the median and at the p99 (issue 26).

Joins the load generator's dump (``times``: client_id, send, ack and receive time, the Node load
generator's ``CLOCK_MONOTONIC``) with the server's latency probe (``core/latency_probe.py``,
``HEALTHCHAT_LATENCY_PROBE``: per batch of sends its start and round-trip ends, per send its
submit time; the collector's passes; event-loop stalls) by ``client_id``. Both read the same
clock, so the parts add up to the latency the load generator measured:

- ``to_server``: the frame from the client to the batcher (network, the server's loop reading
  it, parsing, the handler);
- ``queued``: waiting for the batch in flight to end (group commit);
- ``rt1``: BEGIN, the locks, the send statement, the reach rules (and, once per conversation, the
  kind lookup before them); ``limit``: waiting for the send limit's Redis answer after that;
- ``commit``: the push outbox statement and COMMIT (the WAL flush); ``after``: Python after the
  COMMIT until the batch's events are ready; ``thread``: a batch the worker thread wrote
  (handed over), start to written;
- ``publish``: the batch's events to Redis (one pipeline);
- ``deliver``: from the publish to the receiver's socket (Redis, the server's subscriber,
  the receiver's frame, the client).

``python bench/latency_breakdown.py DUMP.json PROBE_PREFIX`` prints it for one phase;
``bench/messaging.py --latency-probe`` does it for every phase it runs.
"""

from __future__ import annotations

import glob
import json
import statistics
import sys
from pathlib import Path
from typing import Any

PARTS = ("to_server", "queued", "rt1", "limit", "commit", "after", "thread", "publish", "deliver")


def load_probe(prefix: str) -> dict[str, Any]:
    """Every server process's probe file (``prefix.<pid>``), merged."""
    merged: dict[str, Any] = {"gc": [], "lag": [], "batches": [], "gc_threshold": None, "gc_frozen": None}
    for path in sorted(glob.glob(f"{prefix}.*")):
        data = json.loads(Path(path).read_text())
        merged["gc"] += data["gc"]
        merged["lag"] += data["lag"]
        merged["batches"] += data["batches"]
        merged["gc_threshold"] = data["gc_threshold"]
        merged["gc_frozen"] = data["gc_frozen"]
    return merged


def parts_of(send: float, recv: float, submitted: float, marks: dict[str, float]) -> dict[str, float]:
    """One message's parts in ms (see the module)."""
    start = marks["start"]
    written = marks.get("written", start)
    published = marks.get("published", written)
    out = dict.fromkeys(PARTS, 0.0)
    out["to_server"] = submitted - send
    out["queued"] = start - submitted
    if "thread" in marks:
        out["thread"] = written - start
    else:
        rt1 = marks.get("rt1", written)
        limit = marks.get("limit", rt1)
        commit = marks.get("commit", limit)
        out["rt1"], out["limit"] = rt1 - start, limit - rt1
        out["commit"], out["after"] = commit - limit, written - commit
    out["publish"] = published - written
    out["deliver"] = recv - published
    return {k: round(v * 1000, 3) for k, v in out.items()}


def overlap(spans: list[tuple[float, float]], begin: float, end: float) -> float:
    """ms of ``spans`` (start, duration) inside [begin, end]."""
    total = 0.0
    for start, duration in spans:
        total += max(0.0, min(end, start + duration) - max(begin, start))
    return total * 1000


def breakdown(dump_path: Path, probe_prefix: str) -> dict[str, Any]:
    dump = json.loads(Path(dump_path).read_text())
    probe = load_probe(probe_prefix)
    by_id: dict[str, tuple[float, dict[str, float], int]] = {}
    for batch in probe["batches"]:
        size = len(batch["ids"])
        for cid, submitted in zip(batch["ids"], batch["submitted"], strict=True):
            by_id[cid] = (submitted, batch["t"], size)
    rows = []
    for cid, send, _ack, recv in dump.get("times", []):
        if recv is None or cid not in by_id:
            continue
        submitted, marks, size = by_id[cid]
        if not submitted:
            continue
        rows.append((recv - send, send, recv, size, parts_of(send, recv, submitted, marks)))
    if not rows:
        return {"matched": 0}
    rows.sort(key=lambda r: r[0])
    begin, end = min(r[1] for r in rows), max(r[2] for r in rows)
    gc_spans = [(s, d) for s, d, _g, _c in probe["gc"] if begin <= s <= end]
    lag_spans = [(due, late) for due, late in probe["lag"] if begin <= due <= end]

    def group(selected: list[Any]) -> dict[str, Any]:
        n = len(selected)
        return {
            "messages": n,
            "latency_ms": round(statistics.fmean(r[0] for r in selected) * 1000, 3),
            **{part: round(statistics.fmean(r[4][part] for r in selected), 3) for part in PARTS},
            "batch_size": round(statistics.fmean(r[3] for r in selected), 2),
            "thread_share": round(sum(1 for r in selected if r[4]["thread"] > 0) / n, 3),
            "with_gc_pass": round(sum(1 for r in selected if overlap(gc_spans, r[1], r[2]) > 0) / n, 3),
            "gc_ms_inside": round(statistics.fmean(overlap(gc_spans, r[1], r[2]) for r in selected), 3),
            "with_loop_stall": round(sum(1 for r in selected if overlap(lag_spans, r[1], r[2]) > 0) / n, 3),
        }

    n = len(rows)
    p99 = rows[min(n - 1, int(0.99 * n))][0]
    gens: dict[int, list[float]] = {}
    for s, d, g, _c in probe["gc"]:
        if begin <= s <= end:
            gens.setdefault(g, []).append(d * 1000)
    seconds = max(1e-9, end - begin)
    return {
        "matched": n,
        "p50_ms": round(rows[n // 2][0] * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "median_band": group(rows[int(0.45 * n) : int(0.55 * n) + 1]),
        "p99_and_above": group([r for r in rows if r[0] >= p99]),
        "p99_of_each_part": {
            part: round(sorted(r[4][part] for r in rows)[min(n - 1, int(0.99 * n))], 3) for part in PARTS
        },
        "gc": {
            str(g): {
                "passes_per_s": round(len(ds) / seconds, 2),
                "max_ms": round(max(ds), 2),
                "mean_ms": round(statistics.fmean(ds), 3),
            }
            for g, ds in sorted(gens.items())
        },
        "gc_threshold": probe["gc_threshold"],
        "gc_frozen": probe["gc_frozen"],
        "loop_stalls_over_1_5ms_per_s": round(len(lag_spans) / seconds, 2),
        "loop_stall_max_ms": round(max((late for _d, late in lag_spans), default=0.0) * 1000, 2),
        "slow_in_clusters": clusters([r[1] for r in rows if r[0] >= p99]),
        **first_second(rows, p99, float(dump.get("t_start", begin))),
    }


def first_second(rows: list[Any], p99: float, start: float) -> dict[str, Any]:
    """The phase's first second (the machine waking from the idle pause before it): the share
    of the p99 messages sent in it, and the p99 of the rest."""
    later = sorted(r[0] for r in rows if r[1] >= start + 1.0)
    slow = [r for r in rows if r[0] >= p99]
    return {
        "p99_share_in_first_second": round(sum(1 for r in slow if r[1] < start + 1.0) / max(1, len(slow)), 3),
        "p99_after_first_second_ms": round(later[min(len(later) - 1, int(0.99 * len(later)))] * 1000, 3)
        if later
        else None,
    }


def clusters(sends: list[float], gap: float = 0.05) -> dict[str, Any]:
    """How the p99 messages sit in time: runs of sends less than ``gap`` s apart."""
    sends = sorted(sends)
    runs: list[int] = []
    for i, t in enumerate(sends):
        if i and t - sends[i - 1] < gap:
            runs[-1] += 1
        else:
            runs.append(1)
    return {"runs": len(runs), "largest": max(runs, default=0), "alone": sum(1 for r in runs if r == 1)}


def print_breakdown(label: str, result: dict[str, Any]) -> None:
    if not result.get("matched"):
        print(f"{label}: no message matched the probe")
        return
    print(
        f"{label}: {result['matched']} messages, p50 {result['p50_ms']} / p99 {result['p99_ms']} ms; "
        f"GC {result['gc']} (threshold {result['gc_threshold']}, frozen {result['gc_frozen']}); "
        f"loop stalls >1.5 ms {result['loop_stalls_over_1_5ms_per_s']}/s (max {result['loop_stall_max_ms']} ms); "
        f"p99 messages in time: {result['slow_in_clusters']}, {result['p99_share_in_first_second']:.0%} in the "
        f"first second (p99 after it {result['p99_after_first_second_ms']} ms)"
    )
    head = f"{'ms (mean)':<16}" + "".join(f"{p:>10}" for p in ("latency", *PARTS))
    print(head)
    for name in ("median_band", "p99_and_above"):
        g = result[name]
        print(f"{name:<16}" + "".join(f"{g[p]:>10.3f}" for p in ("latency_ms", *PARTS)))
    each = result["p99_of_each_part"]
    print(f"{'p99 of the part':<16}{'':>10}" + "".join(f"{each[p]:>10.3f}" for p in PARTS))
    for name in ("median_band", "p99_and_above"):
        g = result[name]
        print(
            f"  {name}: batch size {g['batch_size']}, thread {g['thread_share']:.1%}, with a GC pass "
            f"{g['with_gc_pass']:.1%} ({g['gc_ms_inside']} ms), with a loop stall {g['with_loop_stall']:.1%}"
        )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    found = breakdown(Path(sys.argv[1]), sys.argv[2])
    print_breakdown(sys.argv[1], found)
    print(json.dumps(found, indent=2))
