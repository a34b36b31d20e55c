"""healthchat: the project package (settings, ASGI, URLs, Celery); the shared library is ``core``."""

from .celery import app as celery_app

__all__ = ["celery_app"]
