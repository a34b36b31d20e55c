"""PostgreSQL connections under ordinary REST load (trust round 2, finding 2).

Under ASGI every request's sync code runs in a thread of its own; with persistent connections
(the old ``DATABASE_CONN_MAX_AGE=60``) each such thread kept a connection after its request, and
120 ``GET /api/v1/me``, 8 at a time, against two server processes answered 68 times 500 "sorry,
too many clients already". Connections now come from a pool per process
(``core/database.py``, ``DATABASE_POOL_*``).

The servers run against a private PostgreSQL (``tests/pgcluster.py``) whose ``max_connections``
is only a little above the pools' total, so running out is a real possible failure here and
never one of the shared server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from conftest import PROJECT_ID, TokenMinter, unique_phone
from tests.live import ROOT, ServerProcess, free_port, uvicorn_args
from tests.pgcluster import BackendSampler, PrivatePostgres, private_postgres
from tests.restload import Request, Result, run

pytestmark = [pytest.mark.live]

PROCESSES = 2
POOL_MAX = 6
REQUESTS = 500
USERS = 8
APP = "hc-pool-test"
# The pools' total, the sampler and a little headroom: a connection per request runs out at once.
MAX_CONNECTIONS = PROCESSES * POOL_MAX + 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    with private_postgres(MAX_CONNECTIONS) as pg:
        pg.create_database("hc_pool")
        yield pg


def start_servers(
    cluster: PrivatePostgres, token_minter: TokenMinter, tmp: Any, count: int, extra: dict[str, str]
) -> list[ServerProcess]:
    from django.conf import settings as dj_settings

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="healthchat.settings.test",
        DATABASE_URL=cluster.url("hc_pool", APP),
        REDIS_URL=dj_settings.REDIS_URL or "redis://127.0.0.1:6379/0",
        CHANNEL_LAYER_PREFIX=dj_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        CACHE_KEY_PREFIX=dj_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        HC_TEST_FIREBASE_CERTS=token_minter.certs_json(),
        FIREBASE_PROJECT_ID=PROJECT_ID,
        **extra,
    )
    servers = []
    try:
        for index in range(count):
            port = free_port()
            servers.append(
                ServerProcess(uvicorn_args(port, boot=True), env, port, tmp / f"server-{index}.log")
            )
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


@pytest.fixture(scope="module")
def users(
    cluster: PrivatePostgres, token_minter: TokenMinter, tmp_path_factory: Any
) -> list[tuple[int, str]]:
    """Registered patients (id, token), over the API of a server on the private database."""
    (server,) = start_servers(cluster, token_minter, tmp_path_factory.mktemp("register"), 1, {})
    try:
        out = []
        for index in range(USERS):
            token = token_minter.mint(phone_number=unique_phone())
            response = requests.post(
                f"{server.base_url}/api/v1/auth/register",
                json={"role": "patient", "display_name": f"Pool Patient {index}"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            out.append((int(response.json()["id"]), token))
        return out
    finally:
        server.stop()


def me_requests(servers: list[ServerProcess], users: list[tuple[int, str]], count: int) -> list[Request]:
    """``GET /api/v1/me`` spread evenly over the servers and the users."""
    return [
        Request(
            f"{servers[i % len(servers)].base_url}/api/v1/me",
            (("Authorization", f"Bearer {users[i % len(users)][1]}"),),
        )
        for i in range(count)
    ]


def tally(results: list[Result]) -> Counter[str]:
    return Counter(str(r.status) if r.status else r.error.split(":")[0] for r in results)


def test_500_concurrent_requests_on_two_processes_stay_within_the_pools(
    cluster: PrivatePostgres, users: list[tuple[int, str]], token_minter: TokenMinter, tmp_path_factory: Any
) -> None:
    servers = start_servers(
        cluster,
        token_minter,
        tmp_path_factory.mktemp("pool"),
        PROCESSES,
        # A generous wait for a connection: on a loaded machine the last of 250 requests per
        # process may wait longer than the default 10 s, and would be answered 503 (the next test).
        {
            "DATABASE_POOL_MAX_SIZE": str(POOL_MAX),
            "DATABASE_POOL_MIN_SIZE": "2",
            "DATABASE_POOL_TIMEOUT": "60",
        },
    )
    try:
        batch = me_requests(servers, users, REQUESTS)
        with BackendSampler(cluster, APP) as sampler:
            results = asyncio.run(run(batch, concurrency=REQUESTS))  # all 500 at once
        logs = "".join(server.log() for server in servers)
    finally:
        for server in servers:
            server.stop()

    assert tally(results) == {"200": REQUESTS}, (tally(results), logs[-3000:])
    for index, result in enumerate(results):  # each answer is its own caller's
        assert json.loads(result.body)["id"] == users[index % USERS][0]
    # Never more connections than the pools hold (REST sends no message: the loop writer, one
    # more per process, never connected), and the sampler did see the servers' sessions.
    assert sampler.samples > 10
    assert 1 <= sampler.peak <= PROCESSES * POOL_MAX, sampler.peak
    assert "too many clients" not in logs


def test_an_exhausted_pool_answers_503_server_busy_never_500(
    cluster: PrivatePostgres, users: list[tuple[int, str]], token_minter: TokenMinter, tmp_path_factory: Any
) -> None:
    """One connection per process and a 50 ms wait: most of 300 concurrent requests cannot get
    it in time; they are answered 503 ``server_busy`` with ``Retry-After`` (nothing of them was
    done: repeat them), the others 200."""
    (server,) = start_servers(
        cluster,
        token_minter,
        tmp_path_factory.mktemp("busy"),
        1,
        {"DATABASE_POOL_MAX_SIZE": "1", "DATABASE_POOL_TIMEOUT": "0.05"},
    )
    try:
        with BackendSampler(cluster, APP) as sampler:
            results = asyncio.run(run(me_requests([server], users, 300), concurrency=300))
        logs = server.log()
    finally:
        server.stop()

    counts = tally(results)
    assert set(counts) == {"200", "503"}, (counts, logs)
    for result in results:
        if result.status == 503:
            assert json.loads(result.body) == {
                "error": {
                    "code": "server_busy",
                    "message": "The server is busy; try again after retry_after seconds.",
                    "retry_after": 1,
                }
            }
            assert result.headers["retry-after"] == "1"
    assert sampler.peak <= 1
    assert "Traceback" not in logs


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        # The old .env.example's line, with the pool on (the default): the settings refuse.
        ({"DATABASE_CONN_MAX_AGE": "60"}, "DATABASE_CONN_MAX_AGE must be 0"),
        # Pool off (PgBouncer) but persistent connections: the ASGI application refuses.
        ({"DATABASE_CONN_MAX_AGE": "60", "DATABASE_POOL_MAX_SIZE": "0"}, "'CONN_MAX_AGE'] is 60"),
    ],
)
def test_the_server_refuses_persistent_connections(env: dict[str, str], refusal: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import healthchat.asgi"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "healthchat.settings.test", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr, done.stderr[-2000:]
    assert refusal in done.stderr, done.stderr[-2000:]


def test_the_settings_pool_per_process() -> None:
    """What the environment asks, as Django's pool options; SQLite has none."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from django.conf import settings as s; d = s.DATABASES['default'];"
            " print(json.dumps([d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'], d['OPTIONS'].get('pool')]))",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "healthchat.settings.base",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/hc_settings",
            "DATABASE_POOL_MIN_SIZE": "3",
            "DATABASE_POOL_MAX_SIZE": "7",
            "DATABASE_POOL_TIMEOUT": "2.5",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == [0, True, {"min_size": 3, "max_size": 7, "timeout": 2.5}], done.stderr
