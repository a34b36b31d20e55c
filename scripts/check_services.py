"""Stop at once, with instructions, when PostgreSQL, Redis or RabbitMQ is not reachable for the
tests (RabbitMQ: tests/test_rabbitmq_broker_live.py runs Celery on it)."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/healthchat"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"

HOW = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    "   (or: docker compose up -d postgres; or set DATABASE_URL)",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
    "   (or: docker compose up -d redis; or set REDIS_URL)",
    "RabbitMQ": "rabbitmq-server -detached   (apt-get install rabbitmq-server; or set HC_TEST_AMQP_URL)",
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
    amqp_url = os.environ.get("HC_TEST_AMQP_URL") or DEFAULT_AMQP
    failed = False
    for name, url, port in (
        ("PostgreSQL", db, 5432),
        ("Redis", redis_url, 6379),
        ("RabbitMQ", amqp_url, 5672),
    ):
        if not reachable(url, port):
            failed = True
            print(f"ERROR: {name} is not reachable at {url}.\n  Start it: {HOW[name]}", file=sys.stderr)
    if failed:
        print(
            "The test suite talks to real PostgreSQL, Redis and RabbitMQ; start them and run `make test` again.",
            file=sys.stderr,
        )
        return 2
    print(f"services: PostgreSQL at {db}, Redis at {redis_url}, RabbitMQ at {amqp_url.split('@')[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
