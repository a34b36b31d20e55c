"""docs/openapi.yaml: current with the code, valid OpenAPI, and complete (summaries, every error
code an operation can answer, examples).

Regenerate it with ``make contracts`` after changing a view, serializer or error code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.generators import EndpointEnumerator
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from core.errors import ApplicationError
from core.openapi import STANDARD_CODES, TOKEN_ERRORS
from core.tests import raised_codes
from messaging.send_rules import registry

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.yaml"
REGENERATE = "make contracts"
METHODS = ("get", "put", "post", "patch", "delete")
# Codes built at run time that the source reading cannot name (``f"invalid_{field}"`` in
# accounts.validators.validate_short_text), by operation: declared by hand in the views.
RUN_TIME_CODES = {
    "auth_register_create": {"invalid_bio", "invalid_emergency_contact_name", "invalid_jurisdiction"}
    | {"invalid_licence_number"},
    "me_partial_update": {"invalid_bio", "invalid_emergency_contact_name", "invalid_jurisdiction"}
    | {"invalid_licence_number"},
    "devices_create": {"invalid_app_version"},
}


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMMITTED.read_text())
    return loaded


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if method in METHODS
    ]


def _response(schema: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        resolved: dict[str, Any] = schema["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        return resolved
    return response


def _codes(schema: dict[str, Any], response: dict[str, Any]) -> list[str] | None:
    """The ``error.code`` enum of an error response (None: not the error format with an enum)."""
    body = _response(schema, response).get("content", {}).get("application/json", {}).get("schema", {})
    parts = body.get("allOf", [])
    if not parts or parts[0] != {"$ref": "#/components/schemas/Error"}:
        return None
    code = parts[1]["properties"]["error"]["properties"]["code"]
    enum: list[str] = code.get("enum", [])
    return enum or None


def _validator(schema: dict[str, Any], body: dict[str, Any]) -> OAS30Validator:
    """A JSON Schema validator for ``body`` resolving the document's ``$ref``s."""
    return OAS30Validator({**body, "components": schema["components"]})


def test_committed_schema_is_the_generated_one(tmp_path: Path) -> None:
    out = tmp_path / "openapi.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert out.read_text() == COMMITTED.read_text(), (
        f"docs/openapi.yaml differs from what the code generates: run `{REGENERATE}` and commit it"
    )


def test_committed_schema_is_valid_openapi(committed: dict[str, Any]) -> None:
    validate(committed)  # openapi-spec-validator: raises on any violation of the OpenAPI 3.0 spec


def test_every_operation_has_a_summary_errors_and_examples(committed: dict[str, Any]) -> None:
    problems: list[str] = []
    operations = _operations(committed)
    assert len(operations) >= 50
    for path, method, operation in operations:
        label = f"{method.upper()} {path}"
        if not operation.get("summary"):
            problems.append(f"{label}: no summary")
        responses = operation["responses"]
        errors = {status: _codes(committed, r) for status, r in responses.items() if status[0] in "45"}
        if not errors:
            problems.append(f"{label}: no error responses")
        problems += [f"{label} {status}: no code enum" for status, codes in errors.items() if codes is None]
        if "503" not in errors or "server_busy" not in (errors["503"] or []):
            problems.append(f"{label}: no 503 server_busy")
        secured = operation.get("security") not in (None, [{}])
        if secured and set(errors.get("401") or []) != set(TOKEN_ERRORS):
            problems.append(f"{label}: signed-in operation without the 401 token errors")
        if "default" not in responses:
            problems.append(f"{label}: no default error response")
        bodies = [("request", operation.get("requestBody", {}))] + [
            (status, _response(committed, r)) for status, r in responses.items() if status.startswith("2")
        ]
        for where, body in bodies:
            for media_type, media in body.get("content", {}).items():
                if "example" not in media and "examples" not in media:
                    problems.append(f"{label} {where} {media_type}: no example")
                elif "example" in media and media_type == "application/json":
                    problems += [
                        f"{label} {where}: example does not match its schema: {error.message}"
                        for error in _validator(committed, media["schema"]).iter_errors(media["example"])
                    ]
        for status, response in responses.items():
            if (
                status[0] in "45"
                and "example" not in _response(committed, response)["content"]["application/json"]
            ):
                problems.append(f"{label} {status}: no example")
    assert not problems, "\n".join(problems)


def _endpoints() -> list[tuple[str, str, type]]:
    return [
        (path, method.lower(), view.cls)
        for path, _pattern, method, view in EndpointEnumerator().get_api_endpoints()
        if path.startswith("/api/v1/")
    ]


def test_documented_error_codes_are_the_ones_the_code_raises(committed: dict[str, Any]) -> None:
    """Every ``ApplicationError`` code a view can reach (its services, selectors, validators,
    read from the source) is documented for that operation and status; every code an operation
    declares beyond the standard ones is one the code can raise."""
    problems: list[str] = []
    for path, method, view in _endpoints():
        operation = committed["paths"][path][method]
        documented = {
            int(status): set(_codes(committed, r) or [])
            for status, r in operation["responses"].items()
            if status[0] in "45"
        }
        raised = raised_codes.raised_by_view(view, method)
        for error in sorted(raised, key=lambda r: (r.status, r.code)):
            if error.status == -1:
                problems.append(f"{error.where}: an error status the source reading cannot tell")
            if error.code == "?" or error.status == 500:
                continue  # a code built at run time (RUN_TIME_CODES); 500 is ``default``
            if error.code not in documented.get(error.status, set()):
                problems.append(
                    f"{method.upper()} {path}: {error.status} {error.code} ({error.where}) undocumented"
                )
        reachable = {(r.status, r.code) for r in raised}
        run_time = RUN_TIME_CODES.get(operation["operationId"], set())
        for status, codes in documented.items():
            for code in sorted(codes - STANDARD_CODES - run_time):
                if (status, code) not in reachable:
                    problems.append(f"{method.upper()} {path}: {status} {code} documented, never raised")
    assert not problems, "\n".join(problems)


def _doc_codes(text: str, section: str) -> set[str]:
    """The codes in the first cells of the tables of a ``## section`` of docs/protocol.md."""
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", body, flags=re.MULTILINE))


def test_every_documented_code_is_in_the_protocol_document(committed: dict[str, Any]) -> None:
    """docs/protocol.md lists every code: the REST ones under ``## REST`` (the REST error codes
    and the upload tables), the ones the socket shares under ``## Error codes``; its REST
    error code table lists no code that no operation answers."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    answered = {
        code
        for _path, _method, operation in _operations(committed)
        for status, response in operation["responses"].items()
        if status[0] in "45"
        for code in _codes(committed, response) or []
    }
    rest = _doc_codes(text, "REST")
    assert answered - rest - _doc_codes(text, "Error codes") == set()
    table = text.split("\n### REST error codes\n", 1)[1]
    assert set(re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.MULTILINE)) - answered == set()


def test_source_reading_knows_every_error_class_and_plugin() -> None:
    """The reading knows every ``ApplicationError`` subclass, and the reach rules that run
    through a registry the source cannot show."""
    classes, pending = set(), [ApplicationError]
    while pending:
        cls = pending.pop()
        classes.add(f"{cls.__module__}.{cls.__qualname__}")
        pending += cls.__subclasses__()
    assert classes == set(raised_codes.ERROR_CLASSES)
    registered = {
        f"{form.__module__}.{form.__qualname__}"
        for rule in registry.rules
        for form in (rule.statement, rule.orm)
    }
    assert registered == set(raised_codes.PLUGINS["messaging.reach.refusals"])
