"""The bare reference relay: plain ``websockets``, no auth, no database, no channel layer.

Speaks just enough of ``/ws/v1/`` for ``bench/loadgen.py``: ``ready`` on connect, ``message.send``
→ ``message.new`` to the other sockets of the conversation (``?c=<conversation_id>`` on the URL),
then ``ack {message}`` to the sender; ``ping`` → ``pong``. ``python bench/relay.py --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve

rooms: dict[str, set[ServerConnection]] = defaultdict(set)
seqs: dict[str, int] = defaultdict(int)


async def handler(ws: ServerConnection) -> None:
    room = parse_qs(urlsplit(ws.request.path if ws.request else "").query).get("c", ["0"])[0]
    rooms[room].add(ws)
    try:
        await ws.send('{"type":"ready","data":{}}')
        async for text in ws:
            frame = json.loads(text)
            if frame.get("type") == "ping":
                await ws.send('{"type":"pong"}')
                continue
            data = frame["data"]
            seqs[room] += 1
            message = {"conversation_id": data["conversation_id"], "seq": seqs[room], **data}
            message["created_at"] = time.time()
            new = json.dumps({"type": "message.new", "data": {"message": message}}, separators=(",", ":"))
            for peer in list(rooms[room]):
                if peer is not ws:
                    await peer.send(new)
            await ws.send(json.dumps({"type": "ack", "ref": frame.get("ref"), "data": {"message": message}}))
    finally:
        rooms[room].discard(ws)


async def main(host: str, port: int, seconds: float) -> None:
    async with serve(handler, host, port, compression=None, ping_interval=None, backlog=4096):
        await asyncio.sleep(seconds)  # bounded: the benchmark stops it earlier with SIGTERM


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seconds", type=float, default=3600.0, help="exit after this long")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.host, args.port, args.seconds))
    except ImportError:  # pragma: no cover
        asyncio.run(main(args.host, args.port, args.seconds))
