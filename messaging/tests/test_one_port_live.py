"""Two server processes behind ONE port (SO_REUSEPORT, as uvicorn ``--workers`` or several
containers behind a balancer do): the kernel spreads the sockets over both processes and every
message reaches every device exactly once, in order, wherever sender and recipient landed."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from messaging.models import Message
from messaging.tests.factories import pair
from tests.live import free_port
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

PAIRS = 12
MESSAGES = 10


def _inodes(server_port: int, client_port: int | None) -> set[str]:
    """Socket inodes of the server side of connections from ``client_port`` (or of the
    listening sockets when None), from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        listening = fields[3] == "0A"
        if local_port == server_port and (
            listening if client_port is None else (not listening and remote_port == client_port)
        ):
            found.add(fields[9])
    return found


def _holder(server_pids: list[int], server_port: int, client_port: int | None) -> set[int]:
    """The server processes holding the connection from ``client_port`` (or listening)."""
    wanted = {f"socket:[{inode}]" for inode in _inodes(server_port, client_port)}
    holders = set()
    for pid in server_pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if fd.readlink().as_posix() in wanted:
                    holders.add(pid)
            except OSError:
                continue
    return holders


def test_two_processes_behind_one_port_deliver_everything_once_in_order(live_server_factory, make_token):
    port = free_port()
    servers = [live_server_factory(port=port), live_server_factory(port=port)]
    pids = [s.process.pid for s in servers]
    deadline = time.monotonic() + 30
    while _holder(pids, port, None) != set(pids):  # the second process is still starting
        assert time.monotonic() < deadline, "the second process never listened"
        time.sleep(0.2)
    people = [pair() for _ in range(PAIRS)]

    async def scenario() -> tuple[set[int], int]:
        clients = []
        for patient, doctor, conversation in people:
            a = await WsClient.connect(
                servers[0].ws_url, make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
            )
            b = await WsClient.connect(
                servers[0].ws_url, make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number)
            )
            clients.append((a, b, conversation))
        where = {id(c): _holder(pids, port, c.ws.local_address[1]) for a, b, _ in clients for c in (a, b)}
        assert all(len(h) == 1 for h in where.values())  # a connection lives in one process
        holders = set().union(*where.values())
        crossing = sum(1 for a, b, _ in clients if where[id(a)] != where[id(b)])

        async def converse(a: WsClient, b: WsClient, conversation_id: int) -> None:
            for i in range(MESSAGES):
                sender, receiver = (a, b) if i % 2 == 0 else (b, a)
                ack = await sender.send_message(conversation_id, f"m{i}", client_id=str(uuid.uuid4()))
                assert ack["type"] == "ack", ack
                got = await receiver.expect("message.new")
                assert got["data"]["message"]["seq"] == i + 1

        await asyncio.gather(*(converse(a, b, c.pk) for a, b, c in clients))
        for a, b, _ in clients:
            for c in (a, b):
                assert not [f for f in c.inbox if f.get("type") == "message.new"]  # nothing twice
                await c.close()
        return holders, crossing

    holders, crossing = asyncio.run(scenario())
    assert holders == set(pids), f"sockets did not spread over both processes: {holders}"
    assert crossing > 0
    for _patient, _doctor, conversation in people:
        seqs = list(
            Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True)
        )
        assert seqs == list(range(1, MESSAGES + 1))
