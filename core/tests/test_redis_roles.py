"""Redis roles and Sentinel: which Redis each client uses (core/redis_roles.py), and every client of
the project following a real Sentinel failover (master killed, replica promoted) by itself."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.test import RequestFactory, override_settings
from kombu import Connection, Exchange, Queue

from core import health, redis_roles
from core.channel_layer import LocalFirstChannelLayer
from core.redis_roles import RedisTarget, parse_sentinels, targets_from_env
from messaging import presence, send_limits
from tests.sentinel import SentinelSet

# --- which Redis each role uses ------------------------------------------------------------------


def test_one_redis_url_serves_every_role() -> None:
    targets = targets_from_env({"REDIS_URL": "redis://r:6379/4"})
    assert {role: t.url if t else None for role, t in targets.items()} == dict.fromkeys(
        redis_roles.ROLES, "redis://r:6379/4"
    )
    assert not any(t and t.uses_sentinel for t in targets.values())


def test_no_redis_at_all_is_the_embedded_mode() -> None:
    assert targets_from_env({}) == dict.fromkeys(redis_roles.ROLES)


def test_a_role_url_of_its_own_wins_and_amqp_takes_the_broker_away_from_redis() -> None:
    targets = targets_from_env(
        {
            "REDIS_URL": "redis://main/0",
            "REDIS_PRESENCE_URL": "redis://presence/1",
            "REDIS_CACHE_URL": "redis://:s3cret@cache/2",
            "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
        }
    )
    assert targets["channel_layer"] == RedisTarget(url="redis://main/0")
    assert targets["presence"] == RedisTarget(url="redis://presence/1")
    cache = targets["cache"]
    assert cache is not None
    assert (cache.password, cache.db) == ("s3cret", 2)
    assert targets["broker"] is None


def test_sentinel_for_every_role_that_follows_redis_url() -> None:
    targets = targets_from_env(
        {
            "REDIS_URL": "redis://:pw@mymaster/3",
            "REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26380,10.0.0.3",
            "REDIS_SENTINEL_MASTER": "hc",
            "REDIS_SENTINEL_PASSWORD": "sp",
            "REDIS_CACHE_URL": "redis://cache-host/1",  # its own Redis: not behind Sentinel
        }
    )
    layer = targets["channel_layer"]
    assert layer is not None
    assert layer.uses_sentinel
    assert layer.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert (layer.master_name, layer.db, layer.password) == ("hc", 3, "pw")
    host = layer.channels_host()
    assert isinstance(host, dict)
    assert (host["master_name"], host["db"], host["password"]) == ("hc", 3, "pw")
    assert host["sentinel_kwargs"]["password"] == "sp"
    broker = targets["broker"]
    assert broker is not None
    assert broker.kombu_url() == (
        "sentinel://:pw@10.0.0.1:26379/3;sentinel://:pw@10.0.0.2:26380/3;sentinel://:pw@10.0.0.3:26379/3"
    )
    assert broker.kombu_transport_options()["master_name"] == "hc"
    cache = targets["cache"]
    assert cache is not None
    assert not cache.uses_sentinel
    assert cache.cache_options() == {}


def test_a_role_may_have_sentinels_of_its_own() -> None:
    targets = targets_from_env(
        {
            "REDIS_URL": "redis://main/0",
            "REDIS_PRESENCE_URL": "redis://presence/5",
            "REDIS_PRESENCE_SENTINELS": "s1:1,s2:2",
            "REDIS_PRESENCE_SENTINEL_MASTER": "presence-master",
        }
    )
    presence_target = targets["presence"]
    assert presence_target is not None
    assert presence_target.sentinels == (("s1", 1), ("s2", 2))
    assert (presence_target.master_name, presence_target.db) == ("presence-master", 5)
    assert targets["channel_layer"] == RedisTarget(url="redis://main/0")


def test_a_bad_sentinel_address_is_refused() -> None:
    with pytest.raises(ValueError, match="sentinel"):
        parse_sentinels("host:port")


SHOW_SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
layer, cache, presence = s.CHANNEL_LAYERS["default"], s.CACHES["default"], s.REDIS_TARGETS["presence"]
print(json.dumps({
    "layer": layer["CONFIG"]["hosts"][0] if "CONFIG" in layer else layer["BACKEND"],
    "cache": [cache.get("LOCATION"), cache.get("OPTIONS", {}).get("pool_class")],
    "presence": presence and presence.url,
    "broker": [s.CELERY_BROKER_URL, s.CELERY_BROKER_TRANSPORT_OPTIONS.get("master_name")],
    "eager": s.CELERY_TASK_ALWAYS_EAGER,
}, default=str))
"""


def settings_for(env: dict[str, str]) -> dict[str, Any]:
    """The settings a process started with ``env`` (and no other Redis variable) builds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CELERY_"))}
    clean.update(env, DJANGO_SETTINGS_MODULE="healthchat.settings.local")
    done = subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=Path(__file__).resolve().parents[2],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_settings_send_each_role_where_the_environment_says() -> None:
    separate = settings_for(
        {
            "REDIS_URL": "redis://main:6379/0",
            "REDIS_CHANNEL_LAYER_URL": "redis://layer:6379/1",
            "REDIS_PRESENCE_URL": "redis://presence:6379/2",
            "REDIS_CACHE_URL": "redis://cache:6379/3",
            "CELERY_BROKER_URL": "amqp://guest:guest@rabbit:5672//",
        }
    )
    assert separate == {
        "layer": "redis://layer:6379/1",
        "cache": ["redis://cache:6379/3", None],
        "presence": "redis://presence:6379/2",
        "broker": ["amqp://guest:guest@rabbit:5672//", None],
        "eager": False,
    }
    sentinel = settings_for({"REDIS_SENTINELS": "s1:26379,s2:26380", "REDIS_SENTINEL_MASTER": "hc"})
    assert sentinel["layer"]["master_name"] == "hc"
    assert sentinel["layer"]["sentinels"] == [["s1", 26379], ["s2", 26380]]
    assert sentinel["cache"][1] == "core.redis_roles.SentinelPool"
    assert sentinel["broker"] == ["sentinel://s1:26379/0;sentinel://s2:26380/0", "hc"]
    assert sentinel["eager"] is False  # Redis is configured: tasks go to the broker
    embedded = settings_for({})
    assert embedded["layer"] == "channels.layers.InMemoryChannelLayer"
    assert (embedded["presence"], embedded["eager"]) == (None, True)


# --- every client through a real Sentinel failover -----------------------------------------------


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: Any) -> Any:
    engines = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    engines.start()
    yield engines
    engines.stop()


async def _until(call: Any, timeout: float) -> tuple[Any, float]:
    """``await call()`` until it succeeds; (its result, seconds it took)."""
    started = time.monotonic()
    while True:
        try:
            return await call(), time.monotonic() - started
        except Exception:
            if time.monotonic() - started > timeout:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.django_db
def test_every_redis_client_follows_a_sentinel_failover_by_itself(
    sentinel_set: SentinelSet, settings: Any
) -> None:
    env = {k: v for k, v in sentinel_set.env(db=2).items() if v}
    targets = targets_from_env(env)
    prefix = f"roles-{uuid.uuid4().hex[:8]}"
    broker = targets["broker"]
    assert broker is not None
    layer_host = targets["channel_layer"].channels_host()  # type: ignore[union-attr]
    cache_target = targets["cache"]
    assert cache_target is not None
    cache_settings = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": cache_target.url,
            "KEY_PREFIX": prefix,
            "OPTIONS": cache_target.cache_options(),
        }
    }
    settings.REDIS_TARGETS = targets
    settings.HEALTHCHAT_SEND_LIMIT_PER_MINUTE = 1000
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = broker.kombu_transport_options()
    settings.CELERY_BROKER_URL = broker.kombu_url()
    settings.CELERY_TASK_ALWAYS_EAGER = False
    queue = Queue(f"{prefix}-q", Exchange(f"{prefix}-x"), routing_key="k")
    store = presence.RedisPresence(prefix)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(presence, "_store", store)

    def broker_round_trip() -> Any:
        with Connection(broker.kombu_url(), transport_options=broker.kombu_transport_options()) as conn:
            conn.ensure_connection(max_retries=1)
            with conn.Producer() as producer:
                producer.publish({"n": 1}, exchange=queue.exchange, routing_key="k", declare=[queue])
            message = queue(conn.default_channel).get(no_ack=True)
            return None if message is None else message.payload

    def readiness() -> int:
        return health.healthz(RequestFactory().get("/readyz")).status_code

    async def scenario() -> dict[str, float]:
        here = LocalFirstChannelLayer(hosts=[layer_host], prefix=prefix)
        there = LocalFirstChannelLayer(hosts=[layer_host], prefix=prefix)
        group = f"g{uuid.uuid4().hex}"
        watcher = await there.new_channel()
        await there.group_add(group, watcher)
        await here.group_send(group, {"type": "client.event", "n": 0})
        await here.published()
        assert (await asyncio.wait_for(there.receive(watcher), 5))["n"] == 0
        assert await store.connect(7_000_001, "c1") is True
        assert (await store.status([7_000_001]))[7_000_001][0] is True
        assert await send_limits.refusals([7_000_001]) == {}
        caches["default"].set("k", "before")
        assert await asyncio.to_thread(broker_round_trip) == {"n": 1}
        assert await asyncio.to_thread(readiness) == 200

        old_port = sentinel_set.master_address()[1]
        killed = sentinel_set.kill_master()
        promoted = await asyncio.to_thread(sentinel_set.wait_promoted, old_port)
        recovered: dict[str, float] = {"promotion": promoted - killed}

        # The subscription connection died: the layer subscribes again to the new master by
        # itself and tells its local sockets to sync.
        frame, took = await _until(lambda: asyncio.wait_for(there.receive(watcher), 0.5), 20)
        assert frame["frame"]["type"] == "sync.required", frame
        recovered["channel_layer_resubscribed"] = took

        async def live_event() -> dict[str, Any]:
            marker = uuid.uuid4().hex
            await here.group_send(group, {"type": "client.event", "marker": marker})
            await here.published()
            while True:
                got = await asyncio.wait_for(there.receive(watcher), 0.5)
                if got.get("marker") == marker:
                    return got

        _, recovered["channel_layer_publish"] = await _until(live_event, 20)
        _, recovered["presence"] = await _until(lambda: store.heartbeat_many([(7_000_001, "c1")]), 20)
        assert (await store.status([7_000_001]))[7_000_001][0] is True

        async def counted() -> Any:
            # fail-open hides errors: count until the new master has the counter
            await send_limits.refusals([7_000_001])
            key = send_limits._key(prefix, 7_000_001, int(time.time() // send_limits.WINDOW_SECONDS))
            assert sentinel_set.master_client(db=2).exists(key)

        _, recovered["send_limit"] = await _until(counted, 20)

        async def cache_write() -> None:
            await asyncio.to_thread(caches["default"].set, "k", "after")

        _, recovered["cache"] = await _until(cache_write, 20)
        assert caches["default"].get("k") == "after"

        async def broker_again() -> None:
            assert await asyncio.to_thread(broker_round_trip) == {"n": 1}

        _, recovered["broker"] = await _until(broker_again, 20)

        async def ready() -> None:
            assert await asyncio.to_thread(readiness) == 200

        _, recovered["readiness"] = await _until(ready, 20)
        await here.flush()
        await there.flush()
        return recovered

    try:
        with override_settings(CACHES=cache_settings):
            recovered = asyncio.run(scenario())
    finally:
        monkey.undo()
    # Each client on its own (no restart, no new settings) within a few seconds of the promotion.
    assert all(seconds < 15 for seconds in recovered.values()), recovered
    print(recovered)
