"""``docs/asyncapi.yaml``: the AsyncAPI 3 document of the WebSocket, generated from the frame models.

Client frames come from ``protocol`` (what the server receives), server frames from ``frames``
(what it sends); error codes from ``protocol.ERROR_CODES``, close codes from
``frames.CLOSE_CODES``. The output is deterministic: ``manage.py asyncapi --check`` (and a test)
fail when the committed file differs from what the code generates.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import frames, protocol

DOCUMENT = Path(settings.BASE_DIR) / "docs" / "asyncapi.yaml"
CHANNEL = "socket"
REGENERATE = "python manage.py asyncapi --write"

# Request frames and the server frames that answer them.
REPLIES: dict[str, tuple[str, ...]] = {
    "ping": ("pong", "error"),
    "auth": ("ready", "error"),
    "sync": ("sync.done", "error"),
    "typing": ("error",),
}
DEFAULT_REPLY = ("ack", "error")

DESCRIPTION = """\
The healthchat real-time protocol (WebSocket v1), generated from the typed frame models
(`messaging/protocol.py`: frames the client sends; `messaging/frames.py`: frames the server
sends; each app's own registered there, e.g. `calls/protocol.py`, `calls/frames.py`) by
`{regenerate}`. The prose reference, with every frame's behaviour, is
`docs/protocol.md`.

Every frame is one JSON object in a WebSocket text frame: `type`, an optional `ref` (the
client's correlation id, at most 64 characters, echoed in the reply) and `data`. Unknown keys
are refused (`invalid_frame`).

## Authentication flow
1. Connect to `/ws/v1/` with `Authorization: Bearer <Firebase ID token>` (and optionally
   `X-Device-Id`): the first frame is `ready` without `ref`. A client that cannot set headers
   connects without them and sends an `auth` frame (`token`, optional `device_id`) within
   `HEALTHCHAT_WS_AUTH_TIMEOUT` seconds: the reply is `ready` with the frame's `ref`.
2. A failure is an `error` frame followed by close 4401 (token problems, `auth_timeout`) or 4403
   (`not_registered`, `device_not_found`). Before `ready`, any other frame gets
   `not_authenticated`.
3. Before the token's `exp`, send `auth.refresh` with a fresh token (reply `ack`
   `{{expires_at}}`); otherwise the server sends `error` `token_expired` and closes with 4401.

## Sync flow
1. After `ready` (and after every reconnect), send `sync` with the cursor of the last
   `sync.done` (none on a device's first sync).
2. The server replies with the missed conversation-log entries (`message.new`,
   `message.updated`, `receipt`, `member.*`, `group.updated`, `identity.changed`,
   `device.added`; each with its per-conversation `event` number), then `sync.done`
   `{{cursor, more}}`. While `more` is true, `sync` again with the new cursor; store the cursor.
3. Live frames carry the same `event` numbers: deduplicate by `(conversation_id, event)`. On a
   `seq` gap, or when the server sends `sync.required` (its live path was interrupted), `sync`
   again from the stored cursor.

## Close codes
{close_codes}
"""


def _close_table() -> str:
    rows = ["| code | when |", "| --- | --- |"]
    rows += [f"| {code} | {text} |" for code, text in sorted(frames.CLOSE_CODES.items())]
    return "\n".join(rows)


def _clean(node: Any) -> Any:
    """pydantic's JSON schema without what is noise on the wire: ``default: null`` of fields that
    are simply absent when empty."""
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _schemas(models: dict[str, type[BaseModel]], prefix: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Component schemas of ``models`` (named ``prefix`` + model name) and each frame's name."""
    _, schema = models_json_schema(
        [(model, "validation") for model in models.values()],
        ref_template=f"#/components/schemas/{prefix}{{model}}",
    )
    defs = {f"{prefix}{name}": _clean(body) for name, body in schema.get("$defs", {}).items()}
    return defs, {frame_type: f"{prefix}{model.__name__}" for frame_type, model in models.items()}


def _client_models() -> dict[str, type[BaseModel]]:
    """``protocol.ClientFrame``'s members, by frame type, in ``CLIENT_FRAMES`` order."""
    members = typing.get_args(typing.get_args(protocol.ClientFrame)[0])
    by_type = {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}
    return {name: by_type[name] for name in protocol.CLIENT_FRAMES}


def _message(direction: str, frame_type: str, model: type[BaseModel], schema_name: str) -> dict[str, Any]:
    doc = (model.__doc__ or "").strip()
    message: dict[str, Any] = {
        "name": frame_type,
        "title": f"{frame_type} ({'client to server' if direction == 'client' else 'server to client'})",
        "payload": {"$ref": f"#/components/schemas/{schema_name}"},
    }
    if doc and not doc.startswith(("A base", "Usage docs")):
        message["summary"] = " ".join(doc.split())
    return message


def message_key(direction: str, frame_type: str) -> str:
    """The document's name for a frame (``client.typing`` and ``server.typing`` differ)."""
    return f"{direction}.{frame_type}"


def build() -> dict[str, Any]:
    client_models = _client_models()
    client_defs, client_names = _schemas(client_models, "Client")
    server_defs, server_names = _schemas(frames.SERVER_FRAME_MODELS, "Server")
    schemas: dict[str, Any] = {
        "ErrorCode": {
            "type": "string",
            "description": "every code a client can receive in an error frame (docs/protocol.md#error-codes)",
            "enum": list(protocol.ERROR_CODES),
        },
        "CloseCode": {
            "type": "integer",
            "description": "WebSocket close codes the server uses (see the document's description)",
            "enum": sorted(frames.CLOSE_CODES),
        },
        **dict(sorted(client_defs.items())),
        **dict(sorted(server_defs.items())),
    }
    schemas["ServerError"]["properties"]["code"] = {"$ref": "#/components/schemas/ErrorCode"}

    messages: dict[str, Any] = {}
    for frame_type, model in client_models.items():
        messages[message_key("client", frame_type)] = _message(
            "client", frame_type, model, client_names[frame_type]
        )
    for frame_type, model in frames.SERVER_FRAME_MODELS.items():
        messages[message_key("server", frame_type)] = _message(
            "server", frame_type, model, server_names[frame_type]
        )

    def ref(key: str) -> dict[str, str]:
        return {"$ref": f"#/channels/{CHANNEL}/messages/{key}"}

    operations: dict[str, Any] = {}
    for frame_type in client_models:
        key = message_key("client", frame_type)
        operations[f"receive.{frame_type}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{CHANNEL}"},
            "summary": f"The client sends {frame_type}.",
            "messages": [ref(key)],
            "reply": {
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "messages": [ref(message_key("server", r)) for r in REPLIES.get(frame_type, DEFAULT_REPLY)],
            },
        }
    for frame_type in frames.SERVER_FRAME_MODELS:
        operations[f"send.{frame_type}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{CHANNEL}"},
            "summary": f"The server sends {frame_type}.",
            "messages": [ref(message_key("server", frame_type))],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "healthchat WebSocket API",
            "version": "1.0.0",
            "description": DESCRIPTION.format(regenerate=REGENERATE, close_codes=_close_table()),
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "{host}",
                "protocol": "wss",
                "description": "the deployment's API host",
                "variables": {"host": {"default": "api.example.com"}},
                "security": [{"$ref": "#/components/securitySchemes/firebaseToken"}],
            }
        },
        "channels": {
            CHANNEL: {
                "address": "/ws/v1/",
                "title": "The healthchat socket",
                "description": "One WebSocket per device; JSON text frames both ways.",
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Authorization": {
                                    "type": "string",
                                    "description": "Bearer <Firebase ID token>; or authenticate with the auth frame",
                                },
                                "X-Device-Id": {
                                    "type": "string",
                                    "description": "this device's id (POST /api/v1/devices), decimal digits",
                                },
                            },
                        },
                    }
                },
            }
        },
        "operations": operations,
        "components": {
            "securitySchemes": {
                "firebaseToken": {
                    "type": "httpApiKey",
                    "name": "Authorization",
                    "in": "header",
                    "description": "Bearer <Firebase ID token> on the upgrade request, or the auth frame",
                }
            },
            "messages": messages,
            "schemas": schemas,
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (readable descriptions)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    header = f"# Generated by `{REGENERATE}` from the registered frame models (messaging/protocol.py,\n# messaging/frames.py and each app's own: calls/protocol.py, calls/frames.py, payments/frames.py).\n"
    header += "# Do not edit: a test fails when this file differs from what the code generates.\n"
    return header + yaml.dump(build(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
