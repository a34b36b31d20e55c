"""``bench/metrics_cost.py`` runs against the project's code (issue 21): a short run makes every
hook call of a message with the hooks on and as no-ops, and reports both, per batch size, and
the bytes the publication stamp adds to an event on the wire (the channel layer's serializer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgpack

ROOT = Path(__file__).resolve().parent.parent


def test_the_metrics_cost_bench_measures_every_hook_of_a_message_on_and_off(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "metrics_cost.py"),
            "--messages",
            "300",
            "--rounds",
            "2",
            "--batch-sizes",
            "1",
            "8",
            "--flush-every",
            "100",
            "--server-cpu-ms",
            "0.2",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["messages"] == 300
    assert set(result["batches"]) == {"1", "8"}
    for figures in result["batches"].values():
        assert figures["on"] > 0
        assert figures["off"] > 0
        assert figures["cost"] == figures["on"] - figures["off"]
    # "published_at" (a msgpack str of 12 bytes: 13) and a float64 (9).
    assert result["stamp_bytes"] == len(msgpack.packb({"published_at": 1.5})) - len(msgpack.packb({}))
    assert "| 8 |" in run.stdout
    assert "% of server CPU/msg" in run.stdout
