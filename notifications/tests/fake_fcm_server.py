"""A small FCM HTTP v1 stand-in on 127.0.0.1 for tests that run real worker processes.

It records every ``messages:send`` request and answers like FCM (``{"name": ...}``), so the
test process can count what a worker in another process really sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeFcmServer:
    def __init__(self, hold_first: int = 0, hold_seconds: float = 30.0) -> None:
        """``hold_first``: the first N requests are recorded at once but answered only after
        ``release()`` (or ``hold_seconds``): a sender killed meanwhile never learns the outcome."""
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.hold_first = hold_first
        self.hold_seconds = hold_seconds
        self.released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body})
                    n = len(fake.requests)
                if n <= fake.hold_first:
                    fake.released.wait(fake.hold_seconds)
                project = self.path.split("/")[3] if self.path.count("/") >= 4 else "unknown"
                payload = json.dumps({"name": f"projects/{project}/messages/fake-{n}"}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the sender is gone (a killed worker)
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> FakeFcmServer:
        self.thread.start()
        return self

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"]["message"] for r in self.requests]
