"""A local HTTP endpoint standing in for Sentry's ingest (the envelope endpoint), and the
canary strings the operations tests look for in logs and error reports."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

CANARY_TEXT = "canary-zebra-quartz-7731"
CANARY_PHONE = "+15550107731"
CANARY_FILE = "canary-lungscan-7731.jpg"
CANARY_TOKEN = "eyJjYW5hcnkiOjc3MzF9.eyJzdWIiOiJjYW5hcnk3NzMxIn0.c2lnbmF0dXJlLWNhbmFyeS03NzMx"
CANARY_SECRET = "tok_canarysecret7731"
CANARY_CIPHERTEXT = "Q2FuYXJ5Q2lwaGVydGV4dDc3MzFDYW5hcnlDaXBoZXJ0ZXh0NzczMQ"
CANARIES = (
    CANARY_TEXT,
    CANARY_PHONE,
    "15550107731",
    CANARY_FILE,
    "lungscan-7731",
    CANARY_TOKEN,
    CANARY_TOKEN.rsplit(".", 1)[-1],
    CANARY_SECRET,
    CANARY_CIPHERTEXT,
)


class Ingest:
    """``with Ingest() as ingest:`` a server on a free loopback port recording every POST body
    (gzip or brotli decoded, as the SDK sends them)."""

    def __init__(self) -> None:
        self._bodies: list[str] = []
        self._lock = threading.Lock()
        bodies, lock = self._bodies, self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "br":
                    import brotli

                    raw = brotli.decompress(raw)
                with lock:
                    bodies.append(raw.decode("utf-8", errors="replace"))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Ingest:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def bodies(self) -> list[str]:
        with self._lock:
            return list(self._bodies)

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.bodies()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.bodies())} of {count} envelopes arrived")
            time.sleep(0.1)

    @staticmethod
    def items(body: str) -> list[dict[str, Any]]:
        """The JSON items of an envelope (header line, then item header / payload pairs)."""
        found = []
        for line in body.splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
        return found
