"""A real Redis Sentinel set-up on free loopback ports for tests and benches: a master, a replica
and three sentinels (Debian's redis-server / redis-sentinel, started here with their own data
directories; never the shared 6379), and a helper to kill the master and wait for the promotion."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from tests.live import free_port

MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    assert path, f"{name} is needed (apt-get install redis-server redis-sentinel; make redis-sentinel)"
    return path


class SentinelSet:
    """``start()`` then ``env()`` for the processes under test; ``kill_master()`` then
    ``wait_promoted()``; ``stop()`` ends every engine it started."""

    def __init__(self, tmp: Path, sentinels: int = 3) -> None:
        self.tmp = tmp
        self.master_port = free_port()
        self.replica_port = free_port()
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # --- engines ------------------------------------------------------------------------------
    def _redis(self, name: str, port: int, *extra: str) -> None:
        data = self.tmp / name
        data.mkdir(exist_ok=True)
        args = [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        args += ["--dir", str(data), "--logfile", str(data / "redis.log"), *extra]
        self.processes[name] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _sentinel(self, index: int, port: int) -> None:
        data = self.tmp / f"sentinel{index}"
        data.mkdir(exist_ok=True)
        conf = data / "sentinel.conf"  # rewritten by the sentinel (it must be writable)
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {data}\nlogfile {data / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.processes[f"sentinel{index}"] = subprocess.Popen(
            [_binary("redis-sentinel"), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def start(self, timeout: float = 30.0) -> None:
        self._redis("master", self.master_port)
        self._redis("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for index, port in enumerate(self.sentinel_ports):
            self._sentinel(index, port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"sentinel set-up not ready after {timeout}s (logs under {self.tmp})")

    def _ready(self) -> bool:
        try:
            replica = redis.Redis(host="127.0.0.1", port=self.replica_port, socket_timeout=1).info(
                "replication"
            )
            if replica.get("master_link_status") != "up":
                return False
            for port in self.sentinel_ports:
                state: Any = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).sentinel_master(
                    MASTER_NAME
                )
                # every sentinel sees the replica and the two other sentinels
                if (
                    int(state["num-slaves"]) < 1
                    or int(state["num-other-sentinels"]) < len(self.sentinel_ports) - 1
                ):
                    return False
            return True
        except redis.RedisError:
            return False

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(5)

    # --- what the processes under test are given ----------------------------------------------
    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def env(self, db: int = 0) -> dict[str, str]:
        """Every role behind Sentinel (``REDIS_URL`` gives only the database number)."""
        return {
            "REDIS_URL": f"redis://{MASTER_NAME}/{db}",
            "REDIS_SENTINELS": self.sentinels,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "CELERY_BROKER_URL": "",
        }

    # --- the fault ----------------------------------------------------------------------------
    def master_address(self) -> tuple[str, int]:
        for port in self.sentinel_ports:
            try:
                answer: Any = redis.Redis(
                    host="127.0.0.1", port=port, socket_timeout=1
                ).sentinel_get_master_addr_by_name(MASTER_NAME)
                host, master_port = answer
                return host.decode() if isinstance(host, bytes) else str(host), int(master_port)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def kill_master(self) -> float:
        """``kill -9`` of the current master; returns when it was killed (time.monotonic())."""
        port = self.master_address()[1]
        name = "master" if port == self.master_port else "replica"
        self.processes[name].kill()
        killed = time.monotonic()
        self.processes[name].wait(5)
        return killed

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> float:
        """Until every sentinel names another master that answers as one; returns that moment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                answers: list[Any] = [
                    redis.Redis(host="127.0.0.1", port=p, socket_timeout=1).sentinel_get_master_addr_by_name(
                        MASTER_NAME
                    )
                    for p in self.sentinel_ports
                ]
                ports = {int(answer[1]) for answer in answers}
                if len(ports) == 1 and old_port not in ports:
                    new = redis.Redis(host="127.0.0.1", port=ports.pop(), socket_timeout=1)
                    if new.info("replication")["role"] == "master":
                        return time.monotonic()
            except (redis.RedisError, TypeError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no replica was promoted within {timeout}s (logs under {self.tmp})")

    def master_client(self, db: int = 0) -> redis.Redis:
        host, port = self.master_address()
        return redis.Redis(host=host, port=port, db=db, socket_timeout=5)
