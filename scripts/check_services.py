"""Stop at once, with instructions, when PostgreSQL or Redis is not reachable for the tests."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/healthchat"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

HOW = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    "   (or: docker compose up -d postgres; or set DATABASE_URL)",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
    "   (or: docker compose up -d redis; or set REDIS_URL)",
}


def reachable(url: str, port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or port), timeout=2):
            return True
    except OSError:
        return False


def main() -> int:
    db = os.environ.get("DATABASE_URL", DEFAULT_DB)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS)
    failed = False
    for name, url, port in (("PostgreSQL", db, 5432), ("Redis", redis_url, 6379)):
        if not reachable(url, port):
            failed = True
            print(f"ERROR: {name} is not reachable at {url}.\n  Start it: {HOW[name]}", file=sys.stderr)
    if failed:
        print(
            "The test suite talks to real PostgreSQL and Redis; start them and run `make test` again.",
            file=sys.stderr,
        )
        return 2
    print(f"services: PostgreSQL at {db}, Redis at {redis_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
