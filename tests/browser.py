"""Helpers for tests in a real browser: Debian's Chromium driven by Playwright (never
``playwright install``: nothing is downloaded), and a static file server on 127.0.0.1 for test
pages and the SDK's ES modules."""

from __future__ import annotations

import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str:
    """The system Chromium (apt-get install chromium; make test installs it)."""
    path = shutil.which("chromium") or CHROMIUM
    if not Path(path).exists():
        raise RuntimeError("Chromium is missing: apt-get install chromium chromium-driver (make test does)")
    return path


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
    }

    # Cacheable, so a page can be opened again while the browser is offline (from its HTTP cache).
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "max-age=3600")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class StaticSite:
    """Serve ``root`` on 127.0.0.1 (a secure context for the browser) from a thread."""

    def __init__(self, root: Path) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
