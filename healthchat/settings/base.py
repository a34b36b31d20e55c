"""Settings shared by every environment.

Every value comes from the environment (see ``.env.example``). The defaults run the whole
service on one machine with nothing else installed: SQLite (WAL), the in-memory channel
layer, Celery tasks run eagerly, files on local disk, push written to the log.
"""

from __future__ import annotations

import os
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from core.log_context import logging_config
from core.redis_roles import RedisTarget, targets_from_env

django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():  # pragma: no cover - developer convenience only
    environ.Env.read_env(str(BASE_DIR / ".env"))

SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-secret-key-do-not-use-in-production")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "core",
    "accounts",
    "messaging",
    "groups",
    "calls",
    "payments",
    "appointments",
    "scheduled",
    "records",
    "ratings",
    "notifications",
    "moderation",
    "audit",
    "documents",
    "console",
]

MIDDLEWARE = [
    "core.log_context.RequestLogMiddleware",
    "core.metrics.MetricsMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "core.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.error_handlers.ApiErrorMiddleware",
]

ROOT_URLCONF = "healthchat.urls"
ASGI_APPLICATION = "healthchat.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES: dict[str, dict[str, Any]] = {"default": env.db_url_config(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
else:
    # Connections come from a pool per process (Django's psycopg pool), never kept by a thread:
    # under ASGI every request's sync code runs in a thread of its own, and a persistent
    # connection (CONN_MAX_AGE > 0) stayed with that dead thread until the garbage collector
    # found it, so ordinary REST traffic ran PostgreSQL out of connections ("too many clients").
    # A request borrows a connection at its first query and returns it when it ends (a
    # WebSocket's worker-thread call likewise, per call); one that waits longer than
    # DATABASE_POOL_TIMEOUT seconds is answered 503 ``server_busy``. Per process at most
    # DATABASE_POOL_MAX_SIZE connections, plus the event loop's batch writer (one): size
    # PostgreSQL's max_connections for processes x (max size + 1) + the Celery worker's (see
    # docs/performance.md). DATABASE_POOL_MAX_SIZE=0: no pool, a connection per request or task,
    # closed at its end; only behind PgBouncer or with bounded concurrency (the Celery worker).
    options = DATABASES["default"].setdefault("OPTIONS", {})
    DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=10)
    if DATABASE_POOL_MAX_SIZE > 0:
        options["pool"] = {
            "min_size": min(env.int("DATABASE_POOL_MIN_SIZE", default=2), DATABASE_POOL_MAX_SIZE),
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=30.0),
        }
    # Seconds a connection outlives its request without a pool: 0 (closed at the end of each
    # request), the only safe value under ASGI (core/database.py refuses the others there);
    # with the pool it must be 0.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
    if "pool" in options and DATABASES["default"]["CONN_MAX_AGE"] != 0:
        raise ImproperlyConfigured(
            "DATABASE_CONN_MAX_AGE must be 0 (unset) with the connection pool: the pool keeps the "
            "connections. Remove it from the environment, or set DATABASE_POOL_MAX_SIZE=0."
        )
    # On: a connection is checked (one round trip) when it is taken from the pool (without the
    # pool: when a persistent one is reused), so one the server closed meanwhile (a failover, a
    # restart, an idle timeout) is replaced instead of failing that call with internal_error.
    # The send hot path does not pay it: it runs on the event loop's own connection
    # (messaging/loop_writer.py), and the batched thread calls pay it once per batch.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
    # Server-side parameters, and prepared statements after DATABASE_PREPARE_THRESHOLD uses
    # (Django turns psycopg's preparation off unless asked): the hot path's statements are
    # parsed and planned once per connection instead of on every message. 0 turns preparation
    # off (needed behind a transaction-pooling PgBouncer older than 1.21).
    options["server_side_binding"] = env.bool("DATABASE_SERVER_SIDE_BINDING", default=True)
    _prepare = env.int("DATABASE_PREPARE_THRESHOLD", default=5)
    options["prepare_threshold"] = _prepare if _prepare > 0 and options["server_side_binding"] else None
    # A streaming replica for reads that tolerate lag (history pages, the doctor directory;
    # core/replica.py, docs/scaling.md): the same options and its own pool per process. A caller
    # who wrote within DATABASE_REPLICA_STICKY_SECONDS reads the primary (read your writes).
    DATABASE_REPLICA_URL: str = env.str("DATABASE_REPLICA_URL", default="")
    DATABASE_REPLICA_STICKY_SECONDS: float = env.float("DATABASE_REPLICA_STICKY_SECONDS", default=5.0)
    if DATABASE_REPLICA_URL:
        # A replica that is down costs a lag-tolerant read this long before the primary answers
        # it (then core/replica.py leaves the replica alone for a while).
        _replica_timeout = env.float("DATABASE_REPLICA_POOL_TIMEOUT", default=2.0)
        _replica_options: dict[str, Any] = {**options, "connect_timeout": max(1, int(_replica_timeout))}
        if "pool" in options:
            _replica_options["pool"] = {**options["pool"], "timeout": _replica_timeout}
        DATABASES["replica"] = {
            **env.db_url_config(DATABASE_REPLICA_URL),
            "OPTIONS": _replica_options,
            "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
            "CONN_HEALTH_CHECKS": DATABASES["default"]["CONN_HEALTH_CHECKS"],
            "TEST": {"MIRROR": "default"},
        }
        DATABASE_ROUTERS = ["core.replica.ReplicaRouter"]
        MIDDLEWARE.insert(
            MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
            "core.replica.ReadYourWritesMiddleware",
        )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Redis: channel layer, presence, cache, Celery broker ----------------------------------
# One Redis (REDIS_URL) by default; a Redis per role and Redis Sentinel are optional
# (core/redis_roles.py, docs/redis.md).
REDIS_URL: str | None = env.str("REDIS_URL", default=None) or None
REDIS_TARGETS: dict[str, RedisTarget | None] = targets_from_env(os.environ)
# Redis is in use (REDIS_URL, or only Sentinel): the embedded in-memory defaults are off.
REDIS_ENABLED: bool = bool(REDIS_URL or REDIS_TARGETS["channel_layer"])

_layer_target = REDIS_TARGETS["channel_layer"]
_cache_target = REDIS_TARGETS["cache"]
if _layer_target is not None:
    CHANNEL_LAYERS: dict[str, Any] = {
        "default": {
            # channels-redis' pub/sub layer (one PUBLISH per event instead of ~15 commands of
            # the core layer; safe because live events are a hint: what pub/sub drops, ``sync``
            # replays) with local delivery and pipelined publishing (core/channel_layer.py).
            "BACKEND": "core.channel_layer.LocalFirstChannelLayer",
            "CONFIG": {
                "hosts": [_layer_target.channels_host()],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="healthchat"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
if _cache_target is not None:
    CACHES: dict[str, Any] = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _cache_target.url,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="healthchat"),
            "OPTIONS": _cache_target.cache_options(),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

_broker_target = REDIS_TARGETS["broker"]
CELERY_BROKER_URL: str = (
    _broker_target.kombu_url()
    if _broker_target is not None
    else env.str("CELERY_BROKER_URL", default="") or "memory://"
)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = (
    _broker_target.kombu_transport_options() if _broker_target is not None else {}
)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_ENABLED)
CELERY_RESULT_BACKEND: str | None = None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE: str = env.str("CELERY_TASK_DEFAULT_QUEUE", default="healthchat")
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, Any] = {
    "attachments-purge-orphans": {"task": "messaging.tasks.purge_orphan_attachments", "schedule": 3600.0},
    # Video/audio uploads still "processing" long after upload (a lost task): queued again.
    "attachments-requeue-processing": {"task": "messaging.tasks.requeue_processing_media", "schedule": 300.0},
}

# --- Internationalisation -----------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files ---------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The web console (console/) loads the JavaScript SDK's ES modules as they are, from
# /static/console/sdk/ (no build step, no Node at run time).
STATICFILES_DIRS = [("console/sdk", BASE_DIR / "clients" / "js" / "src")]
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))
MEDIA_URL = "media/"
STORAGES: dict[str, Any] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Chat attachments: local disk by default; S3 (or any S3-compatible store) when a bucket is set.
AWS_STORAGE_BUCKET_NAME: str = env.str("AWS_STORAGE_BUCKET_NAME", default="")
ATTACHMENT_URL_TTL_SECONDS: int = env.int("ATTACHMENT_URL_TTL_SECONDS", default=300)
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
            "access_key": env.str("AWS_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default="") or None,
            "signature_version": "s3v4",
            "addressing_style": env.str("AWS_S3_ADDRESSING_STYLE", default="virtual"),
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": ATTACHMENT_URL_TTL_SECONDS,
            "file_overwrite": False,
            "object_parameters": {"ServerSideEncryption": "AES256"}
            if env.bool("AWS_S3_SSE", default=True)
            else {},
        },
    }
ATTACHMENT_MAX_BYTES: dict[str, int] = {
    "image": env.int("ATTACHMENT_MAX_IMAGE_BYTES", default=20 * 1024 * 1024),
    "video": env.int("ATTACHMENT_MAX_VIDEO_BYTES", default=100 * 1024 * 1024),
    "audio": env.int("ATTACHMENT_MAX_AUDIO_BYTES", default=20 * 1024 * 1024),
    "document": env.int("ATTACHMENT_MAX_DOCUMENT_BYTES", default=25 * 1024 * 1024),
    "encrypted": env.int("ATTACHMENT_MAX_ENCRYPTED_BYTES", default=100 * 1024 * 1024),
}
ATTACHMENT_DAILY_QUOTA_BYTES: int = env.int("ATTACHMENT_DAILY_QUOTA_BYTES", default=500 * 1024 * 1024)
ATTACHMENT_ORPHAN_HOURS: int = env.int("ATTACHMENT_ORPHAN_HOURS", default=24)
# Video and audio uploads are remuxed without metadata by ffmpeg in the Celery worker: the
# binaries, a time limit per run and the largest input it is given (larger: rejected).
MEDIA_FFMPEG_BINARY: str = env.str("MEDIA_FFMPEG_BINARY", default="ffmpeg")
MEDIA_FFPROBE_BINARY: str = env.str("MEDIA_FFPROBE_BINARY", default="ffprobe")
MEDIA_PROCESSING_TIMEOUT_SECONDS: float = env.float("MEDIA_PROCESSING_TIMEOUT_SECONDS", default=120.0)
MEDIA_PROCESSING_MAX_BYTES: int = env.int("MEDIA_PROCESSING_MAX_BYTES", default=100 * 1024 * 1024)
# Request bodies above this are refused (413) by the ASGI guard before they are read.
MAX_REQUEST_BODY_BYTES: int = env.int("MAX_REQUEST_BODY_BYTES", default=10 * 1024 * 1024)

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.FirebaseAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.IsRegistered"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON bodies only: form encodings read a missing boolean as false and repeated keys as
    # lists. Uploads (attachments) take multipart on their own view.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "core.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.error_handlers.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "core.pagination.DefaultCursorPagination",
    "PAGE_SIZE": 50,
    # Counted in Redis, atomically, across processes and restarts (core/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "core.throttling.UserRateThrottle",
        "core.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("THROTTLE_USER_RATE", default="600/minute"),
        "anon": env.str("THROTTLE_ANON_RATE", default="60/minute"),
        "register": env.str("THROTTLE_REGISTER_RATE", default="10/minute"),
        "export": env.str("THROTTLE_EXPORT_RATE", default="5/hour"),
        "upload": env.str("THROTTLE_UPLOAD_RATE", default="30/minute"),
        "keys": env.str("THROTTLE_KEYS_RATE", default="60/minute"),
        "search": env.str("THROTTLE_SEARCH_RATE", default="60/minute"),
    },
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "healthchat API",
    "DESCRIPTION": "REST API of the healthchat doctor-patient consultation backend. "
    "The WebSocket protocol is documented in docs/protocol.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's files (drf-spectacular's defaults, named here for the docs page's CSP below).
    "SWAGGER_UI_DIST": "https://cdn.jsdelivr.net/npm/swagger-ui-dist@latest",
    "SWAGGER_UI_FAVICON_HREF": "https://cdn.jsdelivr.net/npm/swagger-ui-dist@latest/favicon-32x32.png",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.openapi.add_error_responses",
    ],
}

# --- Security headers and CORS (docs/trust.md) ----------------------------------------------
# Django's SecurityMiddleware: nosniff, Referrer-Policy, Cross-Origin-Opener-Policy; the
# clickjacking middleware: X-Frame-Options. Production adds HSTS and the HTTPS redirect.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# "same-origin" (not "no-referrer"): the admin's CSRF check needs the Origin/Referer of its forms.
SECURE_REFERRER_POLICY = env.str("SECURE_REFERRER_POLICY", default="same-origin")
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Content-Security-Policy by path prefix (core/security.py; the longest prefix wins). The
# admin loads only its own static files; the API docs load Swagger UI from SWAGGER_UI_DIST (and
# need inline styles); API responses are data and may load nothing.
_SWAGGER = SPECTACULAR_SETTINGS["SWAGGER_UI_DIST"].rstrip("/") + "/"
HEALTHCHAT_CSP: dict[str, str] = {
    "/admin/": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'",
    "/api/docs/": f"default-src 'none'; script-src 'self' {_SWAGGER}; style-src 'self' {_SWAGGER} "
    f"'unsafe-inline'; img-src 'self' data: {_SWAGGER}; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "/api/": "default-src 'none'; frame-ancestors 'none'",
    # The console page sets its own (console/views.py: its import map's hash); this covers the
    # rest under /console/ (errors).
    "/console/": "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'",
}
# CORS (django-cors-headers) for browser clients on other origins: only these origins, only the
# API, no cookies (the API takes bearer tokens). Empty (the default): no CORS headers at all.
CORS_ALLOWED_ORIGINS: list[str] = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_CREDENTIALS = False
CORS_EXPOSE_HEADERS = ["Retry-After"]
CORS_PREFLIGHT_MAX_AGE = 3600

# --- Firebase -----------------------------------------------------------------------------
FIREBASE_PROJECT_ID: str = env.str("FIREBASE_PROJECT_ID", default="demo-healthchat")
FIREBASE_CREDENTIALS: str | None = env.str("FIREBASE_CREDENTIALS", default=None) or None
FIREBASE_AUTH_EMULATOR_HOST: str | None = env.str("FIREBASE_AUTH_EMULATOR_HOST", default=None) or None
# The web console's phone sign-in (Firebase Web SDK): the web app's API key and auth domain
# (Firebase console > Project settings). Unset: only the emulator (FIREBASE_AUTH_EMULATOR_HOST)
# or pasted ID tokens sign in to the console.
FIREBASE_WEB_API_KEY: str = env.str("FIREBASE_WEB_API_KEY", default="")
FIREBASE_WEB_AUTH_DOMAIN: str = env.str("FIREBASE_WEB_AUTH_DOMAIN", default="")
# Development-only token issuer (``manage.py dev_token``); production refuses it.
FIREBASE_DEV_TOKENS: bool = env.bool("FIREBASE_DEV_TOKENS", default=False)
FIREBASE_CHECK_REVOKED: bool = env.bool("FIREBASE_CHECK_REVOKED", default=False)
DEV_TOKEN_KEY_PATH = Path(env.str("DEV_TOKEN_KEY_PATH", default=str(BASE_DIR / "var" / "dev-token-key.pem")))

# --- Push notifications (notifications/): FCM from Celery workers ---------------------------
# "fcm" (Firebase Cloud Messaging; default when FIREBASE_CREDENTIALS is set) or "log" (the
# embedded default: pushes are written to the log, ids only, never titles or text).
PUSH_BACKEND: str = env.str("PUSH_BACKEND", default="fcm" if FIREBASE_CREDENTIALS else "log")
# A device gets a message push only if its user has not acknowledged the message (delivered
# on a socket) within this many seconds.
PUSH_GRACE_SECONDS: float = env.float("PUSH_GRACE_SECONDS", default=3.0)
PUSH_TTL_SECONDS: int = env.int("PUSH_TTL_SECONDS", default=3 * 86400)
PUSH_CALL_TTL_SECONDS: int = env.int("PUSH_CALL_TTL_SECONDS", default=30)
PUSH_PREVIEWS_DEFAULT: bool = env.bool("PUSH_PREVIEWS_DEFAULT", default=False)
PUSH_MAX_ATTEMPTS: int = env.int("PUSH_MAX_ATTEMPTS", default=5)
PUSH_RETRY_BACKOFF_SECONDS: float = env.float("PUSH_RETRY_BACKOFF_SECONDS", default=5.0)
PUSH_HTTP_TIMEOUT_SECONDS: float = env.float("PUSH_HTTP_TIMEOUT_SECONDS", default=10.0)
PUSH_REQUEUE_AFTER_SECONDS: float = env.float("PUSH_REQUEUE_AFTER_SECONDS", default=60.0)
PUSH_SEND_LEASE_SECONDS: float = env.float("PUSH_SEND_LEASE_SECONDS", default=120.0)
PUSH_RETENTION_DAYS: int = env.int("PUSH_RETENTION_DAYS", default=14)
CELERY_BEAT_SCHEDULE["push-requeue-stale"] = {"task": "notifications.tasks.push_requeue", "schedule": 60.0}
CELERY_BEAT_SCHEDULE["push-outbox-cleanup"] = {"task": "notifications.tasks.push_cleanup", "schedule": 3600.0}

# --- Domain settings ----------------------------------------------------------------------
# End-to-end encryption policy (docs/e2ee.md "Policy"): "off" (server-readable chat only),
# "optional" (the opener of a conversation chooses; plaintext unless asked) or "required"
# (patient-doctor direct conversations are always encrypted). A client cannot override it.
E2EE_POLICIES = ("off", "optional", "required")


def _e2ee_policy() -> str:
    """HEALTHCHAT_E2EE_POLICY, or the deprecated HEALTHCHAT_E2EE_DEFAULT (true = required,
    false = optional) with a warning; a value that is neither, or the two disagreeing, refuses to
    start (never a silent guess)."""
    policy = env.str("HEALTHCHAT_E2EE_POLICY", default="").strip().lower()
    if policy and policy not in E2EE_POLICIES:
        raise ImproperlyConfigured(f"HEALTHCHAT_E2EE_POLICY must be one of {', '.join(E2EE_POLICIES)}.")
    legacy = env.str("HEALTHCHAT_E2EE_DEFAULT", default="").strip().lower()
    if not legacy:
        return policy or "optional"
    booleans = {"true": "required", "1": "required", "false": "optional", "0": "optional"}
    if legacy not in booleans:
        raise ImproperlyConfigured(
            "HEALTHCHAT_E2EE_DEFAULT (deprecated) must be true or false; use HEALTHCHAT_E2EE_POLICY."
        )
    if policy and policy != booleans[legacy]:
        raise ImproperlyConfigured(
            f"HEALTHCHAT_E2EE_DEFAULT={legacy} contradicts HEALTHCHAT_E2EE_POLICY={policy}; "
            "remove HEALTHCHAT_E2EE_DEFAULT (deprecated)."
        )
    warnings.warn(
        f"HEALTHCHAT_E2EE_DEFAULT is deprecated: read as HEALTHCHAT_E2EE_POLICY={booleans[legacy]}; "
        "set HEALTHCHAT_E2EE_POLICY instead.",
        FutureWarning,
        stacklevel=1,
    )
    return booleans[legacy]


HEALTHCHAT_E2EE_POLICY: str = _e2ee_policy()
# End-to-end encryption key directory (docs/e2ee.md): a device whose one-time prekeys (or
# one-time Kyber prekeys) fall below the threshold is sent ``keys.low``; stock and upload caps.
HEALTHCHAT_PREKEY_LOW_THRESHOLD: int = env.int("HEALTHCHAT_PREKEY_LOW_THRESHOLD", default=10)
HEALTHCHAT_PREKEY_MAX_STOCK: int = env.int("HEALTHCHAT_PREKEY_MAX_STOCK", default=500)
HEALTHCHAT_PREKEY_MAX_UPLOAD: int = env.int("HEALTHCHAT_PREKEY_MAX_UPLOAD", default=100)
# One-time prekey budgets (accounts/prekey_budget.py, docs/e2ee.md): bundle fetches per window that
# hand out one-time keys, per (requester, target) pair and per target; over a budget the bundle
# comes without them (signed prekey + last-resort Kyber key).
HEALTHCHAT_PREKEY_BUDGET_WINDOW_SECONDS: int = env.int(
    "HEALTHCHAT_PREKEY_BUDGET_WINDOW_SECONDS", default=86400
)
HEALTHCHAT_PREKEY_BUDGET_PER_PAIR: int = env.int("HEALTHCHAT_PREKEY_BUDGET_PER_PAIR", default=5)
HEALTHCHAT_PREKEY_BUDGET_PER_TARGET: int = env.int("HEALTHCHAT_PREKEY_BUDGET_PER_TARGET", default=50)
# Largest per-device ciphertext of an end-to-end encrypted message (decoded bytes).
HEALTHCHAT_CIPHERTEXT_MAX_BYTES: int = env.int("HEALTHCHAT_CIPHERTEXT_MAX_BYTES", default=16384)
HEALTHCHAT_MAX_GROUP_SIZE: int = env.int("HEALTHCHAT_MAX_GROUP_SIZE", default=256)
HEALTHCHAT_MESSAGE_MAX_LENGTH: int = env.int("HEALTHCHAT_MESSAGE_MAX_LENGTH", default=8000)
# Pinned messages per conversation (a pin over it: 409 pins_full); mention entities per message.
HEALTHCHAT_PINS_MAX: int = env.int("HEALTHCHAT_PINS_MAX", default=10)
HEALTHCHAT_MENTIONS_MAX: int = env.int("HEALTHCHAT_MENTIONS_MAX", default=50)
# Moderation (moderation/, docs/record.md "Reports and moderation"): how long a mute lasts when
# the moderator gives no length (1..720 hours).
MODERATION_MUTE_HOURS: int = env.int("MODERATION_MUTE_HOURS", default=24)
HEALTHCHAT_WS_MAX_FRAME_BYTES: int = env.int("HEALTHCHAT_WS_MAX_FRAME_BYTES", default=65536)
# Group commit of the common batch of sends on the event loop's own async psycopg connection
# (no worker-thread hop; messaging/loop_writer.py). Off: every batch takes a worker thread.
HEALTHCHAT_LOOP_WRITER: bool = env.bool("HEALTHCHAT_LOOP_WRITER", default=True)
# Loop writers (connections) per server process: with 2, a send arriving while a batch is being
# written starts its own batch at once instead of waiting for that batch's COMMIT (issue 26).
HEALTHCHAT_LOOP_WRITERS: int = env.int("HEALTHCHAT_LOOP_WRITERS", default=1)
HEALTHCHAT_WS_ALLOWED_ORIGINS: list[str] = env.list("HEALTHCHAT_WS_ALLOWED_ORIGINS", default=[])
# Per-connection frame rate limit (token bucket: frames per second, burst).
# Seconds a socket without an Authorization header has to send its auth frame.
HEALTHCHAT_WS_AUTH_TIMEOUT: float = env.float("HEALTHCHAT_WS_AUTH_TIMEOUT", default=10.0)
# Seconds a socket may go without a frame from the client (``ping`` counts) before it is closed
# with 4408; 0 turns the check off. Clients ping well within it (docs/protocol.md, Limits).
HEALTHCHAT_WS_IDLE_TIMEOUT: float = env.float("HEALTHCHAT_WS_IDLE_TIMEOUT", default=300.0)
# Presence: a connection without a heartbeat for this long counts as gone (crashed process).
HEALTHCHAT_PRESENCE_TTL: float = env.float("HEALTHCHAT_PRESENCE_TTL", default=75.0)
HEALTHCHAT_PRESENCE_HEARTBEAT: float = env.float("HEALTHCHAT_PRESENCE_HEARTBEAT", default=25.0)
# Hash slots the presence and send-limit keys are spread over (Redis Cluster: each multi-key call
# stays in one; 1 = every such key on one slot, the fewest round trips). docs/redis.md.
HEALTHCHAT_PRESENCE_KEY_SLOTS: int = env.int("HEALTHCHAT_PRESENCE_KEY_SLOTS", default=1)
# The garbage collector's thresholds in server processes (core/gc_tuning.py); empty keeps
# Python's defaults (700,10,10).
HEALTHCHAT_GC_THRESHOLD: str = env.str("HEALTHCHAT_GC_THRESHOLD", default="50000,20,100")
# Benchmarks only: a server process keeps every collector pass, event-loop stall and send batch's
# timings in memory and writes them to this path + ".<pid>" when it exits (core/latency_probe.py,
# bench/messaging.py --latency-probe). Empty (the default): off.
HEALTHCHAT_LATENCY_PROBE: str = env.str("HEALTHCHAT_LATENCY_PROBE", default="")
HEALTHCHAT_WS_RATE: float = env.float("HEALTHCHAT_WS_RATE", default=50.0)
HEALTHCHAT_WS_BURST: float = env.float("HEALTHCHAT_WS_BURST", default=100.0)
# Messages one user may send per minute over all their sockets and server processes (Redis; 0 = off).
HEALTHCHAT_SEND_LIMIT_PER_MINUTE: int = env.int("HEALTHCHAT_SEND_LIMIT_PER_MINUTE", default=1200)
# Admission control (a reconnect storm): at most this many sockets authenticating at once per
# server process; the next ones get ``server_busy`` with ``retry_after_ms`` and close 1013
# (0 = no limit). ``retry_after_ms`` is the time the waiting ones should take at the recent rate,
# at least HEALTHCHAT_WS_RETRY_AFTER_MS, times a random 1-1.5.
HEALTHCHAT_WS_MAX_PENDING_AUTH: int = env.int("HEALTHCHAT_WS_MAX_PENDING_AUTH", default=1000)
HEALTHCHAT_WS_RETRY_AFTER_MS: int = env.int("HEALTHCHAT_WS_RETRY_AFTER_MS", default=1000)
# The reconnect hint of ``ready``: after losing the socket, clients wait a random delay between
# these (milliseconds) before reconnecting, so a restart does not bring every socket back at once.
HEALTHCHAT_WS_RECONNECT_MIN_MS: int = env.int("HEALTHCHAT_WS_RECONNECT_MIN_MS", default=500)
HEALTHCHAT_WS_RECONNECT_MAX_MS: int = env.int("HEALTHCHAT_WS_RECONNECT_MAX_MS", default=5000)

# --- Trust: audit log, retention, legal hold (docs/trust.md) ---------------------------------
# Proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed for the
# client address in the audit log. Empty: the peer's own address is recorded.
TRUSTED_PROXIES: list[str] = env.list("TRUSTED_PROXIES", default=[])
# Days messages / attachment files are kept; 0 keeps them for ever (the default). Older ones are
# erased by the retention job (beat, hourly; or manage.py purge_expired) except in conversations
# under legal hold. The audit log is never purged.
MESSAGE_RETENTION_DAYS: int = env.int("MESSAGE_RETENTION_DAYS", default=0)
ATTACHMENT_RETENTION_DAYS: int = env.int("ATTACHMENT_RETENTION_DAYS", default=0)
RETENTION_BATCH_SIZE: int = env.int("RETENTION_BATCH_SIZE", default=1000)
# Full-text search of plaintext messages (GET /api/v1/search/messages): the PostgreSQL text search
# configuration of the stored tsvector (english, simple, german...). After a change run
# ``manage.py search_language`` (rebuilds the column; docs/search.md).
SEARCH_LANGUAGE: str = env.str("SEARCH_LANGUAGE", default="english")
CELERY_BEAT_SCHEDULE["messaging-retention-purge"] = {
    "task": "messaging.tasks.retention_purge",
    "schedule": 3600.0,
}

# Scheduled messages (scheduled/, docs/protocol.md): how far ahead, how many may wait per author,
# how long finished ones are listed, and the sweep that sends due ones whose task was lost.
SCHEDULED_MESSAGE_MAX_DAYS: int = env.int("SCHEDULED_MESSAGE_MAX_DAYS", default=365)
SCHEDULED_MESSAGE_MAX_PENDING: int = env.int("SCHEDULED_MESSAGE_MAX_PENDING", default=100)
SCHEDULED_MESSAGE_KEEP_DAYS: int = env.int("SCHEDULED_MESSAGE_KEEP_DAYS", default=30)
SCHEDULED_MESSAGE_SWEEP_SECONDS: float = env.float("SCHEDULED_MESSAGE_SWEEP_SECONDS", default=5.0)
CELERY_BEAT_SCHEDULE["scheduled-dispatch-due"] = {
    "task": "scheduled.tasks.dispatch_due",
    "schedule": SCHEDULED_MESSAGE_SWEEP_SECONDS,
}
CELERY_BEAT_SCHEDULE["scheduled-purge-finished"] = {
    "task": "scheduled.tasks.purge_finished",
    "schedule": 3600.0,
}

# Ratings (ratings/, docs/record.md "Ratings"): days after writing it a patient may change their
# review of a consultation.
RATING_EDIT_DAYS: int = env.int("RATING_EDIT_DAYS", default=7)

# --- Payments (Stripe): see docs/payments.md ------------------------------------------------
STRIPE_SECRET_KEY: str = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_WEBHOOK_SECRET: str = env.str("STRIPE_WEBHOOK_SECRET", default="")
# Optional: the signing secret of a Connect webhook endpoint (connected accounts' events).
STRIPE_CONNECT_WEBHOOK_SECRET: str = env.str("STRIPE_CONNECT_WEBHOOK_SECRET", default="")
# Blank: Stripe itself. Tests and local fakes point it at 127.0.0.1; production refuses others.
STRIPE_API_BASE: str = env.str("STRIPE_API_BASE", default="")
STRIPE_MAX_NETWORK_RETRIES: int = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
STRIPE_CONNECT_COUNTRY: str = env.str("STRIPE_CONNECT_COUNTRY", default="GB")
STRIPE_CONNECT_REFRESH_URL: str = env.str(
    "STRIPE_CONNECT_REFRESH_URL", default="https://healthchat.invalid/payouts/onboarding/refresh"
)
STRIPE_CONNECT_RETURN_URL: str = env.str(
    "STRIPE_CONNECT_RETURN_URL", default="https://healthchat.invalid/payouts/onboarding/done"
)
# "stripe", or "development": a local provider that authorises every payment without Stripe
# (the embedded default when no STRIPE_SECRET_KEY is set; production refuses it).
PAYMENTS_PROVIDER: str = env.str(
    "PAYMENTS_PROVIDER", default="stripe" if STRIPE_SECRET_KEY else "development"
)
PLATFORM_FEE_PERCENT: Decimal = Decimal(env.str("PLATFORM_FEE_PERCENT", default="15"))
CONSULTATION_FOLLOW_UP_DAYS: int = env.int("CONSULTATION_FOLLOW_UP_DAYS", default=7)
# Unaccepted requests expire (authorisation released) after this many hours (< 7 days).
CONSULTATION_REQUEST_TTL_HOURS: int = env.int("CONSULTATION_REQUEST_TTL_HOURS", default=24)
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {})["ConsultationKindEnum"] = (
    "payments.models.Consultation.Kind"
)
# Several models have a "state": name each choice set so the OpenAPI enums are stable.
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["ConsultationStateEnum"] = "payments.models.Consultation.State"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["CallStateEnum"] = "calls.models.Call.State"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["AttachmentStateEnum"] = "messaging.models.Attachment.State"
# Reports (moderation/): named so another app's "status", "reason" or "action" never collides.
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].update(
    {
        "ReportTargetEnum": "moderation.models.Report.Target",
        "ReportReasonEnum": "moderation.models.Report.Reason",
        "ReportStatusEnum": "moderation.models.Report.Status",
        "ReportOutcomeEnum": "moderation.models.Report.Action",
        "ModerationNoticeActionEnum": "moderation.models.ModerationNotice.Action",
    }
)
CELERY_BEAT_SCHEDULE["payments-expire-consultations"] = {
    "task": "payments.tasks.expire_consultations",
    "schedule": 300.0,
}
CELERY_BEAT_SCHEDULE["payments-retry-payouts"] = {"task": "payments.tasks.retry_payouts", "schedule": 900.0}

# --- Documents (documents/): receipts, consultation summaries, prescriptions as PDF; docs/record.md
# The platform as the issuer printed on every document: legal name, postal address (lines
# separated by ";"), tax registration id, the tax's name and rate (percent; prices include it).
HEALTHCHAT_PLATFORM_LEGAL_NAME: str = env.str("HEALTHCHAT_PLATFORM_LEGAL_NAME", default="healthchat")
HEALTHCHAT_PLATFORM_ADDRESS: str = env.str("HEALTHCHAT_PLATFORM_ADDRESS", default="")
HEALTHCHAT_TAX_ID: str = env.str("HEALTHCHAT_TAX_ID", default="")
HEALTHCHAT_TAX_NAME: str = env.str("HEALTHCHAT_TAX_NAME", default="VAT")
HEALTHCHAT_TAX_RATE: Decimal = Decimal(env.str("HEALTHCHAT_TAX_RATE", default="0"))
if not Decimal(0) <= HEALTHCHAT_TAX_RATE < Decimal(100):
    raise ImproperlyConfigured("HEALTHCHAT_TAX_RATE must be a percentage from 0 to below 100.")
# The public origin of this server (scheme://host[:port]): what a prescription's QR code points
# at (its verification page), since the worker that renders it has no request to ask.
HEALTHCHAT_PUBLIC_URL: str = (env.str("HEALTHCHAT_PUBLIC_URL", default="") or "http://127.0.0.1:8000").rstrip(
    "/"
)
# Lifetime of document download links (presigned or our own signed stream), seconds.
DOCUMENT_URL_TTL_SECONDS: int = env.int("DOCUMENT_URL_TTL_SECONDS", default=300)
# Documents a user may ask for (POST documents: each one is a rendering in the worker).
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["document"] = env.str("THROTTLE_DOCUMENT_RATE", default="60/hour")
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["DocumentKindEnum"] = "documents.models.Document.Kind"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["DocumentStatusEnum"] = "documents.models.Document.Status"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["DocumentPaymentKindEnum"] = (
    "documents.validators.RECEIPT_ENTRY_KINDS"
)

# --- Calls (calls/): signalling, ring timeout, TURN credentials; see docs/calls.md -----------
# Seconds a call rings before it is missed; seconds a dropped call socket has to come back.
CALL_RING_TIMEOUT_SECONDS: float = env.float("CALL_RING_TIMEOUT_SECONDS", default=45.0)
CALL_RECONNECT_GRACE_SECONDS: float = env.float("CALL_RECONNECT_GRACE_SECONDS", default=20.0)
# TURN REST API: the secret shared with the TURN server (coturn static-auth-secret), its URLs
# and how long a credential lasts; STUN URLs are handed out as they are.
TURN_SECRET: str = env.str("TURN_SECRET", default="")
TURN_URLS: list[str] = env.list("TURN_URLS", default=[])
STUN_URLS: list[str] = env.list("STUN_URLS", default=[])
TURN_TTL_SECONDS: int = env.int("TURN_TTL_SECONDS", default=4 * 3600)
# Seconds between the beat's call sweeps (missed rings, ended reconnect graces).
CALL_SWEEP_SECONDS: float = env.float("CALL_SWEEP_SECONDS", default=10.0)
CELERY_BEAT_SCHEDULE["calls-sweep"] = {"task": "calls.tasks.calls_sweep", "schedule": CALL_SWEEP_SECONDS}

# --- Logging: no message text or PII in logs ----------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# Every log record of the process has its credentials (signed links' ``token=``, ID tokens,
# cookies, ...) redacted before any logger or handler sees it: core/logs.py.
LOGGING_CONFIG = "core.logs.configure"
# LOG_FORMAT: "plain" (human-readable, the default of `make run`) or "json" (one object per
# line for a log pipeline; docker-compose.yml sets it): core/log_context.py, docs/operations.md.
LOG_FORMAT: str = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
LOGGING: dict[str, Any] = logging_config(LOG_FORMAT, LOG_LEVEL)
# Celery keeps Django's logging (the same format and context filter) instead of its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Operations: metrics and error tracking (docs/operations.md) ---------------------------
# The bearer token /metrics wants; unset: /metrics answers 404. Celery workers serve theirs on
# METRICS_WORKER_PORT (read by core/metrics.py from the environment; PROMETHEUS_MULTIPROC_DIR
# for several processes).
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")
# Error tracking (sentry-sdk) when SENTRY_DSN is set: core/sentry.py.
SENTRY_DSN: str = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT: str = env.str("SENTRY_ENVIRONMENT", default="production")
SENTRY_TRACES_SAMPLE_RATE: float = env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0)


# --- Appointments: see docs/appointments.md --------------------------------------------------
# How long a booked slot is held while the patient's payment is authorised.
APPOINTMENT_HOLD_SECONDS: int = env.int("APPOINTMENT_HOLD_SECONDS", default=600)
# The booked consultation expires (authorisation released) this long after the slot's end.
APPOINTMENT_DOCTOR_GRACE_MINUTES: int = env.int("APPOINTMENT_DOCTOR_GRACE_MINUTES", default=30)
# Cancellation policy: a patient cancelling (or rescheduling) at least this many hours before
# the start pays nothing; later, this percentage of the price is kept; after the start they
# cannot cancel (409 too_late_to_cancel). A doctor's cancellation is always free for the patient.
APPOINTMENT_FREE_CANCEL_HOURS: int = env.int("APPOINTMENT_FREE_CANCEL_HOURS", default=24)
APPOINTMENT_LATE_CANCEL_FEE_PERCENT: int = env.int("APPOINTMENT_LATE_CANCEL_FEE_PERCENT", default=50)
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["AppointmentStateEnum"] = "appointments.models.Appointment.State"
# A checked-in appointment the doctor has not admitted (nor accepted its consultation) this many
# minutes after the start ends as no_show_doctor: authorisation released, apology push.
APPOINTMENT_DOCTOR_NO_SHOW_MINUTES: int = env.int("APPOINTMENT_DOCTOR_NO_SHOW_MINUTES", default=15)
# The waiting room: the patient of a confirmed appointment checks in from this many minutes
# before the start; one who has not checked in this many minutes after the start is a no-show
# (no_show_patient), and this percentage of the price is kept (0: released in full).
APPOINTMENT_CHECKIN_OPENS_MINUTES: int = env.int("APPOINTMENT_CHECKIN_OPENS_MINUTES", default=10)
APPOINTMENT_PATIENT_GRACE_MINUTES: int = env.int("APPOINTMENT_PATIENT_GRACE_MINUTES", default=10)
APPOINTMENT_NO_SHOW_FEE_PERCENT: int = env.int("APPOINTMENT_NO_SHOW_FEE_PERCENT", default=100)
if not 0 <= APPOINTMENT_NO_SHOW_FEE_PERCENT <= 100:
    raise ImproperlyConfigured("APPOINTMENT_NO_SHOW_FEE_PERCENT is a percentage (0 to 100).")
# How often beat runs each appointments task (holds, reminders, no-shows, on-demand expiry).
APPOINTMENT_SWEEP_SECONDS: float = env.float("APPOINTMENT_SWEEP_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE["appointments-sweep-no-shows"] = {
    "task": "appointments.tasks.sweep_no_shows",
    "schedule": APPOINTMENT_SWEEP_SECONDS,
}
# Minutes before the start at which a confirmed appointment's reminders are pushed.
APPOINTMENT_REMINDER_OFFSETS_MINUTES: list[int] = env.list(
    "APPOINTMENT_REMINDER_OFFSETS_MINUTES", cast=int, default=[1440, 15]
)
CELERY_BEAT_SCHEDULE["appointments-send-reminders"] = {
    "task": "appointments.tasks.send_reminders",
    "schedule": APPOINTMENT_SWEEP_SECONDS,
}
CELERY_BEAT_SCHEDULE["appointments-expire-holds"] = {
    "task": "appointments.tasks.expire_holds",
    "schedule": APPOINTMENT_SWEEP_SECONDS,
}
# An on-demand request ("the first available doctor of a specialty") nobody accepts expires
# after this many minutes (accepting checks the time too; beat closes it and tells everyone).
ON_DEMAND_REQUEST_TTL_MINUTES: int = env.int("ON_DEMAND_REQUEST_TTL_MINUTES", default=10)
CELERY_BEAT_SCHEDULE["appointments-expire-on-demand"] = {
    "task": "appointments.tasks.expire_on_demand",
    "schedule": APPOINTMENT_SWEEP_SECONDS,
}
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["OnDemandStateEnum"] = "appointments.models.OnDemandRequest.State"

# --- The clinical record (records/): visit notes and prescriptions; see docs/record.md --------
# A prescription may be issued in an open (accepted, in progress) consultation, or in one
# completed at most this many days ago.
HEALTHCHAT_PRESCRIPTION_WINDOW_DAYS: int = env.int("HEALTHCHAT_PRESCRIPTION_WINDOW_DAYS", default=7)
# The quantity (units to dispense) a prescription may carry: 1..this; and its repeats: 0..this.
HEALTHCHAT_PRESCRIPTION_MAX_QUANTITY: int = env.int("HEALTHCHAT_PRESCRIPTION_MAX_QUANTITY", default=1000)
HEALTHCHAT_PRESCRIPTION_MAX_REPEATS: int = env.int("HEALTHCHAT_PRESCRIPTION_MAX_REPEATS", default=12)
# The public verification endpoint (GET /api/v1/prescriptions/verify/{code}), per client address.
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["prescription_verify"] = env.str(
    "THROTTLE_PRESCRIPTION_VERIFY_RATE", default="30/minute"
)
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["VisitNoteStateEnum"] = "records.models.VisitNote.State"
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["PrescriptionStatusEnum"] = "records.models.Prescription.Status"
