# syntax=docker/dockerfile:1
# Production image for healthchat: one image for the ASGI server, migrations and Celery.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=healthchat.settings.production

WORKDIR /app

# Unprivileged runtime user (fixed ids so volume ownership is predictable).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

# ffmpeg (Debian package): the Celery worker remuxes video and audio uploads without their
# metadata; without it they are refused (messaging/ffmpeg.py). pikepdf and pillow-heif ship
# manylinux wheels with qpdf and libheif inside.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first, so code changes do not invalidate this layer. Every runtime dependency
# ships manylinux wheels (psycopg[binary], uvloop, httptools, cryptography): no compiler needed.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY --chown=root:root . .

# Static files are collected at build time with the base settings (production settings refuse
# to load without runtime secrets; static files do not depend on them). Served by WhiteNoise.
RUN DJANGO_SETTINGS_MODULE=healthchat.settings.base python manage.py collectstatic --noinput \
 && mkdir -p /app/var/media /app/var/celerybeat \
 && chown -R app:app /app/var

USER app

EXPOSE 8000

CMD ["uvicorn", "healthchat.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--loop", "uvloop", "--http", "httptools", "--ws", "core.ws_protocol:LeanWebSocketProtocol"]
