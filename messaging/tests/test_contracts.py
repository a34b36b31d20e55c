"""The socket contract: typed server frames (``frames``), the one message wire shape, and
``docs/asyncapi.yaml`` (generated, up to date, valid for the AsyncAPI project's own parser)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from accounts import services as account_services
from calls import frames as call_frames
from core.errors import ApplicationError
from messaging import asyncapi, consumers, frames, protocol
from messaging.tests.test_protocol_docs import _doc, _json_blocks

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "scripts" / "asyncapi_validate.mjs"


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        for arg in re.findall(r"[\w.]+", repr(field.annotation)):
            name = arg.rsplit(".", 1)[-1]
            found = getattr(frames, name, None) or getattr(call_frames, name, None)
            if isinstance(found, type) and issubclass(found, BaseModel):
                _models(found, seen)


def test_every_server_frame_has_a_model_that_refuses_unknown_fields() -> None:
    assert tuple(frames.SERVER_FRAME_MODELS) == protocol.SERVER_FRAMES
    seen: set[type[BaseModel]] = set()
    for name, model in frames.SERVER_FRAME_MODELS.items():
        assert model.model_fields["type"].annotation.__args__ == (name,)  # type: ignore[union-attr]
        _models(model, seen)
    assert frames.Message in seen
    assert call_frames.Call in seen
    for model in seen:
        assert model.model_config.get("extra") == "forbid", model


def test_a_field_the_model_does_not_know_is_refused() -> None:
    data: dict[str, Any] = {"conversation_id": 1, "user_id": 2, "active": True}
    frame: dict[str, Any] = {"type": "typing", "data": data}
    frames.validate_server_frame(frame)
    with pytest.raises(ValidationError):
        frames.validate_server_frame({**frame, "data": {**data, "secret": 1}})
    with pytest.raises(ValidationError):
        frames.validate_server_frame({**frame, "surprise": True})


def _is_client_frame(frame: dict[str, Any]) -> bool:
    try:
        protocol.parse(json.dumps(frame))
    except ApplicationError:
        return False
    return True


def test_every_server_frame_example_in_protocol_md_matches_its_model() -> None:
    checked = 0
    for frame in _json_blocks(_doc()):
        if frame.get("type") in protocol.CLIENT_FRAMES and _is_client_frame(frame):
            continue  # a request (call.*, typing: names both sides use)
        frames.validate_server_frame(frame)
        checked += 1
    assert checked > 40


# Modules whose own objects (not messages) have an ``edited_at``.
NOT_MESSAGES = {"ratings/selectors.py"}  # a review's last edit


def test_the_message_wire_shape_is_built_in_one_place() -> None:
    """Every message a client sees (ack, message.new/updated, sync, group events, REST history)
    goes through ``selectors.message_data`` and ``frames.message_wire``: no other module spells
    the message's keys or adapts its own input."""
    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", "node_modules/", "bench/")) or "/tests/" in rel or "/migrations/" in rel:
            continue
        if rel == "messaging/frames.py":
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"""["']edited_at["']\s*:""", text) and rel not in NOT_MESSAGES:
            offenders.append(rel)
        # and one adapter feeds it: ``selectors.message_data`` (a stored ``Message`` or a batch's
        # ``WrittenMessage``); no other module calls ``message_wire``
        if rel != "messaging/selectors/wire.py" and "message_wire(" in text:
            offenders.append(rel)
    assert offenders == []


def test_close_codes_the_server_uses_are_documented() -> None:
    used = {
        consumers.CLOSE_UNAUTHORIZED,
        consumers.CLOSE_FORBIDDEN,
        consumers.CLOSE_FLOOD,
        consumers.CLOSE_IDLE,
        consumers.CLOSE_INTERNAL_ERROR,
        consumers.CLOSE_TRY_AGAIN_LATER,
        account_services.CLOSE_FORBIDDEN,
        account_services.CLOSE_UNAUTHORIZED,
    }
    assert used <= set(frames.CLOSE_CODES)
    table = _doc().split("## Close codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(c) for c in re.findall(r"^\| (\d{4}) \|", table, re.M)}
    assert documented == set(frames.CLOSE_CODES)


# --- docs/asyncapi.yaml -----------------------------------------------------------------------
def test_asyncapi_document_is_up_to_date() -> None:
    committed = asyncapi.DOCUMENT.read_text(encoding="utf-8") if asyncapi.DOCUMENT.exists() else ""
    assert committed == asyncapi.render(), f"docs/asyncapi.yaml is stale: run `{asyncapi.REGENERATE}`"


def test_asyncapi_document_names_every_frame_error_code_and_close_code() -> None:
    document: dict[str, Any] = yaml.safe_load(asyncapi.DOCUMENT.read_text(encoding="utf-8"))
    assert document["asyncapi"].startswith("3.")
    messages = document["channels"][asyncapi.CHANNEL]["messages"]
    expected = {asyncapi.message_key("client", t) for t in protocol.CLIENT_FRAMES}
    expected |= {asyncapi.message_key("server", t) for t in protocol.SERVER_FRAMES}
    assert set(messages) == expected
    operations = document["operations"]
    assert {o["action"] for o in operations.values()} == {"send", "receive"}
    assert len(operations) == len(expected)
    schemas = document["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == list(protocol.ERROR_CODES)
    assert schemas["CloseCode"]["enum"] == sorted(frames.CLOSE_CODES)
    description = document["info"]["description"]
    assert "## Authentication flow" in description
    assert "## Sync flow" in description


def _node() -> str:
    node = shutil.which("node")
    assert node, "node is required (the AsyncAPI parser is an npm package: `npm ci`)"
    return node


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_node(), str(VALIDATOR), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=180
    )


def test_asyncapi_document_is_valid_for_the_asyncapi_parser(tmp_path: Path) -> None:
    result = _validate(asyncapi.DOCUMENT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3" in result.stdout
    # The validator is not a rubber stamp: an operation naming a channel that does not exist fails.
    broken = yaml.safe_load(asyncapi.DOCUMENT.read_text(encoding="utf-8"))
    broken["operations"]["send.ack"]["channel"] = {"$ref": "#/channels/nowhere"}
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = _validate(bad)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error" in result.stdout
