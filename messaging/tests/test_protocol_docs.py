"""docs/protocol.md is checked against the protocol module, and ``protocol.parse`` is unit-tested.

The document's structure is the contract of these tests: under ``## Client frames`` and
``## Server frames`` one ``### `name` `` heading per frame type; under ``## Error codes`` one
table row per code with the code in backticks as the first cell; every ```` ```json ```` block
is a frame (one JSON document, or one per line).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.errors import ApplicationError
from messaging import protocol
from messaging import validators as mv
from messaging.handlers import HANDLERS

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
NAME = re.compile(r"`([^`]+)`")


# --- Reading the document -------------------------------------------------------------------
def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _sections(text: str, level: int) -> dict[str, str]:
    """Heading text → body, for headings of exactly ``level`` (code blocks are skipped)."""
    marker = "#" * level + " "
    out: dict[str, str] = {}
    current: str | None = None
    body: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("#") and line.split(" ", 1)[0].count("#") <= level:
            if current is not None:
                out[current] = "\n".join(body)
            current = line[len(marker) :].strip() if line.startswith(marker) else None
            body = []
            continue
        if current is not None:
            body.append(line)
    if current is not None:
        out[current] = "\n".join(body)
    return out


def _section(title: str) -> str:
    sections = _sections(_doc(), 2)
    assert title in sections, f"docs/protocol.md has no '## {title}' section"
    return sections[title]


def _frame_headings(title: str) -> list[str]:
    """The backticked names of the ``###`` headings of a section (one frame type each)."""
    names = []
    for heading in _sections(_section(title), 3):
        match = re.fullmatch(r"`([^`]+)`", heading)
        assert match, f"'### {heading}' under '## {title}' is not a backticked frame name"
        names.append(match.group(1))
    return names


def _table_first_cells(body: str) -> list[str]:
    cells = []
    for line in body.splitlines():
        if line.startswith("|") and not re.match(r"\|\s*-", line):
            cells.append(line.split("|")[1].strip())
    return cells[1:]  # without the header row


def _json_blocks(body: str) -> list[Any]:
    """Every ```json block, each one JSON document or one document per line."""
    frames: list[Any] = []
    for block in re.findall(r"```json\n(.*?)```", body, flags=re.DOTALL):
        try:
            frames.append(json.loads(block))
        except json.JSONDecodeError:
            frames.extend(json.loads(line) for line in block.splitlines() if line.strip())
    return frames


def _error_codes_named_in(body: str) -> set[str]:
    """Backticked names on the lines that list errors (``Errors: `a`, `b` ...``)."""
    names: set[str] = set()
    for paragraph in re.split(r"\n\s*\n", body):
        if paragraph.startswith("Errors"):
            names.update(n for n in NAME.findall(paragraph) if re.fullmatch(r"[a-z0-9_]+", n))
    return names


# --- The document against the module ---------------------------------------------------------
def test_every_client_frame_is_documented_and_nothing_else():
    names = _frame_headings("Client frames")
    assert len(names) == len(set(names)), "a client frame is documented twice"
    assert set(names) == set(protocol.CLIENT_FRAMES)


def test_every_server_frame_is_documented_and_nothing_else():
    names = _frame_headings("Server frames")
    assert len(names) == len(set(names)), "a server frame is documented twice"
    assert set(names) == set(protocol.SERVER_FRAMES)


def test_every_error_code_has_one_table_row_and_nothing_else():
    cells = _table_first_cells(_section("Error codes"))
    codes = []
    for cell in cells:
        match = re.fullmatch(r"`([a-z0-9_]+)`", cell)
        assert match, f"error table row does not start with a backticked code: {cell!r}"
        codes.append(match.group(1))
    assert len(codes) == len(set(codes)), "an error code has two rows"
    assert set(codes) == set(protocol.ERROR_CODES)
    assert len(protocol.ERROR_CODES) == len(set(protocol.ERROR_CODES))


def test_error_table_rows_say_what_each_code_means():
    for line in _section("Error codes").splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) >= 2, line
            assert len(cells[1]) > 10, line


def test_close_codes_table():
    cells = set(_table_first_cells(_section("Close codes")))
    assert {"4401", "4403", "4429"} <= cells


def test_errors_listed_per_frame_are_real_codes():
    named = _error_codes_named_in(_section("Client frames"))
    assert named, "no 'Errors:' lists found under Client frames"
    assert named <= set(protocol.ERROR_CODES), named - set(protocol.ERROR_CODES)


def test_client_frame_examples_are_accepted_by_the_parser():
    sections = _sections(_section("Client frames"), 3)
    for heading, body in sections.items():
        name = heading.strip("`")
        frames = _json_blocks(body)
        assert frames, f"client frame {name} has no JSON example"
        request = frames[0]
        assert request["type"] == name, f"the first example under {name} is not a {name} request"
        parsed = protocol.parse(json.dumps(request))
        assert parsed.type == name
        assert parsed.ref == request.get("ref")
        for reply in frames[1:]:
            assert reply["type"] in protocol.SERVER_FRAMES, (name, reply)
            if "ref" in reply and reply["type"] in ("ack", "error", "pong", "ready", "sync.done"):
                assert reply["ref"] == request.get("ref"), (name, reply)


def test_server_frame_sections_show_their_frame():
    for heading, body in _sections(_section("Server frames"), 3).items():
        name = heading.strip("`")
        assert name in [f.get("type") for f in _json_blocks(body)], f"no example of {name}"


def test_every_json_example_is_a_known_frame():
    frames = _json_blocks(_doc())
    assert len(frames) > 20
    for frame in frames:
        assert isinstance(frame, dict), frame
        kind = frame.get("type")
        assert kind in protocol.CLIENT_FRAMES or kind in protocol.SERVER_FRAMES, frame
        if kind == "error":
            assert frame["error"]["code"] in protocol.ERROR_CODES, frame
        if kind in mv.EVENT_KINDS:
            assert isinstance(frame.get("event"), int), f"{kind} example without its event number"


def test_every_event_log_kind_is_a_server_frame():
    assert set(mv.EVENT_KINDS) <= set(protocol.SERVER_FRAMES)


def test_every_client_frame_but_auth_has_a_handler():
    assert set(protocol.CLIENT_FRAMES) - {"auth"} <= set(HANDLERS)
    assert set(HANDLERS) <= set(protocol.CLIENT_FRAMES)


# --- protocol.parse --------------------------------------------------------------------------
CLIENT_ID = "3f0c1a9e-8d5b-4c7e-9a61-2b7d9e4f5a10"
VALID: dict[str, dict[str, Any]] = {
    "ping": {},
    "auth": {"token": "header.payload.signature", "device_id": 5},
    "auth.refresh": {"token": "header.payload.signature"},
    "message.send": {
        "conversation_id": 42,
        "client_id": CLIENT_ID,
        "body": "hello",
        "reply_to": 7,
        "attachment_ids": None,
        "ciphertexts": None,
    },
    "message.edit": {"message_id": 1, "body": "edited"},
    "message.delete": {"message_id": 1},
    "message.delivered": {"conversation_id": 42, "seq": 3},
    "message.read": {"conversation_id": 42, "seq": 0},
    "typing": {"conversation_id": 42, "active": False},
    "sync": {"cursor": "eyJ2IjoxLCJjIjp7fX0"},
    "presence.subscribe": {"user_ids": [1, 2, 3]},
    "call.invite": {"conversation_id": 42, "media": "video", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"},
    "call.ringing": {"call_id": 9},
    "call.accept": {"call_id": 9, "sdp": "v=0\r\no=- 3 2 IN IP4 127.0.0.1\r\n"},
    "call.reject": {"call_id": 9},
    "call.cancel": {"call_id": 9},
    "call.hangup": {"call_id": 9, "reason": "failed"},
    "call.ice": {
        "call_id": 9,
        "candidate": {
            "candidate": "candidate:1 1 udp 1 10.0.0.2 5000 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        },
    },
    "call.update": {"call_id": 9, "sdp": "v=0\r\no=- 1 3 IN IP4 127.0.0.1\r\n"},
    "call.resume": {"call_id": 9},
    "appointment.check_in": {"appointment_id": 12},
    "waiting_room.admit": {"appointment_id": 12, "start_call": "video", "sdp": "v=0\r\n"},
}
# A wrong-typed value for each field (never one pydantic's lax mode would coerce).
WRONG_TYPES: list[tuple[str, str, Any]] = [
    ("auth", "token", 123),
    ("auth", "token", ""),
    ("auth", "device_id", "five"),
    ("auth.refresh", "token", None),
    ("message.send", "conversation_id", "abc"),
    ("message.send", "conversation_id", 1.5),
    ("message.send", "conversation_id", [42]),
    ("message.send", "conversation_id", 2**63),
    ("message.send", "reply_to", 2**63),
    ("message.send", "reply_to", -(2**63) - 1),
    ("message.send", "attachment_ids", [1, 10**30]),
    ("message.send", "client_id", "not-a-uuid"),
    ("message.send", "client_id", 12345),
    ("message.send", "body", 5),
    ("message.send", "body", ["hello"]),
    ("message.send", "reply_to", "seven"),
    ("message.send", "attachment_ids", "1,2"),
    ("message.send", "attachment_ids", list(range(11))),
    ("message.send", "ciphertexts", ["x"]),
    ("message.send", "ciphertexts", {"5": 1}),
    ("message.edit", "message_id", {"id": 1}),
    ("message.edit", "body", None),
    ("message.delete", "message_id", None),
    ("message.delivered", "seq", -1),
    ("message.delivered", "seq", "many"),
    ("message.delivered", "seq", 2**63),
    ("message.edit", "message_id", 2**64),
    ("auth", "device_id", 2**63),
    ("message.read", "conversation_id", None),
    ("typing", "active", "maybe"),
    ("typing", "active", None),
    ("sync", "cursor", 5),
    ("sync", "cursor", "x" * 65537),
    ("presence.subscribe", "user_ids", 1),
    ("presence.subscribe", "user_ids", ["a"]),
    ("presence.subscribe", "user_ids", [1, 2**63]),
    ("presence.subscribe", "user_ids", list(range(501))),
    ("call.invite", "media", "hologram"),
    ("call.invite", "sdp", 5),
    ("call.invite", "conversation_id", 2**63),
    ("call.accept", "call_id", "nine"),
    ("call.hangup", "reason", "bored"),
    ("call.ice", "candidate", "candidate:1 1 udp"),
    ("call.ice", "candidate", {"candidate": {"nested": 1}}),
    ("call.ice", "candidate", {f"k{i}": 1 for i in range(9)}),
]
REQUIRED: list[tuple[str, str]] = [
    ("auth", "token"),
    ("auth.refresh", "token"),
    ("message.send", "conversation_id"),
    ("message.send", "client_id"),
    ("message.edit", "message_id"),
    ("message.edit", "body"),
    ("message.delete", "message_id"),
    ("message.delivered", "conversation_id"),
    ("message.delivered", "seq"),
    ("message.read", "seq"),
    ("typing", "conversation_id"),
    ("typing", "active"),
    ("presence.subscribe", "user_ids"),
    ("call.invite", "conversation_id"),
    ("call.invite", "media"),
    ("call.invite", "sdp"),
    ("call.accept", "sdp"),
    ("call.ice", "candidate"),
    ("call.resume", "call_id"),
    ("appointment.check_in", "appointment_id"),
    ("waiting_room.admit", "appointment_id"),
]


_VALID_DATA = object()


def _frame(kind: str, data: Any = _VALID_DATA, **top: Any) -> str:
    frame: dict[str, Any] = {"type": kind, "ref": "r-1"}
    frame["data"] = VALID[kind] if data is _VALID_DATA else data
    frame.update(top)
    return json.dumps(frame)


def _refused(text: str) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        protocol.parse(text)
    assert info.value.code in protocol.ERROR_CODES
    return info.value


def _problems(exc: ApplicationError) -> list[dict[str, str]]:
    assert exc.fields is not None
    return list(exc.fields["problems"])


def test_every_client_frame_has_a_valid_example_here():
    assert set(VALID) == set(protocol.CLIENT_FRAMES)


@pytest.mark.parametrize("kind", protocol.CLIENT_FRAMES)
def test_valid_frames_of_every_type_parse(kind):
    frame = protocol.parse(_frame(kind))
    assert frame.type == kind
    assert frame.ref == "r-1"
    dumped = frame.data.model_dump(mode="json")
    for key, value in VALID[kind].items():
        assert dumped[key] == value


def test_ping_and_sync_may_omit_data_and_ref():
    assert protocol.parse('{"type": "ping"}').ref is None
    sync = protocol.parse('{"type": "sync"}')
    assert sync.data.cursor is None
    assert protocol.parse('{"type": "sync", "data": {}}').data.cursor is None


def test_ids_span_the_bigint_range():
    big = 2**63 - 1
    frame = protocol.parse(_frame("message.send", {**VALID["message.send"], "reply_to": big}))
    assert frame.data.reply_to == big
    frame = protocol.parse(_frame("message.read", {"conversation_id": -(2**63), "seq": big}))
    assert frame.data.seq == big


def test_parsed_values_are_typed():
    frame = protocol.parse(_frame("message.send"))
    assert frame.data.client_id == uuid.UUID(CLIENT_ID)
    assert frame.data.conversation_id == 42
    with pytest.raises(ValidationError):  # frames are frozen
        frame.data.body = "changed"


@pytest.mark.parametrize("kind", protocol.CLIENT_FRAMES)
def test_unknown_top_level_fields_are_refused(kind):
    exc = _refused(_frame(kind, sneaky=True))
    assert exc.code == "invalid_frame"
    assert exc.extra["ref"] == "r-1"
    assert {"field": "sneaky", "problem": "extra_forbidden"} in _problems(exc)


@pytest.mark.parametrize("kind", protocol.CLIENT_FRAMES)
def test_unknown_data_fields_are_refused(kind):
    exc = _refused(_frame(kind, {**VALID[kind], "sneaky": 1}))
    assert exc.code == "invalid_frame"
    assert {"field": "data.sneaky", "problem": "extra_forbidden"} in _problems(exc)


@pytest.mark.parametrize(("kind", "field", "value"), WRONG_TYPES)
def test_wrong_types_are_refused(kind, field, value):
    exc = _refused(_frame(kind, {**VALID[kind], field: value}))
    assert exc.code == "invalid_frame"
    assert exc.extra["ref"] == "r-1"
    assert any(p["field"].startswith(f"data.{field}") for p in _problems(exc)), _problems(exc)


@pytest.mark.parametrize(("kind", "field"), REQUIRED)
def test_missing_required_fields_are_refused(kind, field):
    data = {k: v for k, v in VALID[kind].items() if k != field}
    exc = _refused(_frame(kind, data))
    assert exc.code == "invalid_frame"
    assert {"field": f"data.{field}", "problem": "missing"} in _problems(exc)


@pytest.mark.parametrize("kind", [k for k in protocol.CLIENT_FRAMES if k not in ("ping", "sync")])
def test_data_is_required_and_must_be_an_object(kind):
    assert _refused(json.dumps({"type": kind, "ref": "r-1"})).code == "invalid_frame"
    for data in (None, [], "x", 1):
        assert _refused(_frame(kind, data)).code == "invalid_frame"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "invalid_json"),
        ("not json", "invalid_json"),
        ("{'type': 'ping'}", "invalid_json"),
        ('{"type": "ping"', "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json"),
        ("[]", "invalid_frame"),
        ('"ping"', "invalid_frame"),
        ("null", "invalid_frame"),
        ("42", "invalid_frame"),
        ("{}", "unknown_type"),
        ('{"type": null}', "unknown_type"),
        ('{"type": ["ping"]}', "unknown_type"),
        ('{"type": "PING"}', "unknown_type"),
        ('{"type": "call.dial", "data": {}}', "unknown_type"),
        ('{"type": "ready"}', "unknown_type"),
    ],
)
def test_malformed_frames(text, code):
    assert _refused(text).code == code


def test_ref_is_extracted_for_errors():
    assert _refused('{"type": "launch", "ref": "abc"}').extra["ref"] == "abc"
    assert _refused('{"type": "ping", "ref": "abc", "data": 1}').extra["ref"] == "abc"
    assert _refused('{"type": "ping", "ref": 5}').extra["ref"] is None
    assert _refused('{"type": "launch", "ref": ["abc"]}').extra["ref"] is None
    long_ref = "x" * (protocol.MAX_REF + 1)
    exc = _refused(json.dumps({"type": "ping", "ref": long_ref}))
    assert exc.code == "invalid_frame"
    assert exc.extra["ref"] is None
    assert protocol.parse(json.dumps({"type": "ping", "ref": "x" * protocol.MAX_REF})).ref == "x" * 64
    assert protocol.parse('{"type": "ping", "ref": "\\ud83d\\ude00"}').ref == "\U0001f600"


def test_non_string_ref_is_refused():
    exc = _refused('{"type": "ping", "ref": 5}')
    assert exc.code == "invalid_frame"
    assert {"field": "ref", "problem": "string_type"} in _problems(exc)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "message.send", "ref": "a", "data": {"conversation_id": 1, '
        f'"client_id": "{CLIENT_ID}", "body": "x\\ud800"}}}}',
        '{"type": "message.edit", "ref": "a", "data": {"message_id": 1, "body": "\\udfff"}}',
        '{"type": "sync", "ref": "a", "data": {"cursor": "\\udc00abc"}}',
        '{"type": "ping", "ref": "a", "data": {"\\ud800": 1}}',
    ],
)
def test_lone_surrogates_are_refused(text):
    exc = _refused(text)
    assert exc.code == "invalid_frame"
    assert exc.extra["ref"] == "a"


def test_a_ref_with_a_lone_surrogate_is_not_echoed():
    exc = _refused('{"type": "ping", "ref": "\\ud800"}')
    assert exc.code == "invalid_frame"
    assert exc.extra["ref"] is None


def test_an_escaped_backslash_u_is_just_text():
    frame = protocol.parse('{"type": "message.edit", "data": {"message_id": 1, "body": "\\\\ud800"}}')
    assert frame.data.body == "\\ud800"


def test_peek_ref():
    assert protocol.peek_ref('{"type": "ping", "ref": "r9"}') == "r9"
    assert protocol.peek_ref('{"type": "ping", "ref": 9}') is None
    assert protocol.peek_ref('{"ref": "\\ud800"}') is None
    assert protocol.peek_ref("[1]") is None
    assert protocol.peek_ref("nope") is None
    assert protocol.peek_ref(None) is None
    assert protocol.peek_ref(json.dumps({"ref": "r", "pad": "x" * 5000})) is None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(protocol.CLIENT_FRAMES),
    data=st.dictionaries(st.text(max_size=16), JSON_VALUES, max_size=5) | JSON_VALUES,
    ref=JSON_VALUES,
)
def test_parse_never_fails_with_anything_but_a_documented_code(kind, data, ref):
    try:
        frame = protocol.parse(json.dumps({"type": kind, "ref": ref, "data": data}))
    except ApplicationError as exc:
        code = exc.code
    else:
        assert frame.type == kind
        return
    assert code in ("invalid_frame", "invalid_json")


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_parse_of_arbitrary_text(text):
    try:
        protocol.parse(text)
    except ApplicationError as exc:
        code = exc.code
    else:
        return
    assert code in ("invalid_json", "invalid_frame", "unknown_type")
