"""Re-run the standard messaging set for a revision and rewrite the results table of
docs/performance.md (between its ``bench/report.py`` markers), so every figure there names a
revision in git and can be measured again.

``python bench/report.py --rev <rev>`` (from the repository root, venv active; PostgreSQL, Redis
and ``make bench-tools`` as for ``bench/messaging.py``):

1. takes ``/tmp/hc-bench.lock`` (``flock``: two benchmarks never overlap on a shared machine);
2. runs ``bench/messaging.py --rev <rev> --target healthchat relay socketio socketio-redis
   --loadgen node`` (the standard set: ``--sockets 1000 --seconds 20``, both phases; the server is
   the commit exported with ``git archive``, the bench tools are the working tree's) with
   ``--json``;
3. renders one table — a column per target, then healthchat's ratio to each, measured in the
   same run — with the revision, the date, the command and how busy the rest of the machine was,
   and writes it between the markers (``--doc``; ``--dry-run`` prints it instead).

``--from-json FILE`` renders a run made earlier (``bench/messaging.py ... --json FILE``) without
measuring again. Extra arguments after ``--`` go to ``bench/messaging.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DOC = ROOT / "docs" / "performance.md"
LOCK = Path("/tmp/hc-bench.lock")
START = "<!-- bench/report.py: results start (generated, do not edit by hand) -->"
END = "<!-- bench/report.py: results end -->"
STANDARD = ["--sockets", "1000", "--seconds", "20"]
TARGETS = ["healthchat", "relay", "socketio", "socketio-redis"]
LABELS = {
    "healthchat": "healthchat",
    "relay": "bare relay (Python)",
    "socketio": "socket.io",
    "socketio-redis": "socket.io + Redis",
}


def load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def messaging_module() -> Any:
    """bench/messaging.py (its table's rows), loaded by path without putting bench/ on sys.path:
    there ``messaging`` would shadow the Django app of the same name."""
    for name in ("harness", "latency_breakdown"):  # bench/messaging.py imports them as top-level modules
        if name not in sys.modules:
            sys.modules[name] = load(name, BENCH / f"{name}.py")
    return load("bench_messaging", BENCH / "messaging.py")


@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    with LOCK.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def measure(rev: str, extra: list[str], json_path: Path) -> list[str]:
    command = [
        sys.executable,
        str(BENCH / "messaging.py"),
        "--rev",
        rev,
        "--target",
        *TARGETS,
        "--loadgen",
        "node",
        *STANDARD,
        *extra,
        "--json",
        str(json_path),
    ]
    with bench_lock():
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return command


def cell(value: Any, fmt: Any) -> str:
    return "-" if value is None else fmt(value)


def render(results: dict[str, Any], command: str, when: str) -> str:
    """The markdown block between the markers."""
    bench = messaging_module()
    names = [n for n in [*TARGETS, *results.get("targets", [])] if n in results]
    names = list(dict.fromkeys(names))
    columns = {n: dict(bench.figures(results[n])) for n in names}
    labels = [label for label, _ in bench.figures(results[names[0]])]
    others = [n for n in names if n != "healthchat"] if "healthchat" in names else []
    head = [
        "figure",
        *(LABELS.get(n, n) for n in names),
        *(f"healthchat / {LABELS.get(n, n)}" for n in others),
    ]
    lines = [
        f"Revision **{results['revision']}** (`git show {results['revision']}`), {when}; "
        f"{results['sockets']:,} sockets ({results['sockets'] // 2:,} pairs), {results['seconds']:g} s per phase, "
        f"window {results['window']}, {results['cores']} cores, load generator {results.get('loadgen', 'python')} "
        f"pinned to CPU {results.get('pinned', {}).get('loadgen')} and the servers to CPU "
        f"{results.get('pinned', {}).get('servers')} (`taskset`; PostgreSQL and Redis unpinned). "
        f"Busy cores before the run: {results.get('busy_cores_at_start')}. Command: `{command}`.",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |",
    ]
    for label in labels:
        values = [columns[n].get(label) for n in names]
        row = [label, *(cell(v, bench.fmt) for v in values)]
        ours = columns.get("healthchat", {}).get(label)
        for n in others:
            theirs = columns[n].get(label)
            if isinstance(ours, int | float) and isinstance(theirs, int | float) and theirs:
                row.append(f"{ours / theirs:.3f}")
            else:
                row.append("-")
        lines.append("| " + " | ".join(row) + " |")
    checks = results.get("healthchat", {}).get("sequences")
    if checks:
        lines += [
            "",
            f"Database check (healthchat): {checks['messages']:,} messages, "
            f"{checks['conversations_with_gaps']} conversations with a `seq` gap, "
            f"{checks['event_mismatch']} with events ≠ messages. Relays are unpersisted (no database check).",
        ]
    return "\n".join(lines)


def rewrite(doc: Path, block: str) -> None:
    text = doc.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{doc}: the markers are missing:\n{START}\n{END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{block}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rev", default="HEAD", help="the commit to measure (exported with git archive)")
    parser.add_argument("--from-json", help="render this earlier bench/messaging.py --json file instead")
    parser.add_argument("--doc", default=str(DOC), help="the document whose table is rewritten")
    parser.add_argument("--dry-run", action="store_true", help="print the table, do not rewrite the document")
    parser.add_argument("extra", nargs="*", help="after --: more bench/messaging.py arguments")
    args = parser.parse_args()
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        command = results.get("command") or "bench/messaging.py (see the JSON)"
        when = results.get("measured_at", "date not recorded")
    else:
        json_path = Path(tempfile.mkdtemp(prefix="hc-report-")) / "messaging.json"
        started = datetime.datetime.now(datetime.UTC)
        argv = measure(args.rev, args.extra, json_path)
        results = json.loads(json_path.read_text())
        command = "python " + " ".join(Path(a).name if a.endswith(".py") else a for a in argv[1:-2])
        command = command.replace("python messaging.py", "python bench/messaging.py")
        when = started.strftime("%Y-%m-%d %H:%M UTC")
        results["command"], results["measured_at"] = command, when
        json_path.write_text(json.dumps(results, indent=2))
        print(f"figures in {json_path}", file=sys.stderr)
    block = render(results, command, when)
    if args.dry_run:
        print(block)
    else:
        rewrite(Path(args.doc), block)
        print(f"{args.doc}: results table rewritten for revision {results['revision']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
