"""Every figure of docs/performance.md and docs/benchmarks.md names a revision that exists in git
(issue 26: reproducible figures), and ``bench/report.py`` renders the results table of
docs/performance.md from a ``bench/messaging.py --json`` run and rewrites only its block."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import report

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "docs" / "performance.md", ROOT / "docs" / "benchmarks.md"]
# a short or full commit hash standing alone (not part of a word, a path or a longer number)
REVISION = re.compile(r"(?<![0-9A-Za-z_/.#-])[0-9a-f]{7,40}(?![0-9A-Za-z_])")


def in_git(rev: str) -> bool:
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, check=False
    )
    return found.returncode == 0


def test_every_revision_quoted_in_the_benchmark_docs_exists_in_git() -> None:
    quoted = {(doc.name, rev) for doc in DOCS for rev in REVISION.findall(doc.read_text())}
    assert len(quoted) > 20  # the pattern finds what the documents quote
    missing = sorted((name, rev) for name, rev in quoted if not in_git(rev))
    assert missing == [], f"revisions quoted but not in git (measure again, or mark historical): {missing}"


def test_the_results_table_names_a_revision_in_git() -> None:
    text = (ROOT / "docs" / "performance.md").read_text()
    block = text.split(report.START, 1)[1].split(report.END, 1)[0]
    named = re.search(r"Revision \*\*([0-9a-f]{7,40})\*\*", block)
    assert named is not None, block[:300]
    assert in_git(named.group(1))
    for target in ("healthchat", "bare relay (Python)", "socket.io", "socket.io + Redis"):
        assert target in block


def phase(msgs_per_s: float, p99: float) -> dict[str, Any]:
    return {
        "msgs_per_s": msgs_per_s,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "lost": 0,
        "duplicated": 0,
        "unacked": 0,
        "seq_gaps": 0,
        "seq_out_of_order": 0,
        "resources": {
            "server_cpu_s_per_1k": 0.2,
            "pg_redis_cpu_s_per_1k": 0.1,
            "server_cores": 0.9,
            "other_cores": 0.05,
        },
    }


def target(saturation: float, offered_p99: float) -> dict[str, Any]:
    return {
        "idle": {"rss_per_socket_kib": 20.0},
        "saturation": phase(saturation, 100.0),
        "offered": phase(500.0, offered_p99),
    }


def test_report_renders_one_column_per_target_and_healthchat_s_ratio_to_each(tmp_path: Path) -> None:
    results = {
        "revision": "74d07e6",
        "sockets": 1000,
        "seconds": 20.0,
        "window": 4,
        "cores": 2,
        "loadgen": "node",
        "pinned": {"servers": "0", "loadgen": "1"},
        "busy_cores_at_start": 0.05,
        "targets": ["healthchat", "relay", "socketio", "socketio-redis"],
        "healthchat": {
            **target(3000.0, 5.0),
            "sequences": {"conversations_with_gaps": 0, "messages": 70000, "event_mismatch": 0},
        },
        "relay": target(12000.0, 1.0),
        "socketio": target(20000.0, 2.0),
        "socketio-redis": target(6000.0, 4.0),
    }
    block = report.render(results, "python bench/messaging.py --rev 74d07e6", "2026-12-07 09:00 UTC")
    assert "Revision **74d07e6**" in block
    header = next(line for line in block.splitlines() if line.startswith("| figure"))
    assert header.count("|") == 1 + 1 + 4 + 3  # figure, 4 targets, 3 ratios
    row = next(line for line in block.splitlines() if line.startswith("| saturation msgs/s"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["3,000.0", "12,000.0", "20,000.0", "6,000.0"]
    assert cells[5:] == ["0.250", "0.150", "0.500"]
    assert "70,000 messages, 0 conversations with a `seq` gap" in block

    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{report.START}\nold table\n{report.END}\nafter\n")
    report.rewrite(doc, block)
    text = doc.read_text()
    assert text.startswith("before\n")
    assert text.endswith("\nafter\n")
    assert "old table" not in text
    assert block in text


def test_report_refuses_a_document_without_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="markers"):
        report.rewrite(doc, "table")
