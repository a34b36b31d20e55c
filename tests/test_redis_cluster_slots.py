"""Redis Cluster readiness of every multi-key call: presence, send limits, prekey budgets and REST
throttles run against a real Redis in cluster mode (one node holding all 16,384 slots: it refuses
a script or a transaction whose declared keys span slots with CROSSSLOT), and Redis' MONITOR
shows that each script call declares every key it touches and that they map to one slot
(``redis.crc.key_slot``: what a Cluster client routes by). docs/redis.md#redis-cluster."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import RequestFactory, override_settings
from redis.crc import key_slot
from rest_framework.request import Request

from accounts import prekey_budget
from core import throttling
from core.redis_roles import RedisTarget
from messaging import presence, send_limits
from tests.live import free_port

USERS = list(range(8_100_000, 8_100_040))  # ids no factory hands out


class ClusterNode:
    """``redis-server --cluster-enabled yes`` owning every slot, and ``redis-cli monitor`` on it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (apt-get install redis-server)"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(tmp / "nodes.conf"),
            "--dir",
            str(tmp),
        ]
        # the cluster bus port (default: port + 10,000, past 65,535 for a high free port)
        args += ["--cluster-port", str(free_port())]
        self.server = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the cluster node did not start"
                time.sleep(0.05)
        while self.client.cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline, "the cluster node never reached cluster_state:ok"
            time.sleep(0.05)
        self.monitor_path = tmp / "monitor.log"
        self._monitor_log = self.monitor_path.open("wb")
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is needed (apt-get install redis-tools)"
        self.monitor = subprocess.Popen([cli, "-p", str(self.port), "monitor"], stdout=self._monitor_log)
        time.sleep(0.3)  # MONITOR attached

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def commands(self) -> list[tuple[str, list[str]]]:
        """Every command seen so far: (who: an address or "lua", [name, *args])."""
        time.sleep(0.3)  # the monitor's last lines
        out = []
        for line in self.monitor_path.read_text(errors="replace").splitlines():
            if "[" not in line or "]" not in line:
                continue
            who = line.split("[", 1)[1].split("]", 1)[0].split(" ", 1)[1]
            words = shlex.split(line.split("]", 1)[1])
            if words:
                out.append((who, [words[0].upper(), *words[1:]]))
        return out

    def stop(self) -> None:
        for process in (self.monitor, self.server):
            process.kill()
            process.wait(5)
        self._monitor_log.close()


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[ClusterNode]:
    node = ClusterNode(tmp_path)
    yield node
    node.stop()


def test_the_engine_refuses_cross_slot_scripts_and_transactions(cluster_node: ClusterNode) -> None:
    """The judge works: keys of two slots in one script call or one MULTI are refused."""
    a, b = "user:1", "user:2"
    assert key_slot(a.encode()) != key_slot(b.encode())
    with pytest.raises(redis.ResponseError, match="same slot"):
        cluster_node.client.eval("return 1", 2, a, b)
    pipe = cluster_node.client.pipeline(transaction=True)
    pipe.set(a, 1)
    pipe.set(b, 1)
    with pytest.raises(redis.RedisError, match="same slot"):
        pipe.execute()


# Commands the project's scripts run, and where their key is.
KEYED = {
    "ZADD",
    "EXPIRE",
    "PEXPIRE",
    "ZREMRANGEBYSCORE",
    "ZCARD",
    "ZREM",
    "ZRANGE",
    "INCR",
    "INCRBY",
    "GET",
    "TTL",
    "SET",
    "ZCOUNT",
}


def check_slots(commands: list[tuple[str, list[str]]]) -> dict[str, int]:
    """Each EVAL/EVALSHA's declared keys share a slot, and every key its script touches is one of
    them; each MULTI..EXEC of a client stays in one slot. Returns counts of what was checked."""
    scripts = multi_key_scripts = script_commands = 0
    declared: list[str] = []
    transactions: dict[str, list[str]] = {}
    for who, (name, *args) in commands:
        if name in ("EVAL", "EVALSHA"):
            numkeys = int(args[1])
            declared = args[2 : 2 + numkeys]
            slots = {key_slot(k.encode()) for k in declared}
            assert len(slots) <= 1, f"{name} over {len(slots)} slots: {declared[:5]}"
            scripts += 1
            multi_key_scripts += numkeys > 1
        elif who == "lua":
            if name in KEYED:
                assert args[0] in declared, f"a script touched {args[0]!r}, not among its keys {declared[:5]}"
                script_commands += 1
        elif name == "MULTI":
            transactions[who] = []
        elif name == "EXEC":
            keys = transactions.pop(who, [])
            assert len({key_slot(k.encode()) for k in keys}) <= 1, f"a transaction over slots: {keys[:5]}"
        elif who in transactions and name in KEYED:
            transactions[who].append(args[0])
    return {"scripts": scripts, "multi_key_scripts": multi_key_scripts, "script_commands": script_commands}


@pytest.mark.django_db
@pytest.mark.parametrize("slots", [1, 16])
def test_every_multi_key_call_stays_in_one_hash_slot(
    cluster_node: ClusterNode, settings: Any, slots: int
) -> None:
    settings.HEALTHCHAT_PRESENCE_KEY_SLOTS = slots
    settings.HEALTHCHAT_PRESENCE_TTL = 30
    settings.HEALTHCHAT_SEND_LIMIT_PER_MINUTE = 2
    settings.HEALTHCHAT_PREKEY_BUDGET_PER_PAIR = 1
    settings.HEALTHCHAT_PREKEY_BUDGET_PER_TARGET = 5
    target = RedisTarget(url=cluster_node.url)
    settings.REDIS_TARGETS = {**settings.REDIS_TARGETS, "presence": target, "cache": target}
    store = presence.RedisPresence(prefix="cluster")
    monkey = pytest.MonkeyPatch()
    monkey.setattr(presence, "_store", store)
    cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": cluster_node.url,
            "KEY_PREFIX": "cluster",
        }
    }

    async def presence_and_limits() -> None:
        entries = [(uid, f"c{uid}") for uid in USERS] + [(USERS[0], "second")]
        came_online = await store.connect_many(entries)
        assert came_online == [True] * len(USERS) + [False]  # a user twice comes online once
        await store.heartbeat_many(entries)
        status = await store.status(USERS)
        assert all(online for online, _ in status.values())
        assert await store.disconnect(USERS[0], "second") is False
        assert await store.disconnect(USERS[1], f"c{USERS[1]}") is True
        # 3 sends each against a limit of 2: the third of every user is refused. A CROSSSLOT
        # error would fail open (no refusal): the refusals prove the script ran.
        refusals = await send_limits.refusals([uid for uid in USERS for _ in range(3)])
        assert sorted(refusals) == [3 * i + 2 for i in range(len(USERS))]

    try:
        asyncio.run(presence_and_limits())
        with override_settings(CACHES=cache):
            # Prekey budgets: granted once per pair (an error would answer False: fail safe).
            assert prekey_budget.grant(requester_id=USERS[0], target_id=USERS[1]) is True
            assert prekey_budget.grant(requester_id=USERS[0], target_id=USERS[1]) is False
            assert prekey_budget.grant(requester_id=USERS[2], target_id=USERS[1]) is True
            # REST throttles (one key per call), counted on the node.
            request = Request(RequestFactory().get("/api/v1/anything", REMOTE_ADDR="10.9.8.7"))
            assert throttling.AnonRateThrottle().allow_request(request, None) is True
    finally:
        monkey.undo()
    counts = check_slots(cluster_node.commands())
    # Presence: the connect script per slot, heartbeat chunks, disconnects; send limits per slot;
    # prekey budgets twice... all seen, and some declared several keys.
    assert counts["scripts"] >= 6, counts
    assert counts["multi_key_scripts"] >= 3, counts
    assert counts["script_commands"] > len(USERS), counts
