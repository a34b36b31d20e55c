"""Push test fixtures: FCM faked at the HTTP boundary (firebase-admin runs for real)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses

from notifications import fcm as push_fcm
from notifications import tasks

PROJECT = "demo-healthchat"
FCM_SEND = re.compile(r"https://fcm\.googleapis\.com/v1/projects/([^/]+)/messages:send")


def fcm_error(
    status: int, rpc_status: str, message: str, *details: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """A real FCM v1 error body."""
    return status, {
        "error": {"code": status, "message": message, "status": rpc_status, "details": list(details)}
    }


def fcm_code(code: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}


UNREGISTERED = fcm_error(404, "NOT_FOUND", "Requested entity was not found.", fcm_code("UNREGISTERED"))
INVALID_TOKEN = fcm_error(
    400,
    "INVALID_ARGUMENT",
    "The registration token is not a valid FCM registration token",
    fcm_code("INVALID_ARGUMENT"),
    {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}],
    },
)
INVALID_PAYLOAD = fcm_error(
    400,
    "INVALID_ARGUMENT",
    "Invalid value at 'message.android.ttl'",
    fcm_code("INVALID_ARGUMENT"),
    {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.android.ttl", "description": "Invalid value"}],
    },
)
SENDER_ID_MISMATCH = fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", fcm_code("SENDER_ID_MISMATCH"))
BAD_GATEWAY = fcm_error(502, "UNAVAILABLE", "The service is currently unavailable.")


@dataclass
class FakeFcm:
    """Records every FCM send request; answers 200 unless told otherwise for a target."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    projects: list[str] = field(default_factory=list)
    # target (token or fid) -> responses to give, in order (the last one repeats)
    scripted: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (to overlap concurrent senders)

    def answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        if self.delay:
            time.sleep(self.delay)
        body = json.loads(request.body)
        match = FCM_SEND.match(request.url)
        self.projects.append(match.group(1) if match else "")
        self.requests.append(body)
        message = body["message"]
        target = message.get("token") or message.get("fid")
        script = self.scripted.get(target)
        if script:
            status, payload = script.pop(0) if len(script) > 1 else script[0]
            return status, {"Content-Type": "application/json"}, json.dumps(payload)
        name = f"projects/{PROJECT}/messages/{len(self.requests)}"
        return 200, {"Content-Type": "application/json"}, json.dumps({"name": name})

    def script(self, target: str, *answers: tuple[int, dict[str, Any]]) -> None:
        self.scripted[target] = list(answers)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [r["message"] for r in self.requests]

    def to(self, target: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if target in (m.get("token"), m.get("fid"))]

    @property
    def raw(self) -> str:
        return json.dumps(self.requests)


@pytest.fixture
def fake_fcm(firebase_certs: responses.RequestsMock, settings: Any) -> Iterator[FakeFcm]:
    settings.PUSH_BACKEND = "fcm"
    settings.FIREBASE_CREDENTIALS = None
    settings.FIREBASE_PROJECT_ID = PROJECT
    push_fcm.reset_app()
    fake = FakeFcm()
    firebase_certs.add_callback(responses.POST, FCM_SEND, callback=fake.answer)
    yield fake
    push_fcm.reset_app()


@dataclass
class Enqueued:
    calls: list[tuple[list[int], float]] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [pk for ids, _ in self.calls for pk in ids]


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> Enqueued:
    """Capture queued push tasks instead of running them (the test runs them when it wants)."""
    record = Enqueued()

    def apply_async(args: Any = None, kwargs: Any = None, countdown: float = 0, **options: Any) -> None:
        record.calls.append((list(args[0]), countdown))

    monkeypatch.setattr(tasks.push_deliver, "apply_async", apply_async)
    return record


def run_queued(record: Enqueued) -> None:
    """Run what was queued, as a worker would once the countdown passed."""
    calls, record.calls = record.calls, []
    for ids, _ in calls:
        tasks.push_deliver.apply(args=(ids,))


@pytest.fixture
def send_message(django_capture_on_commit_callbacks: Any) -> Any:
    """Send through the real messaging service, running its on-commit hooks (push included)."""
    from messaging import services as messaging_services

    def send(sender: Any, conversation: Any, body: str = "hello") -> Any:
        import uuid

        with django_capture_on_commit_callbacks(execute=True):
            result = messaging_services.message_send(
                sender=sender, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body
            )
        return result.message

    return send
