"""A publication Redis refuses is logged (and so reported to Sentry) without the events' text
(issue 21): redis-py quotes the failed ``PUBLISH`` command, the event's bytes decoded, in its
error; the layer's publication drain logs inside ``core.logs.hiding`` what it may quote.

A Redis of the test's own whose default user may not ``PUBLISH`` answers every publication
with a real ``NOPERM`` error."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.channel_layer import LocalFirstChannelLayer
from tests.sentry_ingest import CANARY_TEXT

LONG_TEXT = " ".join([CANARY_TEXT, "and", "more", "words", "of", "mine"] * 8)


@pytest.fixture
def no_publish_redis(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is needed for this test (apt-get install redis-server)"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            *("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-publish"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis.from_url(url).ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def event(text: str) -> dict[str, Any]:
    return {"type": "client.event", "frame": {"type": "typing", "data": {"text": text}}}


async def test_a_refused_publication_is_logged_without_the_events_text(
    no_publish_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    layer = LocalFirstChannelLayer(hosts=[no_publish_redis], prefix="t")
    with caplog.at_level(logging.DEBUG):
        # A short text is quoted whole; a long one cut after its first words.
        await layer.group_send_many([("g1", event(CANARY_TEXT))])
        await asyncio.wait_for(layer.published(), 10)
        await layer.group_send_many([("g1", event(LONG_TEXT))])
        await asyncio.wait_for(layer.published(), 10)
    failed = [r for r in caplog.records if r.getMessage() == "could not publish 1 events"]
    assert len(failed) == 2, caplog.text
    for record in failed:
        assert record.exc_text is not None
        # The real error, with redis-py's quote of the command hidden.
        # (the PUBLISH runs inside the layer's publish script: Redis refuses it there)
        assert (
            "NOPERM" in record.exc_text
            or "no permissions" in record.exc_text
            or "can't run this command" in record.exc_text
        ), record.exc_text
        assert "Command # 1 ([redacted]) of pipeline caused error" in record.exc_text, record.exc_text
    assert CANARY_TEXT.lower() not in caplog.text.lower(), caplog.text
