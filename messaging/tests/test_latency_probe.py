"""The benchmarks' latency probe (``core/latency_probe.py``): off unless
``HEALTHCHAT_LATENCY_PROBE`` names a path; on, a batch of sends on the event loop leaves its
sends' ids and submit times and its round trips' ends in order, the collector's passes are
kept, and no message text is written."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from core import latency_probe
from messaging import batching
from messaging.tests.factories import pair, send_item, send_together

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_probe_is_off_by_default() -> None:
    assert settings.HEALTHCHAT_LATENCY_PROBE == ""
    assert latency_probe.install_from_settings() is False
    assert not latency_probe.enabled()
    assert latency_probe.start_batch([]) is None


async def test_a_batch_on_the_loop_leaves_its_times(tmp_path: Path, queued_pushes: list[list[int]]) -> None:
    patient, _doctor, conversation = await sync_to_async(pair)()
    batcher = batching.SendBatcher()
    await send_together(batcher, [send_item(patient, conversation.pk, "warm")])  # before the probe
    assert latency_probe.install(str(tmp_path / "probe"))
    try:
        items = [send_item(patient, conversation.pk, f"secret text {i}") for i in range(3)]
        for item in items:
            latency_probe.submitted(item)
        results = await send_together(batcher, items)
        gc.collect()
        latency_probe.write()
    finally:
        latency_probe.uninstall()
        await batcher.close()
    assert [r.data["seq"] for r in results] == [2, 3, 4]
    text = (tmp_path / f"probe.{os.getpid()}").read_text()
    assert "secret text" not in text  # ids and times only
    data = json.loads(text)
    (batch,) = data["batches"]
    assert batch["ids"] == [str(item.client_id) for item in items]
    t = batch["t"]
    assert 0 < max(batch["submitted"]) <= t["start"]
    assert t["start"] <= t["rt1"] <= t["limit"] <= t["commit"] <= t["written"] <= t["published"]
    assert "thread" not in t  # written on the loop
    assert any(generation == 2 for _start, _duration, generation, _collected in data["gc"])
    assert not latency_probe.enabled()
