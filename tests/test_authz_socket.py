"""Authorization matrix, WebSocket: every client frame type x every actor, on a live server.

One uvicorn process and one committed world (tests/authz.py) per module (and per xdist worker);
the database is flushed after the module. Each cell opens a real socket as its actor, sends one
frame and checks the reply: ``test_socket_cell[<frame type>[#variant] | <actor>]``. A frame type
added to the protocol (or a handler added by an app) fails ``test_table_covers_every_frame_type``
until its row is added here.

Denials are bare ``error`` frames, and an id that exists but is not the caller's gets exactly the
error an id that does not exist gets (sent again on the same socket with the id replaced).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings
from websockets.exceptions import ConnectionClosed

from calls import handlers as call_handlers
from messaging import handlers as messaging_handlers
from messaging.protocol import CLIENT_FRAMES, ERROR_CODES
from tests.authz import (
    ACTORS,
    MISSING_ID,
    REGISTERED,
    SDP,
    World,
    assert_error_envelope,
    build_world,
    token_for,
)
from tests.wsclient import WsClient

# ``django_db``: the cells themselves write nothing from this process (each runs in a transaction
# that is rolled back); the world is committed by the module fixture before them.
pytestmark = [pytest.mark.live, pytest.mark.django_db]

LIVE_ENV = {"HEALTHCHAT_WS_RATE": "500", "HEALTHCHAT_WS_BURST": "500"}


# --- Expected outcomes -------------------------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    kind: str  # ack | error | pong | ready | sync.done | silent | closed
    code: str | None = None
    close_code: int | None = None


ACK, PONG, READY, SYNCED = Expect("ack"), Expect("pong"), Expect("ready"), Expect("sync.done")
SILENT = Expect("silent")  # accepted; the frame has no reply (typing)


def error(code: str) -> Expect:
    return Expect("error", code)


SIGNED_OUT = {
    # No credentials: every frame but auth is refused on the open socket.
    "anonymous": error("not_authenticated"),
    # A token that cannot authenticate: the socket is refused before any frame.
    "expired_token": Expect("closed", "token_expired", 4401),
    "deleted_user": Expect("closed", "not_registered", 4403),
}


def row(registered: Expect, **named: Expect) -> dict[str, Expect]:
    out = {**SIGNED_OUT, **dict.fromkeys(REGISTERED, registered), **named}
    assert set(out) == set(ACTORS), set(out) ^ set(ACTORS)
    return out


DataFn = Callable[[World, str], dict[str, Any]]


@dataclass(frozen=True)
class Frame:
    expect: dict[str, Expect]
    data: DataFn | None = None


# For each "no such ..." error: the key of the frame's data naming that object (the check sends
# the frame again with it replaced by an id that does not exist: the error must be the same).
NOT_FOUND_KEYS = {
    "conversation_not_found": "conversation_id",
    "message_not_found": "message_id",
    "call_not_found": "call_id",
    "attachment_not_found": "attachment_ids",
    "appointment_not_found": "appointment_id",
}


def _token(w: World, actor: str) -> str:
    token = w.extra["minter"](*w.identities[actor])
    assert isinstance(token, str)
    return token


def conv(w: World, a: str) -> dict[str, Any]:
    return {"conversation_id": w.conversation.pk}


def send(conversation: str) -> DataFn:
    def data(w: World, a: str) -> dict[str, Any]:
        import uuid

        target = w.conversation if conversation == "direct" else w.group
        return {"conversation_id": target.pk, "client_id": str(uuid.uuid4()), "body": f"matrix from {a}"}

    return data


def call_id(w: World, a: str) -> dict[str, Any]:
    return {"call_id": w.call.pk}


def call_sdp(w: World, a: str) -> dict[str, Any]:
    return {"call_id": w.call.pk, "sdp": SDP}


# Refusals of a caller who may act, with a detail about their own object (not a denial).
DETAILED_REFUSALS = {"check_in_too_early"}  # opens_at: when the patient's own check-in opens
A_AND_DOCTOR = {"patient_a": ACK, "doctor": ACK}
NOT_MEMBER = error("conversation_not_found")
NO_CALL = error("call_not_found")
# The call record is over (A called, the doctor answered, A hung up): participants get past the
# check of who may act and are stopped by the call's state or by their role in it.
CALLER_ONLY = {"patient_a": error("call_not_ringing"), "doctor": error("call_action_not_allowed")}
CALLEE_ONLY = {"patient_a": error("call_action_not_allowed"), "doctor": error("call_not_ringing")}
CALL_OVER = {"patient_a": error("call_not_active"), "doctor": error("call_not_active")}

TABLE: dict[str, Frame] = {
    "ping": Frame(row(PONG)),
    "auth": Frame(
        {
            **dict.fromkeys(REGISTERED, READY),
            # auth is the one frame a socket without credentials may send; these carry bad ones
            "anonymous": Expect("closed", "invalid_token", 4401),
            "expired_token": Expect("closed", "token_expired", 4401),
            "deleted_user": Expect("closed", "not_registered", 4403),
        },
        data=lambda w, a: {"token": "not-a-token" if a == "anonymous" else w.extra["token_of"](a)},
    ),
    "auth.refresh": Frame(row(ACK), data=lambda w, a: {"token": w.extra["token_of"](a) or "not-a-token"}),
    "auth.refresh#patient_a_token": Frame(
        row(error("token_user_mismatch"), patient_a=ACK), data=lambda w, a: {"token": _token(w, "patient_a")}
    ),
    "message.send": Frame(row(NOT_MEMBER, **A_AND_DOCTOR), data=send("direct")),
    "message.send#group": Frame(
        row(NOT_MEMBER, patient_a=ACK, doctor=ACK, group_member=ACK),
        data=send("group"),
    ),
    "message.send#attachment": Frame(
        # A's upload, not sent yet: only A may send it; a member who is not its uploader may not
        row(NOT_MEMBER, patient_a=ACK, doctor=error("attachment_not_found")),
        data=lambda w, a: {
            **send("direct")(w, a),
            "body": None,
            "attachment_ids": [w.attachment_unsent.pk],
        },
    ),
    "message.edit": Frame(
        row(error("message_not_found"), patient_a=ACK, doctor=error("not_message_sender")),
        data=lambda w, a: {"message_id": w.message_to_edit.pk, "body": f"edited by {a}"},
    ),
    "message.delete": Frame(
        row(error("message_not_found"), patient_a=ACK, doctor=error("not_message_sender")),
        data=lambda w, a: {"message_id": w.message_to_delete.pk},
    ),
    "message.delivered": Frame(
        row(NOT_MEMBER, **A_AND_DOCTOR),
        data=lambda w, a: {"conversation_id": w.conversation.pk, "seq": 1},
    ),
    "message.read": Frame(
        row(NOT_MEMBER, **A_AND_DOCTOR),
        data=lambda w, a: {"conversation_id": w.conversation.pk, "seq": 1},
    ),
    "message.read#group": Frame(
        row(NOT_MEMBER, patient_a=ACK, doctor=ACK, group_member=ACK),
        data=lambda w, a: {"conversation_id": w.group.pk, "seq": 1},
    ),
    "typing": Frame(
        row(NOT_MEMBER, patient_a=SILENT, doctor=SILENT),
        data=lambda w, a: {"conversation_id": w.conversation.pk, "active": True},
    ),
    "sync": Frame(row(SYNCED), data=lambda w, a: {}),
    "presence.subscribe": Frame(row(ACK), data=lambda w, a: {"user_ids": [w.patient_a.pk]}),
    "call.invite": Frame(
        row(NOT_MEMBER, **A_AND_DOCTOR),
        data=lambda w, a: {"conversation_id": w.conversation.pk, "media": "audio", "sdp": SDP},
    ),
    "call.invite#group": Frame(
        row(
            NOT_MEMBER,
            patient_a=error("group_calls_unavailable"),
            doctor=error("group_calls_unavailable"),
            group_member=error("group_calls_unavailable"),
        ),
        data=lambda w, a: {"conversation_id": w.group.pk, "media": "audio", "sdp": SDP},
    ),
    "call.ringing": Frame(row(NO_CALL, **CALLEE_ONLY), data=call_id),
    "call.accept": Frame(row(NO_CALL, **CALLEE_ONLY), data=call_sdp),
    "call.reject": Frame(row(NO_CALL, **CALLEE_ONLY), data=call_id),
    "call.cancel": Frame(row(NO_CALL, **CALLER_ONLY), data=call_id),
    "call.hangup": Frame(row(NO_CALL, **CALL_OVER), data=call_id),
    "call.ice": Frame(
        row(NO_CALL, **CALL_OVER),
        data=lambda w, a: {
            "call_id": w.call.pk,
            "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"},
        },
    ),
    "call.update": Frame(row(NO_CALL, **CALL_OVER), data=call_sdp),
    "call.resume": Frame(row(NO_CALL, **CALL_OVER), data=call_id),
    # The waiting room: B's appointment with the other doctor is tomorrow (too early to check in,
    # nobody waiting); everyone else cannot tell it exists.
    "appointment.check_in": Frame(
        row(
            error("appointment_not_found"),
            patient_b=error("check_in_too_early"),
            other_doctor=error("not_the_patient"),
        ),
        data=lambda w, a: {"appointment_id": w.extra["appointment"].pk},
    ),
    "waiting_room.admit": Frame(
        row(
            error("appointment_not_found"),
            patient_b=error("not_the_doctor"),
            other_doctor=error("patient_not_waiting"),
        ),
        data=lambda w, a: {"appointment_id": w.extra["appointment"].pk},
    ),
}


# --- The world and the server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[World]:
    """Committed (the server process reads it); the database is flushed after the module."""
    media = override_settings(MEDIA_ROOT=str(tmp_path_factory.mktemp("matrix-media")))
    media.enable()
    try:
        with django_db_blocker.unblock():
            built = build_world()
        yield built
    finally:
        with django_db_blocker.unblock():
            call_command("flush", verbosity=0, interactive=False)
        media.disable()


@pytest.fixture(scope="module")
def server(live_server_factory: Any, world: World) -> Any:
    return live_server_factory(LIVE_ENV)


@pytest.fixture
def live_world(world: World, make_token: Callable[..., str]) -> World:
    world.extra["minter"] = make_token
    world.extra["token_of"] = lambda actor: token_for(make_token, world, actor)
    return world


async def _reply(client: WsClient, ref: str) -> dict[str, Any]:
    """The frame answering ``ref`` (ack, error, pong, sync.done), or ``{"type": "silent"}`` when
    a ping sent right after it is answered first (one socket's frames are handled in order; on a
    socket without credentials the ping is refused too)."""
    probe = await client.send("ping")
    answer: dict[str, Any] | None = None
    while True:
        frame = await client.recv()
        if frame.get("ref") == ref and frame["type"] in ("ack", "error", "pong", "sync.done"):
            answer = frame
        elif frame.get("ref") == probe and frame["type"] in ("pong", "error"):
            return answer or {"type": "silent"}
        else:
            client.inbox.append(frame)


async def _cell(server: Any, w: World, frame_type: str, spec: Frame, actor: str) -> None:
    expect = spec.expect[actor]
    name = frame_type.split("#", 1)[0]
    data = spec.data(w, actor) if spec.data else None
    token = w.extra["token_of"](actor)

    if name == "auth" or actor == "anonymous":
        client = await WsClient.connect(server.ws_url)
    else:
        client = await WsClient.connect(server.ws_url, token, wait_ready=expect.kind != "closed")
    try:
        if expect.kind == "closed" and name != "auth":
            # Refused at connect: the error, the close, and no frame gets through.
            refused = await client.expect("error")
            assert_error_envelope({"error": refused["error"]}, str(expect.code))
            await client.ws.wait_closed()
            assert client.close_code == expect.close_code
            with pytest.raises(ConnectionClosed):
                await client.send(name, data)
            return

        ref = await client.send(name, data)
        if name == "auth" and expect.kind == "ready":
            ready = await client.expect("ready")
            assert ready["ref"] == ref
            assert ready["data"]["user_id"] == w.user(actor).pk
            return
        if name == "auth":
            refused = await client.expect("error")
            assert refused.get("ref") == ref
            assert_error_envelope({"error": refused["error"]}, str(expect.code))
            await client.ws.wait_closed()
            assert client.close_code == expect.close_code
            return

        reply = await _reply(client, ref)
        got = reply["error"]["code"] if reply["type"] == "error" else None
        assert (reply["type"], got) == (expect.kind, expect.code), (frame_type, actor, reply)
        if expect.kind == "error":
            assert set(reply) == {"type", "ref", "error"}, reply
            assert_error_envelope(
                {"error": reply["error"]}, str(expect.code), strict=expect.code not in DETAILED_REFUSALS
            )
            assert expect.code in ERROR_CODES
            key = NOT_FOUND_KEYS.get(str(expect.code))
            if key is not None:
                assert data is not None, frame_type
                assert key in data, (frame_type, expect)
                missing = [MISSING_ID] if isinstance(data[key], list) else MISSING_ID
                again = await client.request(name, {**data, key: missing})
                assert again["type"] == "error", again
                assert again["error"] == reply["error"], (again, reply)
        await _check_ack(client, w, frame_type, actor, reply)
    finally:
        await client.close()


async def _check_ack(client: WsClient, w: World, frame_type: str, actor: str, reply: dict[str, Any]) -> None:
    """What an accepted frame returned must stay within what ``actor`` may see."""
    if frame_type == "presence.subscribe" and reply["type"] == "ack":
        contacts = {"doctor", "group_member"}  # share an active conversation with A
        a = w.patient_a.pk
        assert reply["data"] == (
            {"subscribed": [a], "refused": []} if actor in contacts else {"subscribed": [], "refused": [a]}
        )
    elif frame_type == "call.invite" and reply["type"] == "ack":
        call = reply["data"]["call"]
        # Cancelled first (a cell must leave no call ringing for the next one), then checked.
        cancelled = await client.request("call.cancel", {"call_id": call["id"]})
        assert cancelled["type"] == "ack", cancelled
        assert call["state"] == "ringing"
        assert call["caller_id"] == w.user(actor).pk
    elif frame_type == "sync":
        frames = reply.get("_frames", [])
        conversations = {
            f["data"].get("conversation_id") or f["data"]["message"]["conversation_id"] for f in frames
        }
        protected = {w.conversation.pk, w.group.pk}
        seen = w.conversations_of(actor) | ({w.group.pk} if actor == "removed_member" else set())
        assert conversations & protected == seen, (actor, conversations)
        if actor == "removed_member":
            ids = {f["data"]["message"]["id"] for f in frames if "message" in f["data"]}
            assert w.group_after.pk not in ids
            assert w.group_before.pk in ids


CELLS = [(key, actor) for key in TABLE for actor in ACTORS]


@pytest.mark.parametrize(("frame_type", "actor"), CELLS, ids=[f"{k} | {a}" for k, a in CELLS])
def test_socket_cell(frame_type: str, actor: str, server: Any, live_world: World) -> None:
    spec = TABLE[frame_type]
    if frame_type == "sync" and spec.expect[actor].kind == "sync.done":
        asyncio.run(_sync_cell(server, live_world, actor))
        return
    asyncio.run(_cell(server, live_world, frame_type, spec, actor))


async def _sync_cell(server: Any, w: World, actor: str) -> None:
    client = await WsClient.connect(server.ws_url, w.extra["token_of"](actor))
    try:
        frames, cursor, _more = await client.sync()
        assert cursor
        await _check_ack(client, w, "sync", actor, {"type": "sync.done", "_frames": frames})
    finally:
        await client.close()


def test_table_covers_every_frame_type() -> None:
    """Every client frame of the protocol and every socket handler (calls' too) has a row."""
    handled = set(messaging_handlers.HANDLERS) | set(call_handlers.HANDLERS) | {"auth"}
    in_table = {key.split("#", 1)[0] for key in TABLE}
    assert not set(CLIENT_FRAMES) - in_table, (
        f"frame types without a row: {sorted(set(CLIENT_FRAMES) - in_table)}"
    )
    assert not handled - in_table, f"handlers without a row: {sorted(handled - in_table)}"
    assert not in_table - set(CLIENT_FRAMES), (
        f"rows for unknown frame types: {sorted(in_table - set(CLIENT_FRAMES))}"
    )
    for key, spec in TABLE.items():
        assert set(spec.expect) == set(ACTORS), key
        for outcome in spec.expect.values():
            assert outcome.code is None or outcome.code in ERROR_CODES, (key, outcome)
