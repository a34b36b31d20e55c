"""The replica router's decisions (core/replica.py); tests/test_replica_live.py runs it against a
real lagging streaming replica."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, OperationalError
from django.test import RequestFactory

from accounts.models import User
from core import replica
from core.errors import ApplicationError


@pytest.fixture
def with_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if ``DATABASE_REPLICA_URL`` were set (no connection is made by these tests)."""
    monkeypatch.setattr(replica, "enabled", lambda: True)


def test_reads_go_to_the_replica_only_inside_a_lag_tolerant_call(with_replica: None) -> None:
    router = replica.ReplicaRouter()
    seen: list[str] = []
    assert router.db_for_read(User) == DEFAULT_DB_ALIAS
    replica.lag_tolerant(lambda: seen.append(router.db_for_read(User)), user_id=None)
    assert seen == [replica.REPLICA]
    assert router.db_for_read(User) == DEFAULT_DB_ALIAS  # reset after the call
    # Writes, even of an object read from the replica, and migrations: the primary only.
    user = User(pk=1)
    user._state.db = replica.REPLICA
    assert router.db_for_write(User, instance=user) == DEFAULT_DB_ALIAS
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "accounts") is True
    assert router.allow_migrate(replica.REPLICA, "accounts") is False


def test_a_user_who_wrote_reads_the_primary_for_the_window(
    with_replica: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.DATABASE_REPLICA_STICKY_SECONDS = 30
    router = replica.ReplicaRouter()
    cache.delete(replica.STAMP_KEY.format(user_id=991))
    assert replica.use_replica(991)
    replica.note_write(991)
    assert replica.wrote_recently(991)
    assert not replica.use_replica(991)
    assert replica.lag_tolerant(lambda: router.db_for_read(User), user_id=991) == DEFAULT_DB_ALIAS
    assert replica.use_replica(992)  # another user is not stamped
    # A cache that cannot answer: the primary (never a read that may miss one's own write).
    monkeypatch.setattr(cache, "get", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    assert replica.wrote_recently(993) is True


def test_a_refusal_or_failure_on_the_replica_is_asked_again_of_the_primary(
    with_replica: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica, "_replica_down_until", 0.0)
    router = replica.ReplicaRouter()
    calls: list[str] = []

    def selector(*, exc: Exception) -> str:
        where = router.db_for_read(User)
        calls.append(where)
        if where == replica.REPLICA:
            raise exc
        return "answer"

    cache.delete(replica.STAMP_KEY.format(user_id=994))
    not_found = ApplicationError("not_member", "Not a member.", status=404)
    assert replica.lag_tolerant(selector, user_id=994, exc=not_found) == "answer"
    assert replica.use_replica(994)  # a refusal is not a failure of the replica
    assert replica.lag_tolerant(selector, user_id=994, exc=OperationalError("replica down")) == "answer"
    assert calls == [replica.REPLICA, DEFAULT_DB_ALIAS] * 2
    # A failed replica is left alone for a while: the next reads go straight to the primary.
    assert not replica.use_replica(994)
    assert replica.lag_tolerant(selector, user_id=994, exc=not_found) == "answer"
    assert calls[-1:] == [DEFAULT_DB_ALIAS]
    monkeypatch.setattr(replica, "_replica_down_until", 0.0)
    assert replica.use_replica(994)


def test_the_socket_stamps_at_most_twice_a_window(with_replica: None, settings: Any) -> None:
    settings.DATABASE_REPLICA_STICKY_SECONDS = 60
    stamps = replica.SocketStamps()
    assert stamps.due() is True
    assert stamps.due() is False  # within half a window: the last stamp (1.5 windows) covers it
    assert stamps.seconds() == 90


def test_unsafe_rest_requests_stamp_their_caller(with_replica: None, monkeypatch: pytest.MonkeyPatch) -> None:
    stamped: list[int] = []
    monkeypatch.setattr(replica, "note_write", stamped.append)
    middleware = replica.ReadYourWritesMiddleware(lambda request: "response")
    factory = RequestFactory()
    for method, user in (("post", User(pk=5)), ("get", User(pk=6)), ("delete", User(pk=7))):
        request = getattr(factory, method)("/api/v1/x")
        request.user = user
        assert middleware(request) == "response"
    assert stamped == [5, 7]


def test_without_a_replica_nothing_is_routed_or_stamped(settings: Any) -> None:
    assert "replica" not in settings.DATABASES
    assert replica.enabled() is False
    assert replica.use_replica(1) is False
    assert replica.SocketStamps().due() is False
    router = replica.ReplicaRouter()
    assert replica.lag_tolerant(lambda: router.db_for_read(User), user_id=None) == DEFAULT_DB_ALIAS


def test_the_settings_add_the_replica_router_and_middleware_only_when_asked() -> None:
    """``DATABASE_REPLICA_URL``: a ``replica`` alias with the primary's options, its own pool
    with a short timeout, the router, the middleware after authentication."""
    import json
    import os
    import subprocess
    import sys

    from tests.live import ROOT

    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "r = s.DATABASES.get('replica'); print(json.dumps({'replica': r and {'port': r['PORT'], "
        "'pool': r['OPTIONS'].get('pool'), 'prepare': r['OPTIONS'].get('prepare_threshold'), "
        "'mirror': r['TEST'].get('MIRROR')}, 'routers': s.DATABASE_ROUTERS, 'middleware': s.MIDDLEWARE}))"
    )
    primary = "postgres://postgres@127.0.0.1:5432/hc_x"
    outs = []
    for replica_url in ("", "postgres://postgres@127.0.0.1:5433/hc_x"):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "healthchat.settings.test", "DATABASE_URL": primary}
        env["DATABASE_REPLICA_URL"] = replica_url
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    without, with_replica = outs
    assert without["replica"] is None
    assert without["routers"] == []
    assert "core.replica.ReadYourWritesMiddleware" not in without["middleware"]
    assert with_replica["replica"]["port"] == 5433
    assert with_replica["replica"]["pool"]["timeout"] == 2.0
    assert with_replica["replica"]["prepare"] == 5
    assert with_replica["replica"]["mirror"] == "default"
    assert with_replica["routers"] == ["core.replica.ReplicaRouter"]
    middleware = with_replica["middleware"]
    auth = middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware")
    assert middleware[auth + 1] == "core.replica.ReadYourWritesMiddleware"
