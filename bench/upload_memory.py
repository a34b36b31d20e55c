"""Memory of the server while it receives a 100 MB upload (issue: files).

Starts the real server (uvicorn, embedded defaults in a scratch directory), uploads a 100 MB
video through `POST /api/v1/attachments` from a separate process (requests, streamed from a
file on disk), samples the server's RSS every 20 ms and prints before / peak / after and the
peak growth as a fraction of the upload size. Traffic stays on 127.0.0.1; it ends by itself.

    python bench/upload_memory.py [--megabytes 100]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    size = args.megabytes * 1024 * 1024
    tmp = Path(tempfile.mkdtemp(prefix="hc-upload-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="healthchat.settings.local",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        MEDIA_ROOT=str(tmp / "media"),
        DEV_TOKEN_KEY_PATH=str(tmp / "key.pem"),
        FIREBASE_DEV_TOKENS="true",
        ATTACHMENT_MAX_VIDEO_BYTES=str(size * 2),
        ATTACHMENT_DAILY_QUOTA_BYTES=str(size * 4),
        LOG_LEVEL="WARNING",
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    token = subprocess.run(
        [sys.executable, "manage.py", "dev_token", "+14155550177"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "healthchat.asgi:application",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}"}
        requests.post(
            f"{base}/api/v1/auth/register",
            json={"role": "patient", "display_name": "Bench"},
            headers=headers,
            timeout=10,
        )
        # Warm up (imports, first request) before measuring.
        requests.post(
            f"{base}/api/v1/attachments", files={"file": ("w.txt", b"warm up")}, headers=headers, timeout=10
        )
        body_path = tmp / "body.bin"
        boundary = "hcbenchboundary"
        with body_path.open("wb") as fh:
            fh.write(
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.mp4"\r\n'
                "Content-Type: video/mp4\r\n\r\n".encode()
            )
            fh.write(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")
            chunk = os.urandom(1 << 20)
            written = 24
            while written < size:
                piece = chunk[: min(len(chunk), size - written)]
                fh.write(piece)
                written += len(piece)
            fh.write(f"\r\n--{boundary}--\r\n".encode())
        before = rss_kib(server.pid)
        peak = before
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kib(server.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with body_path.open("rb") as body:
            response = requests.post(
                f"{base}/api/v1/attachments",
                data=body,
                timeout=300,
                headers={
                    **headers,
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(body_path.stat().st_size),
                },
            )
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        stop.set()
        sampler.join()
        after = rss_kib(server.pid)
        result = {
            "upload_mb": args.megabytes,
            "status": response.status_code,
            "seconds": round(elapsed, 2),
            "rss_before_mib": round(before / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "peak_growth_mib": round((peak - before) / 1024, 1),
            "peak_growth_fraction_of_upload": round((peak - before) * 1024 / size, 3),
        }
        print(json.dumps(result, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
