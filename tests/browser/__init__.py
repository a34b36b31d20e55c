"""Browser tests: the web console (/console/) in Debian's Chromium, driven by Playwright for
Python with the system browser (never a downloaded one). Helpers shared by the modules; the
fixtures are in this package's conftest.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = Path(os.environ.get("HC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "docs" / "screenshots"
# Generous: the machine is shared by several test runs.
TIMEOUT_MS = 20_000


def sign_in_with_token(page: Any, base_url: str, token: str) -> None:
    """Open the console and sign in with a pasted ID token; wait until the socket is ready."""
    page.goto(f"{base_url}/console/")
    page.wait_for_selector("body[data-loaded='true']", timeout=TIMEOUT_MS)
    page.fill("#token", token)
    page.click("#token-form button[type=submit]")
    try:
        page.wait_for_selector("body[data-ready='true']", timeout=TIMEOUT_MS)
    except Exception as exc:
        error = page.inner_text("#signin-error")
        raise AssertionError(f"sign-in failed: {error!r}; console: {getattr(page, 'log', [])}") from exc


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol rather than page.add_script_tag: the console's
        # CSP (rightly) refuses an injected inline script, and the test must not weaken it.
        page.evaluate(AXE.read_text())
    result = page.evaluate("async () => JSON.stringify(await axe.run(document))")
    violations = json.loads(result)["violations"]
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def assert_accessible(page: Any, screen: str) -> None:
    found = axe_violations(page)
    assert not found, f"axe: serious/critical violations on the {screen} screen: {found}"


def screenshot(page: Any, name: str) -> Path:
    """Write docs/screenshots/<name>.png (the README links them; every run rewrites them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


class Timings:
    """Wall-clock phases of a browser test, printed at the end (pytest -s, or the report)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = self.start
        self.phases: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self.last))
        self.last = now

    def report(self) -> str:
        parts = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.phases)
        return f"total {time.monotonic() - self.start:.2f}s: {parts}"
