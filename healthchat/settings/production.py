"""Production settings: refuse to start when a required value is missing or unsafe."""

import os
import sys

from .base import *  # noqa: F403
from .base import env


def _refusals() -> list[str]:
    problems: list[str] = []
    if not os.environ.get("SECRET_KEY"):
        problems.append("SECRET_KEY is not set (a long random string)")
    if not os.environ.get("ALLOWED_HOSTS"):
        problems.append("ALLOWED_HOSTS is not set (comma-separated host names)")
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        problems.append("DATABASE_URL is not set (postgres://user:password@host:5432/name)")
    elif database_url.startswith("sqlite"):
        problems.append("DATABASE_URL points at SQLite; production needs PostgreSQL")
    if not (os.environ.get("REDIS_URL") or os.environ.get("REDIS_SENTINELS")):
        problems.append("REDIS_URL is not set (redis://host:6379/0; or REDIS_SENTINELS with Sentinel)")
    if env.bool("DEBUG", default=False):
        problems.append("DEBUG is on; production runs with DEBUG=false")
    if os.environ.get("FIREBASE_AUTH_EMULATOR_HOST"):
        problems.append(
            "FIREBASE_AUTH_EMULATOR_HOST is set: firebase-admin skips signature and expiry "
            "checks in emulator mode"
        )
    if env.bool("FIREBASE_DEV_TOKENS", default=False):
        problems.append("FIREBASE_DEV_TOKENS is on: development tokens are not allowed")
    if not os.environ.get("FIREBASE_PROJECT_ID"):
        problems.append("FIREBASE_PROJECT_ID is not set (your Firebase project id)")
    # Payments: real Stripe only (no development provider, no fake API base).
    if not os.environ.get("STRIPE_SECRET_KEY"):
        problems.append("STRIPE_SECRET_KEY is not set (sk_live_... or a restricted key)")
    if not os.environ.get("STRIPE_WEBHOOK_SECRET"):
        problems.append("STRIPE_WEBHOOK_SECRET is not set (the endpoint's whsec_... signing secret)")
    if env.str("PAYMENTS_PROVIDER", default="stripe") != "stripe":
        problems.append("PAYMENTS_PROVIDER is not 'stripe': the development payment provider is refused")
    if env.str("STRIPE_API_BASE", default="") not in ("", "https://api.stripe.com"):
        problems.append("STRIPE_API_BASE points away from https://api.stripe.com (a fake or mock)")
    # Calls: a TURN server configured without its shared secret would hand out useless credentials.
    if env.list("TURN_URLS", default=[]) and not os.environ.get("TURN_SECRET"):
        problems.append("TURN_URLS is set but TURN_SECRET is not (the TURN server's static-auth-secret)")
    return problems


_problems = _refusals()
if _problems:
    sys.exit("healthchat: production settings refuse to start:\n" + "\n".join(f"  - {p}" for p in _problems))

DEBUG = False
FIREBASE_DEV_TOKENS = False
PAYMENTS_PROVIDER = "stripe"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^livez$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
# Documents' QR codes point at this server's public origin; unset, the first allowed host over
# HTTPS (the worker that renders them has no request to ask).
if not os.environ.get("HEALTHCHAT_PUBLIC_URL"):
    _hosts = [
        host
        for host in env.list("ALLOWED_HOSTS", default=[])
        if host not in ("*",) and not host.startswith(".")
    ]
    HEALTHCHAT_PUBLIC_URL = f"https://{_hosts[0]}" if _hosts else ""
