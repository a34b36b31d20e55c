"""Project-wide test fixtures: real PostgreSQL and Redis, real RS256 Firebase tokens."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import jwt
import pytest
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

FIREBASE_CERT_URL = "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
PROJECT_ID = "demo-healthchat"
TEST_KID = "healthchat-test-key"


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=2
        ):
            return True
    except OSError:
        return False


def _isolate_worker_keys(config: pytest.Config) -> None:
    """Give each pytest-xdist worker its own Redis key space (cache, presence, channel layer,
    Celery queue).

    pytest-django imports the settings before xdist names the worker, so the test settings
    cannot see the worker id: set the prefixes here, before anything has used them. Without
    this, two workers' users with the same id would share ``user.<id>`` groups and counters.
    """
    from django.conf import settings as dj_settings

    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    # Redis pub/sub channels ignore the database number: test runs on other Redis databases of
    # the same server (parallel checkouts, CI jobs) would hear each other's ``user.<id>`` events
    # with a shared prefix. The process id keeps each run's key space its own.
    prefix = f"hctest-{worker}-{os.getpid()}"
    os.environ["CHANNEL_LAYER_PREFIX"] = prefix
    os.environ["CACHE_KEY_PREFIX"] = prefix
    # Celery workers started by live tests take their queue from the environment, the test
    # process from its settings: one queue per test worker, so no worker eats another's tasks.
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = prefix
    dj_settings.CELERY_TASK_DEFAULT_QUEUE = prefix
    from healthchat.celery import app as celery_app

    celery_app.conf.task_default_queue = prefix
    layer_config = dj_settings.CHANNEL_LAYERS["default"].setdefault("CONFIG", {})
    if "prefix" in layer_config or "hosts" in layer_config:
        layer_config["prefix"] = prefix
    dj_settings.CACHES["default"]["KEY_PREFIX"] = prefix


def _flush_retries_deadlocks() -> None:
    """pytest-django empties the tables after a transactional test with one TRUNCATE of every
    table. A live server process still finishing what the test's closed sockets left it (a
    disconnect hook, an audit row) can hold a lock that TRUNCATE needs while waiting for one
    TRUNCATE holds: PostgreSQL then aborts one side as a deadlock. The flush runs in one
    transaction, so it is retried (the server's side, if it was the victim, only logs)."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    handle = flush.Command.handle
    if getattr(handle, "retries_deadlocks", False):
        return

    def retrying(self: Any, *args: Any, **options: Any) -> Any:
        for attempt in range(5):
            try:
                return handle(self, *args, **options)
            except CommandError as exc:
                cause = getattr(exc.__cause__, "__cause__", None) or exc.__cause__
                if attempt == 4 or type(cause).__name__ not in {"DeadlockDetected", "LockNotAvailable"}:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    retrying.retries_deadlocks = True  # type: ignore[attr-defined]
    flush.Command.handle = retrying  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    _isolate_worker_keys(config)
    _flush_retries_deadlocks()
    db = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/healthchat")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    missing = []
    if not _reachable(db, 5432):
        missing.append(
            f"PostgreSQL is not reachable at {db}.\n  Start it: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            "  (or docker compose up -d postgres, or set DATABASE_URL)"
        )
    if not _reachable(redis_url, 6379):
        missing.append(
            f"Redis is not reachable at {redis_url}.\n  Start it: "
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no\n"
            "  (or docker compose up -d redis, or set REDIS_URL)"
        )
    if missing:
        pytest.exit("healthchat tests need real services:\n" + "\n".join(missing), returncode=3)


# --- Firebase: a throwaway RSA key whose certificate is served where firebase-admin looks ---
class TokenMinter:
    """Mints Firebase-layout ID tokens signed with a throwaway RS256 key."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.private_pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self._counter = 0

    def certs_json(self) -> str:
        return json.dumps({TEST_KID: self.cert_pem})

    def claims(
        self, uid: str, phone_number: str | None, lifetime: int = 3600, **overrides: Any
    ) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": f"https://securetoken.google.com/{PROJECT_ID}",
            "aud": PROJECT_ID,
            "auth_time": now,
            "user_id": uid,
            "sub": uid,
            "iat": now,
            "exp": now + lifetime,
            "firebase": {"identities": {"phone": [phone_number]}, "sign_in_provider": "phone"},
        }
        if phone_number:
            claims["phone_number"] = phone_number
        claims.update(overrides)
        return claims

    def mint(
        self,
        uid: str | None = None,
        phone_number: str | None = None,
        *,
        lifetime: int = 3600,
        key: Any = None,
        kid: str = TEST_KID,
        **overrides: Any,
    ) -> str:
        if uid is None:
            self._counter += 1
            uid = f"uid-{os.getpid()}-{self._counter}-{time.time_ns()}"
        return jwt.encode(
            self.claims(uid, phone_number, lifetime, **overrides),
            key or self.key,
            algorithm="RS256",
            headers={"kid": kid},
        )


@pytest.fixture(scope="session")
def token_minter() -> TokenMinter:
    return TokenMinter()


@pytest.fixture(autouse=True)
def firebase_certs(token_minter: TokenMinter) -> Iterator[responses.RequestsMock]:
    """Serve the test certificate at Google's URL; everything else passes through."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(
            responses.GET, FIREBASE_CERT_URL, body=token_minter.certs_json(), content_type="application/json"
        )
        mock.add_passthru(re.compile(r"http://(127\.0\.0\.1|localhost)(:\d+)?/.*"))
        yield mock


_phone_counter = [0]


def unique_phone() -> str:
    """A valid, unique E.164 number (US 555-01xx numbers are valid for phonenumbers)."""
    _phone_counter[0] += 1
    n = ((os.getpid() % 1000) * 1000 + _phone_counter[0]) % 1_000_000
    return f"+12022{n:06d}"


@pytest.fixture
def make_token(token_minter: TokenMinter) -> Callable[..., str]:
    return token_minter.mint


@pytest.fixture
def minted_tokens() -> list[str]:
    """The tokens ``client_for`` minted in this test, in order."""
    return []


@pytest.fixture
def client_for(make_token: Callable[..., str], minted_tokens: list[str]) -> Callable[..., Any]:
    """The one authenticated API client of the suite: a DRF test client signed in as ``user`` (a
    real RS256 token for their uid and phone number). ``token_overrides`` change the token's
    claims (``lifetime=``, ``key=``, ...); ``headers`` are sent with every request. Every token
    minted is in the ``minted_tokens`` fixture (a test that checks no token leaks reads them)."""
    from rest_framework.test import APIClient

    def build(user: Any, *, headers: dict[str, str] | None = None, **token_overrides: Any) -> APIClient:
        token = make_token(uid=user.firebase_uid, phone_number=user.phone_number, **token_overrides)
        minted_tokens.append(token)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}", **(headers or {}))
        return client

    return build


@pytest.fixture
def api(client_for: Callable[..., Any]) -> Callable[..., Any]:
    """``client_for`` under the name most suites use."""
    return client_for


# --- Live servers: real uvicorn processes on the test database and real Redis ----------------
# The live servers' PostgreSQL sessions carry this application_name.
LIVE_SERVER_APPLICATION_NAME = "hc-live-server"


@pytest.fixture(scope="module")
def live_server_factory(django_db_setup, django_db_blocker, token_minter, tmp_path_factory):
    """Start real ASGI server processes (uvicorn) sharing this worker's test database and Redis."""
    from django.conf import settings as dj_settings
    from django.db import connection

    from tests.live import ServerProcess, free_port, runserver_args, uvicorn_args

    started: list[Any] = []
    tmp = tmp_path_factory.mktemp("live")
    # HC_TEST_DATABASE_PROXY=pgbouncer: every server of the module talks to the test database
    # through one transaction-pooling PgBouncer (tests/pgbouncer.py), configured as
    # docs/scaling.md says (no pool, no prepared statements): the live suite run through it.
    bouncer = None
    if os.environ.get("HC_TEST_DATABASE_PROXY") == "pgbouncer":
        from tests.pgbouncer import PgBouncer

        bouncer = PgBouncer(int(connection.settings_dict["PORT"] or 5432))
        bouncer.start()

    def start(
        extra_env: dict[str, str] | None = None,
        *,
        port: int | None = None,
        access_log: bool = False,
        runserver: bool = False,
        workers: int = 1,
    ) -> Any:
        """A server process; ``port`` given: another process behind that port (SO_REUSEPORT);
        ``access_log``: uvicorn's access log on, everything logged at debug; ``runserver``:
        ``manage.py runserver`` instead of uvicorn; ``workers``: uvicorn ``--workers``."""
        db = connection.settings_dict
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="healthchat.settings.test",
            # Named, so a test that kills the servers' database sessions can find exactly those.
            DATABASE_URL=(
                f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
                f"?application_name={LIVE_SERVER_APPLICATION_NAME}"
            ),
            REDIS_URL=dj_settings.REDIS_URL or "redis://127.0.0.1:6379/0",
            CHANNEL_LAYER_PREFIX=dj_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
            HC_TEST_FIREBASE_CERTS=token_minter.certs_json(),
            FIREBASE_PROJECT_ID=PROJECT_ID,
        )
        if bouncer is not None:
            env.update(
                DATABASE_URL=bouncer.url(str(db["NAME"]), LIVE_SERVER_APPLICATION_NAME),
                DATABASE_POOL_MAX_SIZE="0",
                DATABASE_PREPARE_THRESHOLD="0",
            )
        env.update(extra_env or {})
        if port is not None:
            env["HC_REUSE_PORT"] = "1"
        port = port or free_port()
        log_path = tmp / f"server-{port}-{len(started)}.log"
        args = runserver_args(port) if runserver else uvicorn_args(port, boot=True, access_log=access_log)
        if workers > 1:
            args += ["--workers", str(workers)]
        server = ServerProcess(args, env, port, log_path)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()
    if bouncer is not None:
        bouncer.close()


@pytest.fixture
def queued_pushes(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The push tasks queued after message commits (their delivery ids), recorded instead of
    run eagerly (no FCM call)."""
    from notifications import services as push_services

    queued: list[list[int]] = []
    monkeypatch.setattr(push_services, "_queue", lambda ids, countdown: queued.append(list(ids)))
    return queued


@pytest.fixture
def firebase_admin_api(firebase_certs: responses.RequestsMock) -> list[tuple[str, dict[str, Any]]]:
    """Google's Identity Toolkit admin API (revoke, delete) answered at the HTTP boundary.

    Returns the list of (url, json body) calls firebase-admin made.
    """
    calls: list[tuple[str, dict[str, Any]]] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body or b"{}")
        calls.append((request.url, body))
        return 200, {}, json.dumps({"localId": body.get("localId", ""), "kind": "identitytoolkit#Response"})

    firebase_certs.add_callback(
        responses.POST, re.compile(r"https://identitytoolkit\.googleapis\.com/.*"), callback=answer
    )
    return calls


@pytest.fixture(scope="session", autouse=True)
def _end_stray_db_sessions(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """At the end, end sessions that server or worker processes left on the test database, so
    pytest-django can drop it (live servers are stopped, but PostgreSQL may lag behind)."""
    yield
    from django.db import connection

    if not str(connection.settings_dict["NAME"]).startswith("test_"):
        return  # no test of this session used the database: it was never created
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session", autouse=True)
def _forget_prekey_budgets() -> None:
    """One-time prekey budgets are Redis counters keyed by user id (accounts/prekey_budget.py),
    and every session's test database numbers users from 1 again: drop this worker's counters
    left by an earlier session, or they would count against today's users."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return
    pattern = backend.make_key("prekey_budget:*")
    client = backend._cache.get_client(pattern, write=True)
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)
