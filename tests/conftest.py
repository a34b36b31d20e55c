"""Fixtures of the cross-app batteries (authorization matrix, API fuzzing)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from accounts.tests.signal_keys import SignalIdentity
from tests.authz import World, build_world


@pytest.fixture(scope="module")
def matrix_world(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[World]:
    """The matrix world, built once per module inside a transaction rolled back at the end; each
    test runs in a savepoint of it (pytest-django's ``db``), so what a test changes is undone."""
    media = override_settings(MEDIA_ROOT=str(tmp_path_factory.mktemp("matrix-media")))
    media.enable()
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            built = build_world()
            built.extra["keys_upload"] = SignalIdentity().upload(built.device_a.pk)
            yield built
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
            media.disable()


@pytest.fixture
def unthrottled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rate limits have their own tests; here a run must not depend on earlier runs' counters."""
    from rest_framework.views import APIView

    monkeypatch.setattr(APIView, "check_throttles", lambda self, request: None)
