"""Running the JavaScript SDK's Node test files (clients/js/test) from a Python live test."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SDK = Path(__file__).resolve().parent.parent / "clients" / "js"


def node() -> str:
    path = shutil.which("node")
    assert path, "Node 20+ is needed for the SDK tests (make test installs clients/js)"
    return path


def run_node_suite(
    files: Sequence[str], env: Mapping[str, str], server: Any, *, timeout: float, passes: int | None = None
) -> str:
    """``node --test`` on ``files`` (relative to clients/js) with ``env``; asserts the run passed
    (exactly ``passes`` tests when given, at least one otherwise) and returns its output. On a
    failure the message carries Node's output and ``server``'s log."""
    result = subprocess.run(
        [node(), "--test", "--test-reporter=spec", *files],
        cwd=SDK,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"node --test failed:\n{output[-8000:]}\nserver log:\n{server.log()}"
    assert re.search(r"\bfail 0\b", output), output[-3000:]
    expected = rf"\bpass {passes}\b" if passes is not None else r"\bpass [1-9]"
    assert re.search(expected, output), output[-3000:]
    return output
