"""Calls test fixtures: run a service with its after-commit effects, and record what it sent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

SDP_OFFER = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
SDP_ANSWER = "v=0\r\no=- 7719 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}


@dataclass
class Sent:
    target: str  # "user.<id>" (every device) or a socket's channel name
    frame: dict[str, Any]
    exclude: str | None = None


@dataclass
class Outbox:
    """Everything the services published: to users' groups and to single call sockets."""

    sent: list[Sent] = field(default_factory=list)

    def of(self, type_: str, target: str | None = None) -> list[Sent]:
        return [s for s in self.sent if s.frame["type"] == type_ and (target is None or s.target == target)]

    def one(self, type_: str, target: str | None = None) -> Sent:
        found = self.of(type_, target)
        assert len(found) == 1, (type_, target, [(s.target, s.frame["type"]) for s in self.sent])
        return found[0]

    def types(self) -> list[str]:
        return [s.frame["type"] for s in self.sent]

    def clear(self) -> None:
        self.sent.clear()


@pytest.fixture
def outbox(monkeypatch: pytest.MonkeyPatch) -> Outbox:
    from calls import services as call_services
    from messaging import services as messaging_services

    box = Outbox()

    def publish(group: str, event: dict[str, Any]) -> None:
        box.sent.append(Sent(group, event["frame"], event.get("exclude_channel")))

    def channel_send(channel: str, frame: dict[str, Any]) -> None:
        box.sent.append(Sent(channel, frame))

    monkeypatch.setattr(messaging_services.events, "publish", publish)
    monkeypatch.setattr(messaging_services.contacts, "publish", publish)
    monkeypatch.setattr(call_services, "_channel_send", channel_send)
    return box


@pytest.fixture
def run(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Run a service and then its on-commit callbacks (socket events, pushes, tasks)."""

    def _run(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(**kwargs)

    return _run
