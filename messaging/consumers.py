"""The one WebSocket (``/ws/v1/``): authenticate, parse, dispatch, reply. No domain logic here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from accounts import ws_auth
from accounts.models import User
from audit.services import arecord_socket_denial
from core import batcher, eager, log_context, logs, metrics, replica
from core.channel_layer import Inbox
from core.errors import ApplicationError
from core.realtime import presence_group, run_service, user_group

from . import frames, presence, protocol
from .handlers import DISCONNECT_HOOKS, HANDLERS, READ_ONLY_FRAMES

logger = logging.getLogger("healthchat.ws")

# Close codes: documented in ``frames.CLOSE_CODES`` (and so in docs/asyncapi.yaml).
CLOSE_UNAUTHORIZED = frames.CLOSE_UNAUTHORIZED
CLOSE_FORBIDDEN = frames.CLOSE_FORBIDDEN
CLOSE_FLOOD = frames.CLOSE_FLOOD
CLOSE_IDLE = frames.CLOSE_IDLE
CLOSE_INTERNAL_ERROR = frames.CLOSE_INTERNAL_ERROR
CLOSE_TRY_AGAIN_LATER = frames.CLOSE_TRY_AGAIN_LATER
FLOOD_WARNINGS_BEFORE_CLOSE = 10


class AdmissionGate:
    """Sockets of this process authenticating right now (token check, device, presence, up to
    ``ready``). Beyond ``HEALTHCHAT_WS_MAX_PENDING_AUTH`` the next one is refused at once
    (``server_busy`` + close 1013, no database work) instead of queueing more than the process
    can answer before clients give up. ``retry_after_ms`` is how long the sockets already
    waiting should take at the recent completion rate (at least ``HEALTHCHAT_WS_RETRY_AFTER_MS``),
    times a random factor in [1, 1.5) so refused clients do not come back together."""

    pending = 0
    completed: ClassVar[deque[float]] = deque(maxlen=256)  # monotonic completion times

    @classmethod
    def admit(cls) -> bool:
        limit = settings.HEALTHCHAT_WS_MAX_PENDING_AUTH
        if limit and cls.pending >= limit:
            return False
        cls.pending += 1
        return True

    @classmethod
    def release(cls) -> None:
        cls.pending -= 1
        cls.completed.append(time.monotonic())

    @classmethod
    def retry_after_ms(cls) -> int:
        floor = settings.HEALTHCHAT_WS_RETRY_AFTER_MS
        now = time.monotonic()
        recent = [t for t in cls.completed if now - t <= 2.0]
        rate = len(recent) / 2.0  # authentications completed per second, lately
        drain_ms = cls.pending / max(rate, 1.0) * 1000
        jitter = 1 + random.random() / 2  # noqa: S311 - jitter, not security
        return int(min(30_000, max(floor, drain_ms)) * jitter)


def reconnect_hint() -> dict[str, int]:
    """``ready.data.reconnect``: the delay range clients draw from before reconnecting."""
    return {
        "min_ms": settings.HEALTHCHAT_WS_RECONNECT_MIN_MS,
        "max_ms": settings.HEALTHCHAT_WS_RECONNECT_MAX_MS,
    }


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

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


def origin_allowed(scope: dict[str, Any], origin: str) -> bool:
    """A browser's ``Origin``: one of ``HEALTHCHAT_WS_ALLOWED_ORIGINS``, or this server's own
    (the web console at /console/: the origin's host[:port] is the request's ``Host``)."""
    if origin in settings.HEALTHCHAT_WS_ALLOWED_ORIGINS:
        return True
    host = _header(scope, b"host")
    scheme, _, netloc = origin.partition("://")
    return bool(host) and scheme in ("http", "https") and netloc.lower() == (host or "").lower()


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None


# The handshake headers read after ``connect`` (the audit entries' client: ``audit.client.from_scope``).
HEADERS_READ_LATER = frozenset({b"user-agent", b"x-forwarded-for"})


def keep_headers_read_later(scope: dict[str, Any]) -> None:
    """Keep only ``HEADERS_READ_LATER`` in the scope once ``connect`` has read the rest: a socket
    lives for hours and its scope with it. The bearer token is not needed again
    (``auth.refresh`` brings a new one), nor are cookies, the WebSocket key, the origin... (a
    browser's dozen headers would stay with every idle socket: issue 26)."""
    headers = scope.get("headers")
    if isinstance(headers, list):  # shared with the server's scope: edited in place
        headers[:] = [h for h in headers if h[0].lower() in HEADERS_READ_LATER]


NOTHING_WATCHED: frozenset[int] = frozenset()


def event_strings(event: dict[str, Any]) -> Iterator[str]:
    """A channel-layer event's strings but its ``type``: a failure handling the event is logged
    (and so reported to Sentry: core/sentry.py) inside ``logs.hiding`` them, so that neither
    quotes what the error's message may hold (a message's text); the ``type`` names the event."""
    return logs.strings_in({key: value for key, value in event.items() if key != "type"})


class ChatConsumer(AsyncWebsocketConsumer):
    user: User | None
    device_id: int | None
    # Channels' groups joined at connect: none (one empty tuple for every socket instead of a list each).
    groups: ClassVar[Any] = ()

    async def connect(self) -> None:
        metrics.socket_opened()
        origin = _header(self.scope, b"origin")
        if origin is not None and not origin_allowed(self.scope, origin):
            await self.close(code=CLOSE_FORBIDDEN)  # browsers only; native apps send no Origin
            return
        self.user = None
        self.device_id = None
        self.conn_id = uuid.uuid4().hex
        log_context.bind_socket(self.conn_id)
        self.token_exp = 0
        # Made when first needed (most sockets never watch, type or fire a deadline: an empty
        # set alone is 216 bytes per idle socket).
        self.presence_watch: set[int] | frozenset[int] = NOTHING_WATCHED
        self.presence_revocations = 0  # ``presence.revoke`` events seen (see presence_subscribe)
        self.tasks: list[asyncio.Task[Any]] | None = None
        self.bucket = TokenBucket(settings.HEALTHCHAT_WS_RATE, settings.HEALTHCHAT_WS_BURST)
        self.typing_bucket: TokenBucket | None = None
        self.replica_stamps = replica.SocketStamps()
        self.flood_warnings = 0
        self.deadline_timer: asyncio.TimerHandle | None = None
        self.auth_due = 0.0  # monotonic; 0: no auth deadline (authenticating by header)
        await self.accept()
        self.last_frame_at = time.monotonic()
        authorization = _header(self.scope, b"authorization")
        device_header = _header(self.scope, b"x-device-id")
        keep_headers_read_later(self.scope)
        if authorization and authorization.lower().startswith("bearer "):
            self._arm_deadline()  # the idle timeout
            device_id = (
                int(device_header)
                if device_header and device_header.isascii() and device_header.isdigit()
                else None
            )
            await self.authenticate(authorization[7:].strip(), device_id, ref=None)
        else:
            self.auth_due = self.last_frame_at + settings.HEALTHCHAT_WS_AUTH_TIMEOUT
            self._arm_deadline()

    # --- authentication ---------------------------------------------------------------------
    async def authenticate(self, token: str, device_id: int | None, ref: str | None) -> None:
        if not AdmissionGate.admit():
            await self.send_error(
                "server_busy",
                "The server is busy; reconnect after retry_after_ms.",
                ref,
                retry_after_ms=AdmissionGate.retry_after_ms(),
            )
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return
        try:
            await self._authenticate(token, device_id, ref)
        finally:
            AdmissionGate.release()

    async def _authenticate(self, token: str, device_id: int | None, ref: str | None) -> None:
        try:
            # Sockets signing in together share one thread hop and one query per step.
            user, verified, device = await batcher.for_loop(ws_auth.authenticate_sockets).submit(
                ws_auth.SocketAuth(token, device_id, self.scope)
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
        log_context.bind_user(user.pk)
        self.auth_due = 0.0
        self._schedule_expiry(verified.expires_at)
        if self._inbox is not None:  # other processes may now send to this socket's channel
            await self.channel_layer.listen_inbox(self.channel_name)
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        try:
            came_online = await presence.store().connect(user.pk, self.conn_id)
        except Exception:  # presence is best-effort: messaging works without it
            logger.warning("presence register failed", exc_info=True)
            came_online = False
        if came_online:
            await self._announce_presence(True, None)
        presence.heartbeats().add(user.pk, self.conn_id)  # one process-wide heartbeat loop
        await self.send_frame(
            {
                "type": "ready",
                "ref": ref,
                "data": {"user_id": user.pk, "device_id": device, "reconnect": reconnect_hint()},
            }
        )

    # Deadlines (auth, token expiry, idle) share ONE loop timer per socket, set for the nearest
    # of them and set again when it fires early for the others: no sleeping task (and coroutine)
    # per deadline, and one timer handle (~0.5 KB with uvloop) instead of one per deadline
    # (issue 26). Frames only stamp ``last_frame_at``; the timer looks at it when it fires.
    def _schedule_expiry(self, exp: int) -> None:
        self.token_exp = exp
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        now = time.monotonic()
        due: list[float] = []
        if self.user is None and self.auth_due:
            due.append(self.auth_due - now)
        if self.user is not None and self.token_exp:
            due.append(self.token_exp - time.time())
        idle_timeout = float(settings.HEALTHCHAT_WS_IDLE_TIMEOUT)
        if idle_timeout > 0:
            due.append(self.last_frame_at + idle_timeout - now)
        if due:
            self.deadline_timer = asyncio.get_running_loop().call_later(
                max(0.0, min(due)), self._deadline_passed
            )

    def _deadline_passed(self) -> None:
        """The nearest deadline came: close the socket for the one that passed (the auth
        deadline, then the token's expiry, then the idle timeout), else wait for the next."""
        self.deadline_timer = None
        now = time.monotonic()
        if self.user is None and self.auth_due and now >= self.auth_due:
            self._close_soon("auth_timeout", "Send an auth frame within 10 seconds.")
            return
        if self.user is not None and self.token_exp and time.time() >= self.token_exp:
            self._close_soon("token_expired", "The token expired; reconnect with a new one.")
            return
        idle_timeout = float(settings.HEALTHCHAT_WS_IDLE_TIMEOUT)
        if idle_timeout > 0 and now - self.last_frame_at >= idle_timeout:
            self._close_soon("idle_timeout", f"No frame for {idle_timeout:g} seconds.", CLOSE_IDLE)
            return
        self._arm_deadline()

    def _close_soon(self, code: str, message: str, close_code: int = CLOSE_UNAUTHORIZED) -> None:
        async def close() -> None:
            await self.send_error(code, message, None)
            await self.close(code=close_code)

        if self.tasks is None:
            self.tasks = []
        self.tasks.append(asyncio.get_running_loop().create_task(close()))

    async def refresh(self, token: str) -> dict[str, Any]:
        assert self.user is not None
        verified = await run_service(ws_auth.reverify_socket, token=token, user_id=self.user.pk)
        self._schedule_expiry(verified.expires_at)
        return {"expires_at": verified.expires_at}

    # --- presence ---------------------------------------------------------------------------
    async def _announce_presence(self, online: bool, last_seen: float | None) -> None:
        assert self.user is not None
        await presence.announce(self.user.pk, online, last_seen)

    async def watch_presence(self, user_ids: list[int]) -> None:
        for uid in user_ids:
            if uid not in self.presence_watch:
                if not isinstance(self.presence_watch, set):
                    self.presence_watch = set()
                self.presence_watch.add(uid)
                await self.channel_layer.group_add(presence_group(uid), self.channel_name)

    async def unwatch_presence(self, user_ids: list[int]) -> None:
        """Stop watching ``user_ids`` (whether or not this socket watches them: a watch may be
        joining its group while a revocation is handled)."""
        for uid in user_ids:
            if isinstance(self.presence_watch, set):
                self.presence_watch.discard(uid)
            await self.channel_layer.group_discard(presence_group(uid), self.channel_name)

    async def disconnect(self, code: int) -> None:
        metrics.socket_closed(code)
        timer = getattr(self, "deadline_timer", None)
        if timer is not None:
            timer.cancel()
            self.deadline_timer = None
        for task in getattr(self, "tasks", None) or ():
            if not task.done() and task is not asyncio.current_task():
                task.cancel()
        user = getattr(self, "user", None)
        if user is None:
            return
        presence.heartbeats().discard(self.conn_id)
        try:
            await self.channel_layer.group_discard(user_group(user.pk), self.channel_name)
            for uid in self.presence_watch:
                await self.channel_layer.group_discard(presence_group(uid), self.channel_name)
        except Exception:  # Redis down: the subscription goes with the connection anyway
            logger.warning("group discard failed", exc_info=True)
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
        self.last_frame_at = time.monotonic()
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
        metrics.frame_in(frame.type)
        if frame.type == "auth":
            if self.user is not None:
                await self.send_error("already_authenticated", "This socket is already authenticated.", ref)
                return
            await self.authenticate(frame.data.token, frame.data.device_id, ref)
            return
        if self.user is None:
            await self.send_error("not_authenticated", "Authenticate first (auth frame).", ref)
            return
        if frame.type == "typing" and not self.typing_limit().take():
            await self.send_error("rate_limited", "Too many typing frames.", ref)
            return
        started = time.perf_counter()
        if frame.type not in READ_ONLY_FRAMES and self.replica_stamps.due():
            # Read your writes (a replica configured): stamped before the write, so before its ack.
            stamp = sync_to_async(replica.note_write, thread_sensitive=False)
            await stamp(self.user.pk, seconds=self.replica_stamps.seconds())
        try:
            reply = await HANDLERS[frame.type](self, frame)
        except ApplicationError as exc:
            await self.send_error(exc.code, exc.message, ref, exc.fields, **exc.extra)
            if exc.status in (403, 404):  # refused: one audit entry (after the reply)
                await arecord_socket_denial(scope=self.scope, user=self.user, frame=frame, code=exc.code)
            return
        except Exception:
            # Logged (and so reported to Sentry: core/sentry.py) without the frame's strings, a
            # message's text for one, that the error may quote; the socket stays open.
            with logs.hiding(logs.strings_in(frame.data)):
                logger.exception("socket handler failed for %s", frame.type)
            await self.send_error("internal_error", "An internal error occurred.", ref)
            return
        if reply is not None:
            await self.send_frame({"type": "ack", "ref": ref, "data": reply})
        metrics.frame_answered(frame.type, started)

    def typing_limit(self) -> TokenBucket:
        """The socket's ``typing`` rate limit, made full at the first ``typing`` frame (as if made
        at connect: a bucket refills to its burst anyway)."""
        if self.typing_bucket is None:
            self.typing_bucket = TokenBucket(2.0, 5.0)
        return self.typing_bucket

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
        metrics.frame_out(frame["type"])
        # The server's send directly (``send(text_data=...)`` is two coroutines more per frame).
        await self.base_send({"type": "websocket.send", "text": orjson.dumps(frame).decode()})

    async def send_error(
        self, code: str, message: str, ref: str | None, fields: Any = None, **extra: Any
    ) -> None:
        metrics.error(code)
        error: dict[str, Any] = {"code": code, "message": message}
        if fields:
            error["fields"] = fields
        error.update({k: v for k, v in extra.items() if k != "ref"})
        frame: dict[str, Any] = {"type": "error", "error": error}
        if ref is not None:
            frame["ref"] = ref
        await self.base_send({"type": "websocket.send", "text": orjson.dumps(frame).decode()})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' consumer loop, cheaper and without head-of-line blocking: frames from the
        client are handled in order by this task, channel-layer events in order by a second
        one (Channels waits on both with ``asyncio.wait`` and a new task per message, and holds
        every live event back while a frame's handler awaits its commit). With the project's
        layer the second task exists only while events are waiting (``Inbox``): an idle socket
        has no task of its own besides this one."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.server_send = send
        self._drainer: asyncio.Task[None] | None = None
        self._draining = False  # the inbox being drained at once (``_wake``)
        self._inbox: Inbox | None = None
        events: asyncio.Task[None] | None = None
        if self.channel_layer is not None:
            new_inbox = getattr(self.channel_layer, "new_inbox", None)
            if new_inbox is not None:
                # Subscribed in Redis once authenticated (``_authenticate``).
                self.channel_name, self._inbox = await new_inbox(self._wake, listen=False)
            else:  # another layer (embedded mode: in-memory)
                self.channel_name = await self.channel_layer.new_channel()
                events = asyncio.create_task(self._channel_events())
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            for task in (events, self._drainer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self._inbox is not None:
                self._inbox = None
                try:
                    await self.channel_layer.close_inbox(self.channel_name)
                except Exception:  # Redis away: the subscription ends with the connection
                    logger.warning("could not unsubscribe a closed socket's channel", exc_info=True)

    async def base_send(self, message: dict[str, Any]) -> None:
        """The server's ``send``, dropping a frame for a client that has already gone: uvicorn
        raises ``ClientDisconnected`` (an ``OSError``) when the socket closed under a send, e.g. a
        phone that lost its network in the middle of a ``sync`` reply. Nothing is lost by dropping
        it (the client syncs from its cursor when it is back) and nothing is an error: the
        disconnect is handled when the server delivers ``websocket.disconnect``. A method, not a
        closure made per socket (issue 26)."""
        try:
            await self.server_send(message)
        except OSError:
            logger.debug("frame dropped: the client has disconnected")

    def _wake(self) -> None:
        """The inbox has an event: drain it in order, at once (``eager.start``: a live event
        goes out without waiting, so no task per delivery), in a task only from the first
        wait on (later events queue behind it)."""
        if self._drainer is None and not self._draining and self._inbox is not None:
            self._draining = True
            try:
                self._drainer = eager.start(self._drain())
            finally:
                self._draining = False

    async def _drain(self) -> None:
        # Runs inside the publisher's call at first (``_wake``): nothing here may raise into it.
        items = self._inbox.items if self._inbox is not None else []
        try:
            while items:
                event = items.pop(0)
                try:
                    await self.dispatch(event)
                except Exception:
                    with logs.hiding(event_strings(event)):
                        logger.exception("channel event %s failed", event.get("type"))
        finally:
            self._drainer = None

    async def _channel_events(self) -> None:
        layer, channel = self.channel_layer, self.channel_name
        while True:
            event = await layer.receive(channel)
            try:
                await self.dispatch(event)
            except Exception:
                with logs.hiding(event_strings(event)):
                    logger.exception("channel event %s failed", event.get("type"))

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, minus its per-message ``aclose_old_connections`` thread hop:
        no handler here touches the database except through ``run_service``, which closes
        stale connections in the thread that uses them. Live events, nearly all of the
        traffic, skip the handler-name lookup."""
        kind = message["type"]
        if kind == "client.event":
            await self.client_event(message)
            return
        if kind == "websocket.receive":  # Channels' ``websocket_receive``, one coroutine less
            text = message.get("text")
            if text is not None:
                await self.receive(text_data=text)
            else:
                await self.receive(bytes_data=message["bytes"])
            return
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
        metrics.delivered(event)
        ciphertexts = event.get("ciphertexts")
        if ciphertexts is None:
            # The same event reaches every local socket of the group: serialize it once, and
            # hand the server one shared ``websocket.send`` message (servers do not change it).
            outgoing = event.get("_send")
            if outgoing is None:
                text = orjson.dumps(event["frame"]).decode()
                outgoing = event["_send"] = {"type": "websocket.send", "text": text}
            await self.base_send(outgoing)
            return
        # An end-to-end encrypted message: this socket's device gets its own copy only.
        frame = event["frame"]
        own = ciphertexts.get(str(self.device_id)) if self.device_id is not None else None
        message = {**frame["data"]["message"], "ciphertext": own}
        text = orjson.dumps({**frame, "data": {**frame["data"], "message": message}}).decode()
        await self.base_send({"type": "websocket.send", "text": text})

    async def presence_revoke(self, event: dict[str, Any]) -> None:
        """A relationship that allowed watching these users ended (a removal, a leave, a block,
        an erasure): stop watching them on this socket. No frame: the client learns of the
        removal or leave from its own event, and a blocked user is not told of the block."""
        self.presence_revocations += 1
        revoked = {int(uid) for uid in event.get("user_ids", [])}
        await self.unwatch_presence(sorted(revoked & self.presence_watch))

    async def session_terminate(self, event: dict[str, Any]) -> None:
        error = event.get("error")  # the reason, for deactivation and revocation
        if error:
            await self.send_error(error["code"], error["message"], None)
        await self.close(code=int(event.get("code", CLOSE_FORBIDDEN)))
