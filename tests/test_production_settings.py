"""Production settings refuse to start without required values, or with unsafe ones."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GOOD = {
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "api.example.org",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/healthchat",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "FIREBASE_PROJECT_ID": "healthchat-prod",
    "STRIPE_SECRET_KEY": "sk_live_test",
    "STRIPE_WEBHOOK_SECRET": "whsec_test",
}


def run_check(env_overrides: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FIREBASE", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"))
    }
    env["DJANGO_SETTINGS_MODULE"] = "healthchat.settings.production"
    for key, value in {**GOOD, **env_overrides}.items():
        if value is not None:
            env[key] = value
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_good_production_settings_start():
    result = run_check({})
    assert result.returncode == 0, result.stderr


def test_each_missing_variable_is_named():
    for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "FIREBASE_PROJECT_ID"):
        result = run_check({name: None})
        assert result.returncode != 0
        assert name in result.stderr
        assert "refuse to start" in result.stderr
        assert "Traceback" not in result.stderr


def test_unsafe_values_are_refused():
    cases = {
        "DEBUG": "true",
        "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099",
        "FIREBASE_DEV_TOKENS": "true",
        "DATABASE_URL": "sqlite:///db.sqlite3",
    }
    for name, value in cases.items():
        result = run_check({name: value})
        assert result.returncode != 0, name
        assert name in result.stderr, (name, result.stderr)


def test_documents_point_their_qr_codes_at_the_first_allowed_host_unless_told():
    shown = "from django.conf import settings; print(settings.HEALTHCHAT_PUBLIC_URL)"

    def public_url(overrides: dict[str, str | None]) -> str:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("FIREBASE", "ALLOWED_HOSTS", "DEBUG"))
        }
        env.update({k: v for k, v in {**GOOD, **overrides}.items() if v is not None})
        if overrides.get("HEALTHCHAT_PUBLIC_URL") is None:
            env.pop("HEALTHCHAT_PUBLIC_URL", None)
        env["DJANGO_SETTINGS_MODULE"] = "healthchat.settings.production"
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", shown],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    assert public_url({"ALLOWED_HOSTS": ".example.org,api.example.org"}) == "https://api.example.org"
    assert public_url({"HEALTHCHAT_PUBLIC_URL": "https://care.example.org/"}) == "https://care.example.org"
