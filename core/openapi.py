"""The OpenAPI contract (docs/openapi.yaml): every operation's errors, summary and examples.

- ``api_doc(summary, errors={status: [codes]}, ...)``: ``extend_schema`` for a view method, with
  the codes the method itself (its services, selectors, validators) can answer.
- ``AutoSchema`` (the project's DRF schema class) adds the codes every view of a kind answers:
  401 (the token errors) and 503 ``auth_unavailable`` where a sign-in is required, 403 with
  each permission's ``code`` (``not_registered`` under ``IsRegistered``), 429 ``rate_limited``
  where a throttle applies, 400 ``invalid``/``null``/``parse_error`` where a body or query is
  validated, 404 ``not_found`` for a path that names an object (a malformed id matches no URL),
  503 ``server_busy`` everywhere (database pool exhausted). Each status becomes a response
  whose ``error.code`` is an enum of its codes.
- ``add_error_responses`` (postprocessing hook): the ``Error`` component, a ``default`` response
  (any other status: 405, 406, 413, 415, 500) and a generated example for every request and
  success body that has none of its own.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny

ERRORS_EXTENSION = "x-healthchat-errors"
# The codes a rejected or missing token is answered with (accounts/authentication.py, firebase.py).
TOKEN_ERRORS = (
    "invalid_token",
    "not_authenticated",
    "token_expired",
    "token_revoked",
    "user_disabled",
    "user_inactive",
)

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The one error format of the API (core/errors.py).",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": True},
            },
            "required": ["code", "message"],
            "additionalProperties": True,
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}


def api_doc(summary: str, *, errors: dict[int, list[str]] | None = None, **kwargs: Any) -> Any:
    """``extend_schema`` with a summary and the operation's own error codes by HTTP status."""
    extensions = dict(kwargs.pop("extensions", None) or {})
    if errors:
        extensions[ERRORS_EXTENSION] = {str(status): sorted(codes) for status, codes in errors.items()}
    return extend_schema(summary=summary, extensions=extensions or None, **kwargs)


def error_schema(codes: list[str], *, retry_after: bool = False) -> dict[str, Any]:
    """The error format, with ``error.code`` one of ``codes``."""
    error: dict[str, Any] = {
        "type": "object",
        "properties": {"code": {"type": "string", "enum": codes}},
    }
    if retry_after:
        error["properties"]["retry_after"] = {
            "type": "integer",
            "description": "seconds to wait before repeating the request (also `Retry-After`)",
        }
    return {
        "allOf": [
            {"$ref": "#/components/schemas/Error"},
            {"type": "object", "properties": {"error": error}},
        ]
    }


def error_response(status: int, codes: list[str]) -> dict[str, Any]:
    """One error response: the format, with ``code`` one of ``codes``, and an example."""
    retry = status in (429, 503)
    example: dict[str, Any] = {"code": codes[0], "message": "…"}
    if retry and codes[0] in ("rate_limited", "server_busy"):
        example["retry_after"] = 1
    listed = ", ".join(f"`{code}`" for code in codes)
    return {
        "description": f"{HTTPStatus(status).phrase}: {listed}",
        "content": {
            "application/json": {
                "schema": error_schema(codes, retry_after=retry),
                "example": {"error": example},
            }
        },
    }


# The standard answers (the same on many operations) as named components/responses.
SHARED_RESPONSES: dict[tuple[int, tuple[str, ...]], str] = {
    (400, ("invalid",)): "InvalidQuery",
    (400, ("invalid", "null", "parse_error")): "InvalidRequest",
    (401, TOKEN_ERRORS): "Unauthorized",
    (403, ("not_registered",)): "NotRegistered",
    (404, ("not_found",)): "NotFound",
    (429, ("rate_limited",)): "RateLimited",
    (503, ("server_busy",)): "ServerBusy",
    (503, ("auth_unavailable", "server_busy")): "Unavailable",
}
# Every code the standard answers can carry (what ``AutoSchema.standard_errors`` adds).
STANDARD_CODES = frozenset(code for _status, codes in SHARED_RESPONSES for code in codes)


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema with every operation's error responses (see the module doc)."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        codes: dict[int, set[str]] = {}
        for status, declared in self.standard_errors(operation).items():
            codes.setdefault(status, set()).update(declared)
        for status, declared in operation.pop(ERRORS_EXTENSION, {}).items():
            codes.setdefault(int(status), set()).update(declared)
        for status in sorted(codes):
            listed = tuple(sorted(codes[status]))
            shared = SHARED_RESPONSES.get((status, listed))
            operation["responses"][str(status)] = (
                {"$ref": f"#/components/responses/{shared}"}
                if shared
                else error_response(status, list(listed))
            )
        return operation

    def standard_errors(self, operation: dict[str, Any]) -> dict[int, list[str]]:
        view = self.view
        errors: dict[int, list[str]] = {503: ["server_busy"]}
        permissions = view.get_permissions()
        if view.get_authenticators() and not all(isinstance(p, AllowAny) for p in permissions):
            errors[401] = list(TOKEN_ERRORS)
            errors[503].append("auth_unavailable")
            # A refusing permission answers 403 with its ``code`` (``IsRegistered``: not_registered).
            refusals = sorted({c for p in permissions if isinstance(c := getattr(p, "code", None), str)})
            if refusals:
                errors[403] = refusals
        if view.get_throttles():
            errors[429] = ["rate_limited"]
        parameters = operation.get("parameters", [])
        if "requestBody" in operation:
            # ``null``: DRF's code for a JSON ``null`` body ("No data provided").
            errors[400] = ["invalid", "null", "parse_error"]
        elif any(p["in"] == "query" for p in parameters):
            errors[400] = ["invalid"]  # also a bad ``cursor`` or ``limit`` (core/pagination.py)
        if any(p["in"] == "path" for p in parameters):
            errors[404] = ["not_found"]  # an id that is not a number matches no URL
        return errors


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


# Example strings by property name (anything else: by format, or "string").
NAMED_EXAMPLES: dict[str, str] = {
    "currency": "EUR",
    "timezone": "Europe/Paris",
    "phone_number": "+33612345678",
    "emergency_contact_phone": "+33612345679",
    "display_name": "Dr. Ada Martin",
    "name": "Care team",
    "specialty": "cardiology",
    "slug": "cardiology",
    "platform": "android",
    "app_version": "2.4.1",
    "content_type": "image/jpeg",
    "language": "fr",
    "languages": "fr",
    "date_of_birth": "1984-03-02",
    "licence_number": "RPPS-10003456789",
    "jurisdiction": "FR",
    "bio": "Cardiologist, 15 years of practice.",
    "emergency_contact_name": "Jean Martin",
    "reason": "Chest pain since Monday",
    "description": "Follow-up after surgery",
    "message": "…",
}


def example_for(schema: dict[str, Any], components: dict[str, Any], name: str = "", depth: int = 0) -> Any:
    """A value matching ``schema``, built from its types, formats, enums and bounds."""
    schema = _resolve(schema, components)
    if "example" in schema:
        return schema["example"]
    for key in ("allOf", "oneOf", "anyOf"):
        if schema.get(key):
            parts = [example_for(part, components, name, depth) for part in schema[key]]
            if key == "allOf" and all(isinstance(p, dict) for p in parts):
                return {k: v for part in parts for k, v in part.items()}
            return parts[0]
    if schema.get("enum"):
        return next((v for v in schema["enum"] if v is not None), None)
    kind = schema.get("type", "object")
    if kind == "object":
        if depth > 5:
            return {}
        properties = schema.get("properties", {})
        return {key: example_for(sub, components, key, depth + 1) for key, sub in properties.items()}
    if kind == "array":
        return [] if depth > 5 else [example_for(schema.get("items", {}), components, name, depth + 1)]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    text = NAMED_EXAMPLES.get(name) or {
        "date-time": "2026-01-05T09:30:00Z",
        "date": "2026-01-05",
        "time": "09:00:00",
        "uuid": "3f2c6d2e-8a4b-4c1e-9f7a-2b5d8e1c4a90",
        "uri": "https://api.example.com/path",
        "email": "name@example.com",
        "binary": "<bytes>",
    }.get(schema.get("format", ""), "string")
    return text[: schema.get("maxLength", len(text))]


def _add_examples(operation: dict[str, Any], components: dict[str, Any]) -> None:
    bodies = [operation.get("requestBody", {})] + [
        response for status, response in operation["responses"].items() if status.startswith("2")
    ]
    for body in bodies:
        for media in body.get("content", {}).values():
            if "example" not in media and "examples" not in media and "schema" in media:
                media["example"] = example_for(media["schema"], components)


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: the ``Error`` component, a ``default`` response on every operation
    (any other 4xx/5xx comes in that format too) and examples for bodies without one."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    result["components"]["responses"] = {
        name: error_response(status, list(codes))
        for (status, codes), name in sorted(SHARED_RESPONSES.items())
    }
    default = {
        "description": 'Error (any other 4xx or 5xx): `{"error": {"code", "message", "fields"?}}`',
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method in ("get", "put", "post", "patch", "delete") and isinstance(operation, dict):
                operation.setdefault("responses", {}).setdefault("default", default)
                _add_examples(operation, components)
    return result
