"""Test settings: real PostgreSQL and Redis on localhost (overridable), fast hashing."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/healthchat")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
# Each pytest-xdist worker gets its own channel-layer / presence / cache key space: the root
# conftest sets the prefixes per worker (the worker id is not known yet when this is imported).

from .base import *  # noqa: F403
from .base import CELERY_BROKER_URL, REST_FRAMEWORK, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)
CELERY_BROKER_URL = CELERY_BROKER_URL
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_RATES": {
        **REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
        "user": "100000/minute",
        "anon": "100000/minute",
    },
}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files (the web console's) straight from the apps and STATICFILES_DIRS: tests never run
# collectstatic.
WHITENOISE_USE_FINDERS = True
