"""A small real WebSocket client for tests (the `websockets` library).

Every frame it receives is validated against its model (``messaging.frames``): each live test
checks that the server sends only what the contract describes."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable
from typing import Any

import websockets

from messaging.frames import validate_server_frame

_refs = itertools.count(1)
SYNC_TYPES = (
    "message.new",
    "message.updated",
    "receipt",
    "member.added",
    "member.removed",
    "member.left",
    "member.role_changed",
    "group.updated",
    "identity.changed",
    "device.added",
    "reaction.added",
    "reaction.removed",
    "message.pinned",
    "message.unpinned",
)


class WsClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.ready: dict[str, Any] | None = None  # the ``ready`` frame (its reconnect hint)

    @classmethod
    async def connect(
        cls,
        url: str,
        token: str | None = None,
        device_id: int | None = None,
        wait_ready: bool = True,
        **kwargs: Any,
    ) -> WsClient:
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if device_id is not None:
            headers["X-Device-Id"] = str(device_id)
        ws = await websockets.connect(url, additional_headers=headers, max_size=2**22, **kwargs)
        client = cls(ws)
        if token and wait_ready:
            client.ready = await client.expect("ready")
        return client

    async def send(self, type_: str, data: dict[str, Any] | None = None, ref: str | None = None) -> str:
        ref = ref or f"r{next(_refs)}"
        frame: dict[str, Any] = {"type": type_, "ref": ref}
        if data is not None:
            frame["data"] = data
        await self.ws.send(json.dumps(frame))
        return ref

    async def send_raw(self, payload: str | bytes) -> None:
        await self.ws.send(payload)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        validate_server_frame(frame)  # pydantic's ValidationError names the field that drifted
        return frame

    async def expect(
        self, type_: str, pred: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first frame of ``type_`` (and matching ``pred``), from the inbox or the socket."""
        for i, frame in enumerate(self.inbox):
            if frame.get("type") == type_ and (pred is None or pred(frame)):
                return self.inbox.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {type_} frame within {timeout}s; inbox: {self.inbox[-5:]}")
            frame = await self.recv(remaining)
            if frame.get("type") == type_ and (pred is None or pred(frame)):
                return frame
            self.inbox.append(frame)

    async def reply(self, ref: str, timeout: float = 5.0) -> dict[str, Any]:
        """The ack or error carrying ``ref``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for i, frame in enumerate(self.inbox):
            if frame.get("ref") == ref and frame.get("type") in (
                "ack",
                "error",
                "pong",
                "sync.done",
                "ready",
            ):
                return self.inbox.pop(i)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {ref} within {timeout}s; inbox: {self.inbox[-5:]}")
            frame = await self.recv(remaining)
            if frame.get("ref") == ref and frame.get("type") in (
                "ack",
                "error",
                "pong",
                "sync.done",
                "ready",
            ):
                return frame
            self.inbox.append(frame)

    async def request(
        self, type_: str, data: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        return await self.reply(await self.send(type_, data), timeout)

    async def send_message(
        self, conversation_id: int, body: str, client_id: str | None = None
    ) -> dict[str, Any]:
        return await self.request(
            "message.send",
            {"conversation_id": conversation_id, "client_id": client_id or str(uuid.uuid4()), "body": body},
        )

    async def sync(
        self, cursor: str | None = None, timeout: float = 10.0
    ) -> tuple[list[dict[str, Any]], str, bool]:
        """Run ``sync`` to completion of one batch: (frames, cursor, more)."""
        ref = await self.send("sync", {"cursor": cursor} if cursor else {})
        frames: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(deadline - loop.time())
            if frame.get("type") == "sync.done" and frame.get("ref") == ref:
                return frames, frame["data"]["cursor"], frame["data"]["more"]
            if frame.get("type") in SYNC_TYPES:
                frames.append(frame)
            else:
                self.inbox.append(frame)

    async def close(self) -> None:
        await self.ws.close()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code
