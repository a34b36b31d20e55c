"""The no-services path: `make run`'s server on embedded defaults (SQLite, in-memory layer).

It grows with the features: health, docs, development sign-in, registration, ...
"""

import os
import subprocess
import sys

import pytest
import requests

from tests.live import ROOT, ServerProcess, free_port

EMBEDDED_STRIP = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "FIREBASE_AUTH_EMULATOR_HOST")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedded")
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_STRIP and not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="healthchat.settings.local",
        # Same embedded engine as the default, in a scratch file so the developer's db is untouched.
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        DEV_TOKEN_KEY_PATH=str(tmp / "dev-key.pem"),
        MEDIA_ROOT=str(tmp / "media"),
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    port = free_port()
    server = ServerProcess(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env,
        port,
        tmp / "server.log",
    )
    try:
        server.wait_ready()
        yield server, env
    finally:
        server.stop()


def dev_token(env, phone: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "dev_token", phone],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_healthz_and_docs_on_embedded_defaults(embedded):
    server, _ = embedded
    health = requests.get(f"{server.base_url}/healthz", timeout=5)
    assert health.status_code == 200
    checks = health.json()["checks"]
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "embedded"
    assert checks["broker"]["status"] == "embedded"
    assert requests.get(f"{server.base_url}/api/docs/", timeout=5).status_code == 200
    assert requests.get(f"{server.base_url}/api/schema/", timeout=5).status_code == 200


def test_dev_sign_in_register_and_me(embedded):
    server, env = embedded
    token = dev_token(env, "+14155550100")
    headers = {"Authorization": f"Bearer {token}"}
    created = requests.post(
        f"{server.base_url}/api/v1/auth/register",
        json={"role": "patient", "display_name": "Ann"},
        headers=headers,
        timeout=5,
    )
    assert created.status_code in (200, 201), created.text
    me = requests.get(f"{server.base_url}/api/v1/me", headers=headers, timeout=5)
    assert me.status_code == 200
    assert me.json()["phone_number"] == "+14155550100"
