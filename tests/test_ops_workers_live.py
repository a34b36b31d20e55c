"""``healthchat_sockets_open`` under several uvicorn workers (issue 21): the gauge is
prometheus-client's ``livesum``, and a worker that is killed (SIGKILL: no exit hook runs) stops
counting, because ``/metrics`` forgets the files of processes that no longer run
(``core.metrics.forget_dead_processes``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "metrics-" + uuid.uuid4().hex
SOCKETS = 12


def sockets_open(server: Any) -> float:
    scraped = requests.get(
        f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert scraped.status_code == 200, scraped.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name == "healthchat_sockets_open"
    )


def open_by_process(directory: Path) -> dict[int, float]:
    """What each process's own file of the gauge holds (pid → its open sockets)."""
    found: dict[int, float] = {}
    for path in directory.glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if '"healthchat_sockets_open"' in key:
                found[pid] = found.get(pid, 0.0) + value
    return found


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_a_killed_worker_stops_counting_its_sockets(live_server_factory, tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    server = live_server_factory(
        {
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "METRICS_TOKEN": METRICS_TOKEN,
            "HEALTHCHAT_WS_AUTH_TIMEOUT": "300",  # the sockets stay open, unauthenticated
        },
        workers=2,
    )

    async def scenario() -> None:
        clients = [await WsClient.connect(server.ws_url, wait_ready=False) for _ in range(SOCKETS)]
        wait_for(lambda: sockets_open(server) == SOCKETS, "every socket counted")
        counts = wait_for(
            lambda: {pid: n for pid, n in open_by_process(multiproc).items() if n > 0}, "a worker's file"
        )
        assert sum(counts.values()) == SOCKETS, counts
        # The worker holding the most sockets dies without a chance to clean up.
        victim, lost = max(counts.items(), key=lambda item: item[1])
        assert victim != server.process.pid  # a worker, not uvicorn's supervisor
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: sockets_open(server) == SOCKETS - lost, f"{lost} sockets of pid {victim} forgotten")
        assert not (multiproc / f"gauge_livesum_{victim}.db").exists()
        # The other worker's sockets still count, and stay open.
        await asyncio.sleep(1.0)
        assert sockets_open(server) == SOCKETS - lost
        for client in clients:
            with contextlib.suppress(Exception):  # the killed worker's sockets are already gone
                await client.close()
        wait_for(lambda: sockets_open(server) == 0, "the survivors' sockets closed")

    asyncio.run(scenario())
