"""The one WebSocket (``/ws/v1/``): authenticate, parse, dispatch, reply. No domain logic here."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from accounts import ws_auth
from accounts.models import User
from healthchat.errors import ApplicationError
from healthchat.realtime import presence_group, run_service, user_group

from . import presence, protocol
from .handlers import DISCONNECT_HOOKS, HANDLERS

logger = logging.getLogger("healthchat.ws")

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_FLOOD = 4429
CLOSE_INTERNAL_ERROR = 1011
FLOOD_WARNINGS_BEFORE_CLOSE = 10


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None


class ChatConsumer(AsyncWebsocketConsumer):
    user: User | None
    device_id: int | None

    async def connect(self) -> None:
        origin = _header(self.scope, b"origin")
        if origin is not None and origin not in settings.HEALTHCHAT_WS_ALLOWED_ORIGINS:
            await self.close(code=CLOSE_FORBIDDEN)  # browsers only; native apps send no Origin
            return
        self.user = None
        self.device_id = None
        self.conn_id = uuid.uuid4().hex
        self.token_exp = 0
        self.presence_watch: set[int] = set()
        self.tasks: list[asyncio.Task[Any]] = []
        self.bucket = TokenBucket(settings.HEALTHCHAT_WS_RATE, settings.HEALTHCHAT_WS_BURST)
        self.typing_bucket = TokenBucket(2.0, 5.0)
        self.flood_warnings = 0
        self.expiry_task: asyncio.Task[Any] | None = None
        await self.accept()
        authorization = _header(self.scope, b"authorization")
        device_header = _header(self.scope, b"x-device-id")
        if authorization and authorization.lower().startswith("bearer "):
            device_id = (
                int(device_header)
                if device_header and device_header.isascii() and device_header.isdigit()
                else None
            )
            await self.authenticate(authorization[7:].strip(), device_id, ref=None)
        else:
            self.tasks.append(asyncio.create_task(self._auth_deadline()))

    # --- authentication ---------------------------------------------------------------------
    async def authenticate(self, token: str, device_id: int | None, ref: str | None) -> None:
        try:
            user, verified, device = await run_service(
                ws_auth.authenticate_socket, token=token, device_id=device_id
            )
        except ApplicationError as exc:
            await self.send_error(exc.code, exc.message, ref)
            await self.close(code=CLOSE_FORBIDDEN if exc.status == 403 else CLOSE_UNAUTHORIZED)
            return
        except Exception:
            logger.exception("socket authentication failed")
            await self.send_error("internal_error", "An internal error occurred.", ref)
            await self.close(code=CLOSE_INTERNAL_ERROR)
            return
        self.user, self.device_id = user, device
        self._schedule_expiry(verified.expires_at)
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        try:
            came_online = await presence.store().connect(user.pk, self.conn_id)
        except Exception:  # presence is best-effort: messaging works without it
            logger.warning("presence register failed", exc_info=True)
            came_online = False
        if came_online:
            await self._announce_presence(True, None)
        self.tasks.append(asyncio.create_task(self._heartbeat()))
        await self.send_frame(
            {"type": "ready", "ref": ref, "data": {"user_id": user.pk, "device_id": device}}
        )

    def _schedule_expiry(self, exp: int) -> None:
        self.token_exp = exp
        if self.expiry_task is not None:
            self.expiry_task.cancel()
        self.expiry_task = asyncio.create_task(self._expire_at(exp))

    async def _expire_at(self, exp: int) -> None:
        await asyncio.sleep(max(0.0, exp - time.time()))
        if self.token_exp == exp:
            await self.send_error("token_expired", "The token expired; reconnect with a new one.", None)
            await self.close(code=CLOSE_UNAUTHORIZED)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(settings.HEALTHCHAT_WS_AUTH_TIMEOUT)
        if self.user is None:
            await self.send_error("auth_timeout", "Send an auth frame within 10 seconds.", None)
            await self.close(code=CLOSE_UNAUTHORIZED)

    async def refresh(self, token: str) -> dict[str, Any]:
        assert self.user is not None
        verified = await run_service(ws_auth.reverify_socket, token=token, user_id=self.user.pk)
        self._schedule_expiry(verified.expires_at)
        return {"expires_at": verified.expires_at}

    # --- presence ---------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(presence.heartbeat_interval())
            if self.user is not None:
                try:
                    await presence.store().heartbeat(self.user.pk, self.conn_id)
                except Exception:
                    logger.warning("presence heartbeat failed", exc_info=True)

    async def _announce_presence(self, online: bool, last_seen: float | None) -> None:
        assert self.user is not None
        frame = presence.presence_frame(self.user.pk, online, last_seen)
        await self.channel_layer.group_send(
            presence_group(self.user.pk), {"type": "client.event", "frame": frame}
        )

    async def watch_presence(self, user_ids: list[int]) -> None:
        for uid in user_ids:
            if uid not in self.presence_watch:
                self.presence_watch.add(uid)
                await self.channel_layer.group_add(presence_group(uid), self.channel_name)

    async def disconnect(self, code: int) -> None:
        for task in [*getattr(self, "tasks", []), getattr(self, "expiry_task", None)]:
            if task is not None:
                task.cancel()
        user = getattr(self, "user", None)
        if user is None:
            return
        await self.channel_layer.group_discard(user_group(user.pk), self.channel_name)
        for uid in self.presence_watch:
            await self.channel_layer.group_discard(presence_group(uid), self.channel_name)
        try:
            if await presence.store().disconnect(user.pk, self.conn_id):
                await self._announce_presence(False, time.time())
        except Exception:
            logger.warning("presence disconnect failed", exc_info=True)
        for hook in DISCONNECT_HOOKS:
            try:
                await hook(self)
            except Exception:
                logger.warning("disconnect hook failed", exc_info=True)

    # --- frames in ----------------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.bucket.take():
            await self._flooded(text_data)
            return
        if text_data is None:
            await self.send_error("binary_not_supported", "Send JSON text frames.", None)
            return
        if len(text_data) > settings.HEALTHCHAT_WS_MAX_FRAME_BYTES:
            await self.send_error("frame_too_large", "The frame is too large.", None)
            return
        try:
            frame = protocol.parse(text_data)
        except ApplicationError as exc:
            await self.send_error(exc.code, exc.message, exc.extra.get("ref"), exc.fields)
            return
        ref = frame.ref
        if frame.type == "auth":
            if self.user is not None:
                await self.send_error("already_authenticated", "This socket is already authenticated.", ref)
                return
            await self.authenticate(frame.data.token, frame.data.device_id, ref)
            return
        if self.user is None:
            await self.send_error("not_authenticated", "Authenticate first (auth frame).", ref)
            return
        if frame.type == "typing" and not self.typing_bucket.take():
            await self.send_error("rate_limited", "Too many typing frames.", ref)
            return
        try:
            reply = await HANDLERS[frame.type](self, frame)
        except ApplicationError as exc:
            await self.send_error(exc.code, exc.message, ref, exc.fields, **exc.extra)
            return
        except Exception:
            logger.exception("socket handler failed for %s", frame.type)
            await self.send_error("internal_error", "An internal error occurred.", ref)
            return
        if reply is not None:
            await self.send_frame({"type": "ack", "ref": ref, "data": reply})

    async def _flooded(self, text_data: str | None) -> None:
        self.flood_warnings += 1
        if self.flood_warnings > FLOOD_WARNINGS_BEFORE_CLOSE:
            await self.close(code=CLOSE_FLOOD)
            return
        await self.send_error("rate_limited", "Slow down.", protocol.peek_ref(text_data))

    # --- frames out ---------------------------------------------------------------------------
    async def send_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("ref", "") is None:
            frame = {k: v for k, v in frame.items() if k != "ref"}
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def send_error(
        self, code: str, message: str, ref: str | None, fields: Any = None, **extra: Any
    ) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if fields:
            error["fields"] = fields
        error.update({k: v for k, v in extra.items() if k != "ref"})
        frame: dict[str, Any] = {"type": "error", "error": error}
        if ref is not None:
            frame["ref"] = ref
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, minus its per-message ``aclose_old_connections`` thread hop:
        no handler here touches the database except through ``run_service``, which closes
        stale connections in the thread that uses them."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- channel-layer events -----------------------------------------------------------------
    async def client_event(self, event: dict[str, Any]) -> None:
        if event.get("exclude_channel") == self.channel_name:
            return
        target = event.get("device_id")
        if target is not None and target != self.device_id:
            return  # for another device of this user (e.g. keys.low)
        frame = event["frame"]
        ciphertexts = event.get("ciphertexts")
        if ciphertexts is not None:
            # An end-to-end encrypted message: this socket's device gets its own copy only.
            own = ciphertexts.get(str(self.device_id)) if self.device_id is not None else None
            message = {**frame["data"]["message"], "ciphertext": own}
            frame = {**frame, "data": {**frame["data"], "message": message}}
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def session_terminate(self, event: dict[str, Any]) -> None:
        await self.close(code=int(event.get("code", CLOSE_FORBIDDEN)))
