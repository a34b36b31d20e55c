"""Frame fuzzing against a live server: no input yields a server error or harms other sockets.

One authenticated socket receives hypothesis-generated frames: arbitrary JSON, real frame types
with dropped/extra/mutated fields, arbitrary text, binary, huge and deeply nested values, lone
UTF-16 surrogates, JWT-shaped tokens and cursor-shaped strings. After every example a ``ping``
must come back as ``pong``: the socket is still open and every frame got its reply first. A
bystander socket connected all along must still work at the end, and the server log must hold
no traceback.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import PROJECT_ID, TEST_KID
from core.errors import ApplicationError
from messaging import protocol, services
from messaging.models import Message
from messaging.tests.factories import pair
from tests.wsclient import WsClient

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _server_done_with_the_database(transactional_db: None) -> Any:
    """After each test (before pytest-django truncates the tables), wait until the live
    server's sessions have finished the work the test's closed sockets left them (disconnect
    hooks, audit rows): a TRUNCATE racing them can deadlock."""
    yield
    import time

    from django.db import connection

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
            (busy,) = cursor.fetchone()
        if not busy:
            return
        time.sleep(0.1)


# No flood closing while fuzzing: this test is about malformed frames, not rate limits.
LIVE_ENV = {"HEALTHCHAT_WS_RATE": "100000", "HEALTHCHAT_WS_BURST": "100000"}
MAX_FRAME = 65536
REPLY_TYPES = ("ack", "error", "pong", "sync.done", "ready")
SURROGATE_MARK = "\ue000"  # replaced by a lone-surrogate escape after json.dumps
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@pytest.fixture(scope="module")
def server(live_server_factory):
    return live_server_factory(LIVE_ENV)


# --- Strategies --------------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _dumps(value: Any) -> str:
    """JSON text (NaN/Infinity allowed, as Python's parser accepts them); marks → ``\\ud800``."""
    return json.dumps(value).replace("\\ue000", "\\ud800")


def strategies(ctx: dict[str, Any]) -> st.SearchStrategy[list[str | bytes]]:
    ids = [ctx["conversation"], ctx["foreign_conversation"], *ctx["messages"], ctx["me"], ctx["peer"]]
    edge_ints = st.sampled_from([2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30])
    ints = st.one_of(st.sampled_from(ids), st.integers(-3, 12), edge_ints, st.integers())
    strings = st.one_of(
        st.text(max_size=40),
        st.text(max_size=40),
        st.text(max_size=10).map(lambda t: t + SURROGATE_MARK),
        st.sampled_from(["", " ", "\t\n", "\x00", "\u202e", "\U0001f600", "null"]),
        st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=5),
        st.one_of(
            st.integers(7990, 8010).map(lambda n: "é" * n),
            st.integers(60_000, 70_000).map(lambda n: "x" * n),
        ),
    )
    scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), strings)
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    )
    small = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-1, 2),
        st.floats(),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.sampled_from(["uid", "x"]), st.integers(), max_size=2),
    )

    jwt_like = st.builds(
        lambda header, claims, signature: (
            f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"
        ),
        st.fixed_dictionaries(
            {"alg": st.sampled_from(["RS256", "HS256", "none"]) | small},
            optional={"kid": st.sampled_from([TEST_KID, "healthchat-dev", ""]) | small, "typ": small},
        )
        | small,
        st.fixed_dictionaries(
            {},
            optional={
                "iss": st.just(f"https://securetoken.google.com/{PROJECT_ID}") | small,
                "aud": st.just(PROJECT_ID) | small,
                **dict.fromkeys(("sub", "exp", "iat", "auth_time", "v", "d", "firebase", "uid"), small),
            },
        )
        | small,
        st.binary(max_size=64),
    )
    cursor_like = st.builds(
        lambda body: _b64(_dumps(body).encode()),
        st.fixed_dictionaries(
            {
                "v": st.just(1) | small,
                "c": st.dictionaries(
                    st.sampled_from([str(i) for i in ids]) | st.text(max_size=5),
                    st.integers(-1, 5) | edge_ints | small,
                    max_size=3,
                )
                | small,
            }
        )
        | small,
    )

    def templates(wild: bool) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
        """The data of each frame type: plausible values, or (``wild``) now and then anything."""

        def field(realistic: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
            return st.one_of(realistic, realistic, realistic, realistic, values) if wild else realistic

        conversation = field(
            st.sampled_from([ctx["conversation"], ctx["conversation"], ctx["foreign_conversation"]]) | ints
        )
        message = field(st.sampled_from(ctx["messages"]) | ints)
        seq = field(st.integers(-2, 10) | edge_ints)
        body = field(strings)
        token = field(jwt_like | strings)
        return {
            "ping": st.fixed_dictionaries({}),
            "auth": st.fixed_dictionaries({"token": token}, optional={"device_id": field(ints)}),
            "auth.refresh": st.fixed_dictionaries({"token": token}),
            "message.send": st.fixed_dictionaries(
                {
                    "conversation_id": conversation,
                    "client_id": field(st.uuids().map(str) | st.just(ctx["reused_client_id"])),
                    "body": body,
                },
                optional={
                    "reply_to": field(st.sampled_from(ctx["messages"]) | ints),
                    "attachment_ids": field(st.lists(ints, max_size=12)),
                    "ciphertexts": field(st.dictionaries(st.text(max_size=5), strings, max_size=3)),
                },
            ),
            "message.edit": st.fixed_dictionaries({"message_id": message, "body": body}),
            "message.delete": st.fixed_dictionaries({"message_id": message}),
            "message.delivered": st.fixed_dictionaries({"conversation_id": conversation, "seq": seq}),
            "message.read": st.fixed_dictionaries({"conversation_id": conversation, "seq": seq}),
            "typing": st.fixed_dictionaries(
                {"conversation_id": conversation, "active": field(st.booleans())}
            ),
            "sync": st.fixed_dictionaries({}, optional={"cursor": field(cursor_like | strings)}),
            "presence.subscribe": st.fixed_dictionaries({"user_ids": field(st.lists(ints, max_size=20))}),
            "reaction.add": st.fixed_dictionaries(
                {"message_id": message, "emoji": field(st.sampled_from(["👍", "❤️", "🙏"]) | strings)}
            ),
            "reaction.remove": st.fixed_dictionaries(
                {"message_id": message, "emoji": field(st.sampled_from(["👍", "❤️"]) | strings)}
            ),
            "message.pin": st.fixed_dictionaries({"message_id": message}),
            "message.unpin": st.fixed_dictionaries({"message_id": message}),
            "appointment.check_in": st.fixed_dictionaries({"appointment_id": field(ints)}),
            "waiting_room.admit": st.fixed_dictionaries(
                {"appointment_id": field(ints)},
                optional={
                    "start_call": field(st.sampled_from(["audio", "video"])),
                    "sdp": field(st.sampled_from(["v=0\r\n"]) | strings),
                },
            ),
            **call_templates(field, conversation),
        }

    def call_templates(field: Any, conversation: Any) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
        call_id = field(st.integers(1, 30) | ints)
        sdp = field(st.sampled_from(["v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"]) | strings)
        candidate = field(
            st.dictionaries(
                st.sampled_from(["candidate", "sdpMid", "sdpMLineIndex"]), strings | ints, max_size=3
            )
        )
        by_id = st.fixed_dictionaries({"call_id": call_id})
        return {
            "call.invite": st.fixed_dictionaries(
                {
                    "conversation_id": conversation,
                    "media": field(st.sampled_from(["audio", "video"])),
                    "sdp": sdp,
                }
            ),
            "call.ringing": by_id,
            "call.accept": st.fixed_dictionaries({"call_id": call_id, "sdp": sdp}),
            "call.reject": by_id,
            "call.cancel": by_id,
            "call.hangup": st.fixed_dictionaries(
                {"call_id": call_id}, optional={"reason": field(st.sampled_from(["hangup", "failed"]))}
            ),
            "call.ice": st.fixed_dictionaries({"call_id": call_id, "candidate": candidate}),
            "call.update": st.fixed_dictionaries({"call_id": call_id, "sdp": sdp}),
            "call.resume": by_id,
        }

    plausible_data = templates(wild=False)
    wild_data = templates(wild=True)

    @st.composite
    def plausible_frame(draw: Any) -> str:
        """A real frame type with plausible fields: gets past the schema into the services."""
        kind = draw(st.sampled_from(protocol.CLIENT_FRAMES))
        frame: dict[str, Any] = {"type": kind, "data": draw(plausible_data[kind])}
        if draw(st.booleans()):
            frame["ref"] = draw(st.text(max_size=20))
        return _dumps(frame)

    kinds = st.sampled_from([*protocol.CLIENT_FRAMES, "call.invite", "ack", "ready", "", "PING"])

    @st.composite
    def mutated_frame(draw: Any) -> str:
        """A frame type (real or not) with fields dropped, added or replaced by anything."""
        kind = draw(kinds)
        data = dict(draw(wild_data.get(kind, wild_data["ping"])))
        for _ in range(draw(st.integers(0, 2))):
            op = draw(st.sampled_from(["drop", "extra", "replace"]))
            if op == "drop" and data:
                data.pop(draw(st.sampled_from(sorted(data))))
            elif op == "extra":
                data[draw(st.text(max_size=10))] = draw(values)
            elif op == "replace" and data:
                data[draw(st.sampled_from(sorted(data)))] = draw(values)
        frame: dict[str, Any] = {"type": kind}
        shape = draw(st.sampled_from(["data", "data", "data", "no_data", "bad_data"]))
        if shape == "data":
            frame["data"] = data
        elif shape == "bad_data":
            frame["data"] = draw(values)
        ref = draw(st.sampled_from(["none", "short", "long", "any"]))
        if ref == "short":
            frame["ref"] = draw(st.text(max_size=20))
        elif ref == "long":
            frame["ref"] = draw(st.text(min_size=60, max_size=70))
        elif ref == "any":
            frame["ref"] = draw(values)
        if draw(st.integers(0, 9)) == 0:
            frame[draw(st.text(max_size=8))] = draw(values)
        if draw(st.booleans()):
            frame = dict(reversed(list(frame.items())))
        return _dumps(frame)

    nested = st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 5_000).map(
        lambda n: '{"type": "ping", "data": ' + '{"a": ' * n + "1" + "}" * n + "}"
    )
    payload: st.SearchStrategy[str | bytes] = st.one_of(
        plausible_frame(),
        plausible_frame(),
        plausible_frame(),
        plausible_frame(),
        mutated_frame(),
        mutated_frame(),
        values.map(_dumps),
        st.text(max_size=200),
        st.binary(max_size=200),
        nested,
        st.integers(MAX_FRAME - 2, MAX_FRAME + 2).map(lambda n: "x" * n),
    )
    return st.lists(payload, min_size=1, max_size=4)


# --- Checking what comes back ------------------------------------------------------------------
def _expected_ref(payload: str | bytes) -> tuple[bool, str | None]:
    """(a reply is owed, the ref it must carry), per the documented rules."""
    if isinstance(payload, bytes) or len(payload) > MAX_FRAME:
        return True, None
    try:
        frame = protocol.parse(payload)
    except ApplicationError as exc:
        return True, exc.extra.get("ref")
    # A successful typing frame has no reply; its errors (e.g. rate_limited) do.
    return frame.type != "typing", frame.ref


def _check_frame(raw: Any, where: str) -> dict[str, Any]:
    assert isinstance(raw, str), f"{where}: a binary frame came back: {raw!r:.200}"
    frame = json.loads(raw)
    assert isinstance(frame, dict), f"{where}: not a JSON object: {raw:.200}"
    assert frame.get("type") in protocol.SERVER_FRAMES, f"{where}: unknown frame {raw:.300}"
    if frame["type"] == "error":
        code = frame["error"]["code"]
        assert code in protocol.ERROR_CODES, f"{where}: undocumented code {raw:.300}"
        assert code != "internal_error", f"{where}: {raw:.300}"
    return frame


async def _exchange(ws: Any, payloads: list[str | bytes], sentinel: str, stats: Counter[str]) -> None:
    owed: list[str | None] = []
    for payload in payloads:
        await ws.send(payload)
        needs_reply, ref = _expected_ref(payload)
        if needs_reply:
            owed.append(ref)
    await ws.send(json.dumps({"type": "ping", "ref": sentinel}))
    replies: list[dict[str, Any]] = []
    while True:
        try:
            raw = await asyncio.wait_for(ws.recv(), 15)
        except Exception as exc:
            pytest.fail(f"the socket died or hung after {[p[:200] for p in payloads]!r}: {exc!r}")
        frame = _check_frame(raw, f"reply to {[p[:200] for p in payloads]!r}")
        if frame["type"] == "pong" and frame.get("ref") == sentinel:
            break
        if frame["type"] in REPLY_TYPES:
            replies.append(frame)
        stats[frame["error"]["code"] if frame["type"] == "error" else frame["type"]] += 1
    assert len(replies) >= len(owed), (payloads, replies)
    got = [r.get("ref") for r in replies]
    for ref in owed:
        assert ref in got, f"no reply carrying ref {ref!r} to {[p[:200] for p in payloads]!r}: {replies}"
        got.remove(ref)


async def _watch(ws: Any, seen: list[dict[str, Any]]) -> None:
    """The bystander keeps reading (as a real client does) and checks every frame."""
    async for raw in ws:
        seen.append(_check_frame(raw, "bystander"))


# --- The test ----------------------------------------------------------------------------------
def test_fuzzed_frames_never_break_the_server(server: Any, make_token: Any) -> None:
    patient, doctor, conversation = pair()
    _other_patient, _other_doctor, foreign = pair()
    mine = services.message_send(
        sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="mine"
    ).message
    theirs = services.message_send(
        sender=doctor, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="theirs"
    ).message
    ctx = {
        "conversation": conversation.pk,
        "foreign_conversation": foreign.pk,
        "messages": [mine.pk, theirs.pk],
        "me": patient.pk,
        "peer": doctor.pk,
        "reused_client_id": str(mine.client_id),
    }
    sentinels = itertools.count()
    stats: Counter[str] = Counter()
    loop = asyncio.new_event_loop()
    fuzzer = loop.run_until_complete(
        WsClient.connect(
            server.ws_url, make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
        )
    )
    bystander = loop.run_until_complete(
        WsClient.connect(server.ws_url, make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number))
    )
    seen_by_bystander: list[dict[str, Any]] = []
    watcher = loop.create_task(_watch(bystander.ws, seen_by_bystander))
    hs256 = (
        f"{_b64(json.dumps({'alg': 'HS256', 'v': 0}).encode())}."
        f"{_b64(json.dumps({'v': 0, 'd': 5}).encode())}.c2ln"
    )
    infinite_cursor = _b64(json.dumps({"v": 1, "c": {str(conversation.pk): float("inf")}}).encode())

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(payloads=strategies(ctx))
    # Regressions found while writing this test: each once produced internal_error.
    @example(
        payloads=[
            '{"type": "message.send", "ref": "s1", "data": {"conversation_id": '
            f'{conversation.pk}, "client_id": "{uuid.uuid4()}", "body": "x\\ud800"}}}}'
        ]
    )
    @example(
        payloads=[
            json.dumps({"type": "message.edit", "ref": "e1", "data": {"message_id": mine.pk, "body": "ed"}})
        ]
    )
    @example(
        payloads=[
            json.dumps(
                {
                    "type": "message.send",
                    "ref": "r1",
                    "data": {
                        "conversation_id": conversation.pk,
                        "client_id": str(uuid.uuid4()),
                        "body": "hi",
                        "reply_to": big,
                    },
                }
            )
            for big in (2**63, 10**30, -(2**63) - 1)
        ]
    )
    @example(payloads=[json.dumps({"type": "auth.refresh", "ref": "t1", "data": {"token": hs256}})])
    @example(payloads=[json.dumps({"type": "sync", "ref": "c1", "data": {"cursor": infinite_cursor}})])
    @example(payloads=["[" * 100_000 + "]" * 100_000, b"\x00\xff", "x" * (MAX_FRAME + 1)])
    def probe(payloads: list[str | bytes]) -> None:
        loop.run_until_complete(_exchange(fuzzer.ws, payloads, f"\u2603sentinel-{next(sentinels)}", stats))

    try:
        probe()
        print(f"{next(sentinels)} examples; replies and events: {dict(stats.most_common())}")
        # The fuzzing reached the handlers, not only the parser.
        assert stats["ack"] > 0, stats
        assert len(set(stats) & set(protocol.ERROR_CODES)) >= 8, stats

        async def seen(pred: Any) -> dict[str, Any]:
            """A frame the bystander's reader task received (it owns ``recv``)."""
            for _ in range(200):
                for frame in seen_by_bystander:
                    if pred(frame):
                        return frame
                await asyncio.sleep(0.05)
            pytest.fail(f"the bystander did not get it; last frames: {seen_by_bystander[-5:]}")

        async def still_working() -> dict[str, Any]:
            assert (await fuzzer.request("ping"))["type"] == "pong"
            await bystander.ws.send(json.dumps({"type": "ping", "ref": "b-ping"}))
            await seen(lambda f: f["type"] == "pong" and f.get("ref") == "b-ping")
            await bystander.send(
                "message.send",
                ref="b-send",
                data={
                    "conversation_id": conversation.pk,
                    "client_id": str(uuid.uuid4()),
                    "body": "still here",
                },
            )
            ack = await seen(lambda f: f.get("ref") == "b-send")
            assert ack["type"] == "ack", ack
            sent = ack["data"]["message"]
            got = await fuzzer.expect("message.new", lambda f: f["data"]["message"]["id"] == sent["id"])
            assert got["data"]["message"]["body"] == "still here"
            return sent

        last = loop.run_until_complete(still_working())
        assert fuzzer.close_code is None
        assert bystander.close_code is None
        if watcher.done():
            watcher.result()  # re-raises what the bystander's reader found
            pytest.fail("the bystander's socket ended")
    finally:
        watcher.cancel()
        loop.run_until_complete(asyncio.gather(watcher, return_exceptions=True))
        loop.run_until_complete(fuzzer.close())
        loop.run_until_complete(bystander.close())
        loop.close()

    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
    # Whatever got stored is well-formed and the conversation's seq stayed gapless.
    seqs = list(
        Message.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True)
    )
    assert seqs == list(range(1, len(seqs) + 1))
    assert last["seq"] in seqs  # (a fuzzed call may log its end after it: calls' history entries)
    assert not Message.objects.filter(conversation=foreign).exists()
    for body in Message.objects.filter(
        conversation=conversation, kind="text", deleted_at__isnull=True
    ).values_list("body", flat=True):
        assert body.strip()
        assert len(body) <= 8000
        assert not CONTROL.search(body)
        body.encode("utf-8")


def _jwt(header: Any, claims: Any) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.c2ln"


@pytest.mark.parametrize(
    "token",
    [
        _jwt({"alg": "HS256", "v": 0}, {"v": 0, "d": 5}),  # once killed the socket (TypeError)
        _jwt({"alg": "RS256", "kid": ["x"]}, {"sub": "x"}),
        _jwt([1, 2], {"sub": "x"}),
        _jwt({"alg": "RS256", "kid": TEST_KID}, [1]),
        "a.b.c",
        "x" * 8192,
    ],
)
def test_malformed_tokens_in_auth_frames_close_4401(server: Any, token: str) -> None:
    """Before authentication, a bad token gets an error with the frame's ref, then close 4401."""

    async def scenario() -> None:
        client = await WsClient.connect(server.ws_url)
        ref = await client.send("auth", {"token": token})
        frame = await client.expect("error")
        assert frame["error"]["code"] == "invalid_token", frame
        assert frame["ref"] == ref
        await client.ws.wait_closed()
        assert client.close_code == 4401

    asyncio.run(scenario())
