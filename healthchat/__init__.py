"""healthchat: the project package (settings, ASGI, URLs, Celery, shared error format)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
