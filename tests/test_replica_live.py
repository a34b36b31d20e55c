"""A streaming replica made by the test (``pg_basebackup`` of a private primary,
``tests/pgcluster.py``), lagging on purpose (``recovery_min_apply_delay``), behind two server
processes with ``DATABASE_REPLICA_URL`` set (``core/replica.py``).

- History pages and the doctor directory are read on the replica: a reader who has not written
  sees someone else's new message only once the replica applied it (the lag is real, and the
  replica is really read).
- Read your writes: a user who just sent on one process and reads history on the other at once
  always finds their own message, on every try (their reads stay on the primary for the window).
- ``sync`` never reads the replica: a message is in the other member's ``sync`` at once.
- A read that only lag can refuse (a conversation created a moment ago, its membership not
  replicated yet) is asked again of the primary: 200, never a false 404.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from conftest import PROJECT_ID, TokenMinter
from tests.live import ROOT, ServerProcess, free_port, uvicorn_args
from tests.pgcluster import PrivatePostgres, private_postgres
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live]

DB = "hc_replica"
DELAY = 1.5  # seconds the replica applies the primary's changes late
LONG_DELAY = 4.0  # the same, for the test of reads right after a creation
STICKY = 4.0  # DATABASE_REPLICA_STICKY_SECONDS: above the lag
ROUNDS = 12

# Test data written on the primary with the project's factories (the test process's own
# database is pytest-django's, not this cluster's).
MAKE_PAIRS = """
import json, sys, time, django
django.setup()
from messaging.tests.factories import pair
out = []
for _ in range(int(sys.argv[1])):
    patient, doctor, conversation = pair()
    out.append({"conversation": conversation.pk, "committed_at": time.time(), "users": [
        {"id": u.pk, "uid": u.firebase_uid, "phone": u.phone_number} for u in (patient, doctor)]})
print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[PrivatePostgres, PrivatePostgres]]:
    with private_postgres(60) as primary:
        primary.create_database(DB)
        replica = primary.replica()
        try:
            replica.set_apply_delay(f"{int(DELAY * 1000)}ms")
            yield primary, replica
        finally:
            replica.stop()


def make_pairs(primary: PrivatePostgres, count: int) -> list[dict[str, Any]]:
    """New pairs on the primary; returns as soon as the script printed them (its interpreter's
    exit, seconds on a loaded machine, is not waited for)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "healthchat.settings.test",
        "DATABASE_URL": primary.url(DB),
        "DATABASE_POOL_MAX_SIZE": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", MAKE_PAIRS, str(count)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(60)
        raise AssertionError(process.stderr.read()[-3000:] if process.stderr else "no output")
    threading.Thread(target=process.communicate, daemon=True).start()  # reaped in the background
    pairs: list[dict[str, Any]] = json.loads(line)
    return pairs


@pytest.fixture(scope="module")
def servers(
    clusters: tuple[PrivatePostgres, PrivatePostgres], token_minter: TokenMinter, tmp_path_factory: Any
) -> Iterator[list[ServerProcess]]:
    from django.conf import settings as dj_settings

    primary, replica = clusters
    prefix = dj_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="healthchat.settings.test",
        DATABASE_URL=primary.url(DB),
        DATABASE_REPLICA_URL=replica.url(DB),
        DATABASE_REPLICA_STICKY_SECONDS=str(STICKY),
        DATABASE_POOL_MAX_SIZE="4",
        REDIS_URL=dj_settings.REDIS_URL or "redis://127.0.0.1:6379/0",
        CHANNEL_LAYER_PREFIX=prefix,
        CACHE_KEY_PREFIX=prefix,
        HC_TEST_FIREBASE_CERTS=token_minter.certs_json(),
        FIREBASE_PROJECT_ID=PROJECT_ID,
    )
    tmp = tmp_path_factory.mktemp("replica")
    started: list[ServerProcess] = []
    try:
        for index in range(2):
            port = free_port()
            started.append(
                ServerProcess(uvicorn_args(port, boot=True), env, port, tmp / f"server-{index}.log")
            )
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


def token(token_minter: TokenMinter, user: dict[str, Any]) -> str:
    return token_minter.mint(uid=user["uid"], phone_number=user["phone"])


def history(server: ServerProcess, bearer: str, conversation_id: int) -> requests.Response:
    return requests.get(
        f"{server.base_url}/api/v1/conversations/{conversation_id}/messages?limit=200",
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=10,
    )


def test_lag_is_real_but_a_writer_always_reads_its_own_message(
    clusters: tuple[PrivatePostgres, PrivatePostgres], servers: list[ServerProcess], token_minter: TokenMinter
) -> None:
    s1, s2 = servers
    (item,) = make_pairs(clusters[0], 1)
    conversation = item["conversation"]
    patient, doctor = item["users"]
    patient_token, doctor_token = token(token_minter, patient), token(token_minter, doctor)
    time.sleep(DELAY + 0.5)  # the pair replicated
    outcomes: dict[str, list[bool]] = {"own": [], "other_at_once": [], "other_later": [], "sync": []}

    async def scenario() -> None:
        a = await WsClient.connect(s1.ws_url, patient_token)
        b = await WsClient.connect(s1.ws_url, doctor_token)
        for round_ in range(ROUNDS):
            ack = await a.send_message(conversation, f"round {round_}")
            assert ack["type"] == "ack", ack
            sent = ack["data"]["message"]["id"]
            # The sender reads history on the other process at once: its own message is there.
            own = await asyncio.to_thread(history, s2, patient_token, conversation)
            assert own.status_code == 200, own.text
            outcomes["own"].append(sent in {m["id"] for m in own.json()["results"]})
            # The other member, who has not written, reads the replica: not there yet.
            other = await asyncio.to_thread(history, s2, doctor_token, conversation)
            assert other.status_code == 200, other.text
            outcomes["other_at_once"].append(sent in {m["id"] for m in other.json()["results"]})
            # ... while its sync (the primary, always) has it at once.
            frames, _cursor, _more = await b.sync()
            outcomes["sync"].append(
                sent in {f["data"]["message"]["id"] for f in frames if f["type"] == "message.new"}
            )
        await asyncio.sleep(DELAY + 0.5)
        later = await asyncio.to_thread(history, s2, doctor_token, conversation)
        ids = [m["id"] for m in later.json()["results"]]
        outcomes["other_later"].append(len(ids) == ROUNDS)
        for client in (a, b):
            await client.close()

    asyncio.run(scenario())
    assert all(outcomes["own"]), outcomes  # read your writes: never missing
    assert all(outcomes["sync"]), outcomes  # sync: the primary
    # The replica was read, and lagged: the non-writer missed most new messages at first ...
    assert sum(outcomes["other_at_once"]) <= ROUNDS // 2, outcomes
    assert outcomes["other_later"] == [True], outcomes  # ... and saw them all once applied.
    logs = s1.log() + s2.log()
    assert "Traceback" not in logs, logs[-3000:]


def test_a_read_only_lag_can_refuse_is_asked_again_of_the_primary(
    clusters: tuple[PrivatePostgres, PrivatePostgres], servers: list[ServerProcess], token_minter: TokenMinter
) -> None:
    _s1, s2 = servers
    primary, replica = clusters
    replica.set_apply_delay(f"{int(LONG_DELAY * 1000)}ms")  # room for a slow machine's requests
    try:
        (item,) = make_pairs(primary, 1)  # just created: not on the replica yet
        patient, doctor = item["users"]
        bearer = token(token_minter, patient)

        def get(path: str) -> requests.Response:
            return requests.get(
                f"{s2.base_url}/api/v1/{path}", headers={"Authorization": f"Bearer {bearer}"}, timeout=10
            )

        # The doctor directory is read on the replica: a doctor made a moment ago is not listed
        # yet; the detail page and the new conversation's history fall back to the primary.
        listed = get("doctors?limit=100")
        detail = get(f"doctors/{doctor['id']}")
        answer = get(f"conversations/{item['conversation']}/messages")
        age = time.time() - item["committed_at"]
        print("replica test: reads done", round(age, 2), "s after the commit")
        for response in (listed, detail, answer):
            assert response.status_code == 200, response.text
        assert answer.json()["results"] == []
        assert detail.json()["id"] == doctor["id"]
        assert age < LONG_DELAY, f"the reads came {age:.1f} s after the commit: the machine is too slow"
        assert doctor["id"] not in {d["id"] for d in listed.json()["results"]}
        # Once the replica applied it, the directory lists the doctor.
        deadline = time.monotonic() + LONG_DELAY + 10
        while doctor["id"] not in {d["id"] for d in get("doctors?limit=100").json()["results"]}:
            assert time.monotonic() < deadline, "the replica never applied the new doctor"
            time.sleep(0.2)
    finally:
        replica.set_apply_delay(f"{int(DELAY * 1000)}ms")


def test_a_replica_that_is_down_costs_a_short_wait_then_nothing(
    clusters: tuple[PrivatePostgres, PrivatePostgres], servers: list[ServerProcess], token_minter: TokenMinter
) -> None:
    """The replica stopped (the last test of the module): lag-tolerant reads are answered by the
    primary, the first after at most the replica's connection timeout, the next ones at once
    (the process leaves the replica alone for a while)."""
    primary, replica = clusters
    (item,) = make_pairs(primary, 1)
    patient, _doctor = item["users"]
    bearer = token(token_minter, patient)
    replica.stop()
    timings = []
    for server in servers:
        for _ in range(2):
            started = time.monotonic()
            answer = history(server, bearer, item["conversation"])
            timings.append(time.monotonic() - started)
            assert answer.status_code == 200, answer.text
            assert answer.json()["results"] == []
    # DATABASE_REPLICA_POOL_TIMEOUT (2 s) at most for the first read of each process, plus a
    # loaded machine's slack; the second read of each process does not try the replica.
    assert max(timings) < 8, timings
    logs = "".join(server.log() for server in servers)
    assert logs.count("replica: read failed") <= len(servers), logs[-3000:]
    print("replica down: read times", [round(t, 2) for t in timings])
