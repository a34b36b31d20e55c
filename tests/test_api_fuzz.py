"""Schemathesis against our own OpenAPI schema, in-process through the WSGI app.

Every operation is fuzzed three ways, each its own test (``test_operation[<op>-<mode>]``):

- ``positive``: inputs valid by the schema, random ids;
- ``negative``: inputs that break the schema (only operations that take any);
- ``world``: valid inputs aimed at real objects (the matrix world, tests/authz.py), so success
  bodies are checked too.

Signed in as the matrix's patient A (the doctor for the doctors' operations). Bounded and
derandomized: the same cases every run. A 5xx, a status the schema does not list, a body that
does not match its schema, or a wrong content type fails the test; the fix belongs in the view,
serializer or schema annotation, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import _caches as schemathesis_caches
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.authz import World, token_for

SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
# Our own Authorization header is sent with every case; unknown query parameters are ignored by
# design (clients add cache-busters), so neither is generated as a "negative" input.
CONFIG = SchemathesisConfig.from_dict(
    {"generation": {"with-security-parameters": False, "allow-extra-parameters": False}}
)
schema = schemathesis.openapi.from_dict(SCHEMA, config=CONFIG)
schema.app = get_wsgi_application()
OPERATIONS = {
    op.label: op for op in (result.ok() for result in schema.get_all_operations() if isinstance(result, Ok))
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = {"positive": 20, "negative": 15, "world": 15}

# Operations whose success only a doctor sees (the group belongs to the doctor too).
DOCTOR_OPERATIONS = re.compile(
    r"/api/v1/(availability|payouts|schedule)|/consultations/\{consultation_id\}/(accept|decline|start|complete)"
    r"|/on-demand/\{request_id\}/accept"
    r"|PATCH /api/v1/groups/|/api/v1/groups/\{group_id\}/members|/api/v1/groups/\{group_id\}/avatar"
    r"|/api/v1/waiting-room|/appointments/\{appointment_id\}/admit"
    r"|/api/v1/scheduled-messages"
    r"|/api/v1/notes/|/consultations/\{consultation_id\}/(notes|prescriptions)|/prescriptions/\{prescription_id\}/cancel"
)


def _world_ids(w: World) -> dict[str, int | str]:
    return {
        "attachment_id": w.attachment.pk,
        "conversation_id": w.conversation.pk,
        "consultation_id": w.consultation.pk,
        "call_id": w.call.pk,
        "group_id": w.group.pk,
        "doctor_id": w.doctor.pk,
        "appointment_id": w.extra["appointment"].pk,
        "request_id": w.extra["on_demand"].pk,
        "token": "x" * 43,  # a calendar feed token (none matches: 404 feed_not_found)
        "device_id": w.device_a.pk,
        "user_id": w.user("group_member").pk,
        "scheduled_id": w.extra["scheduled"].pk,
        "report_id": w.extra["report"].pk,
        "message_id": w.message_doctor.pk,
        "emoji": "👍",
        "document_id": w.extra["document"].pk,
        "note_id": w.extra["note"].pk,
        "prescription_id": w.extra["prescription"].pk,
        "code": w.extra["prescription"].verification_code,
    }


def _takes_input(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody") or operation.path_parameters)


CASES = [
    pytest.param(label, mode, id=f"{label}-{mode}")
    for label, operation in OPERATIONS.items()
    for mode in EXAMPLES
    if mode == "positive"
    or (mode == "negative" and _takes_input(operation))
    or (mode == "world" and "{" in operation.path)
]


@pytest.fixture
def in_process() -> Iterator[None]:
    """Requests run in the test's transaction: Django must not close the connection after each
    one (its own test client does the same)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_operation(
    label: str,
    mode: str,
    matrix_world: World,
    db: Any,
    in_process: None,
    unthrottled: None,
    firebase_admin_api: Any,
    make_token: Callable[..., str],
    settings: Any,
) -> None:
    settings.STRIPE_WEBHOOK_SECRET = "whsec_fuzz"
    # Schemathesis keeps process-wide caches of what it generated; empty them so a test's cases
    # depend only on itself, not on which tests ran before it in this process.
    schemathesis_caches.clear_all()
    operation = OPERATIONS[label]
    actor = "doctor" if DOCTOR_OPERATIONS.search(label) else "patient_a"
    headers = {"Authorization": f"Bearer {token_for(make_token, matrix_world, actor)}"}
    checks = list(CHECKS)
    if mode == "world":
        ids = _world_ids(matrix_world)
        strategy = operation.as_strategy(
            path_parameters={p.name: ids[p.name] for p in operation.path_parameters}
        )
    elif mode == "negative":
        strategy = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        checks.append(negative_data_rejection)
    else:
        strategy = operation.as_strategy()

    @given(case=strategy)
    @hypothesis_settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    run()


@pytest.mark.django_db
def test_fuzzed_schema_is_the_served_schema() -> None:
    """The schema fuzzed here is the one ``/api/schema/`` serves."""
    served = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert served.status_code == 200
    assert served.json() == SCHEMA
