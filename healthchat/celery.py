"""Celery application: Redis broker when REDIS_URL is set, eager tasks otherwise."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "healthchat.settings.local")

app = Celery("healthchat")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from core import log_context, metrics  # noqa: E402

metrics.connect_celery()
log_context.connect_celery()
