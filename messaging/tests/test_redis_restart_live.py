"""Redis restarted mid-conversation: after reconnect + sync, every acked message exactly once, in order."""

import asyncio
import contextlib
import shutil
import subprocess
import time

import pytest
import redis

from messaging.models import Message
from messaging.tests.factories import pair
from tests.live import free_port
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


class OwnRedis:
    def __init__(self, port: int, tmp) -> None:
        self.port = port
        self.tmp = tmp
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for this test (apt-get install redis-server)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("own redis did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    r = OwnRedis(free_port(), tmp_path_factory.mktemp("redis"))
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def servers(live_server_factory, own_redis):
    env = {"REDIS_URL": own_redis.url, "CELERY_BROKER_URL": own_redis.url}
    return live_server_factory(env), live_server_factory(env)


def token_for(make_token, user):
    return make_token(uid=user.firebase_uid, phone_number=user.phone_number)


async def connect_retrying(url, token, attempts=50):
    for _ in range(attempts):
        try:
            return await WsClient.connect(url, token)
        except Exception:
            await asyncio.sleep(0.2)
    raise RuntimeError("could not reconnect")


def test_redis_restart_loses_no_acked_message(servers, own_redis, make_token):
    s1, s2 = servers
    patient, doctor, conversation = pair()
    acked: list[int] = []

    async def scenario():
        a = await WsClient.connect(s1.ws_url, token_for(make_token, patient))
        b = await WsClient.connect(s2.ws_url, token_for(make_token, doctor))
        _, cursor, _ = await b.sync()
        for i in range(10):
            ack = await a.send_message(conversation.pk, f"before {i}")
            acked.append(ack["data"]["message"]["seq"])
        own_redis.stop()
        # While Redis is down, sends still commit to PostgreSQL and are acked.
        for i in range(10):
            try:
                ack = await a.send_message(conversation.pk, f"during {i}")
            except Exception:
                break
            if ack["type"] == "ack":
                acked.append(ack["data"]["message"]["seq"])
        own_redis.start()
        for c in (a, b):
            with contextlib.suppress(Exception):
                await c.close()
        a = await connect_retrying(s1.ws_url, token_for(make_token, patient))
        for i in range(10):
            ack = await a.send_message(conversation.pk, f"after {i}")
            acked.append(ack["data"]["message"]["seq"])
        b = await connect_retrying(s2.ws_url, token_for(make_token, doctor))
        seen: list[int] = []
        more = True
        while more:
            frames, cursor, more = await b.sync(cursor)
            seen.extend(f["data"]["message"]["seq"] for f in frames if f["type"] == "message.new")
        assert seen == sorted(acked), (seen, acked)
        assert len(seen) == len(set(seen))
        # Live delivery works again after the restart.
        await a.send_message(conversation.pk, "live again")
        assert await b.expect("message.new", lambda f: f["data"]["message"]["body"] == "live again")
        await a.close()
        await b.close()

    asyncio.run(scenario())
    seqs = list(
        Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True)
    )
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(acked) >= 20
