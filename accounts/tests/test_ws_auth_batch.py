"""Sockets signing in together (``ws_auth.authenticate_sockets``): each gets its own answer and
its own ``auth.signin`` entry, as if it had signed in alone."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import ws_auth
from accounts.models import User
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from audit import actions
from audit.models import AuditEntry
from core.errors import ApplicationError

pytestmark = pytest.mark.django_db


def scope(ip: str) -> dict[str, Any]:
    return {"type": "websocket", "client": (ip, 5000), "headers": [(b"user-agent", b"app/2.0")]}


def rows_after(before: int) -> list[tuple[Any, ...]]:
    return list(
        AuditEntry.objects.filter(id__gt=before)
        .order_by("id")
        .values_list("action", "actor_id", "outcome", "code", "channel", "ip", "user_agent")
    )


def last_id() -> int:
    return AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def test_a_mixed_batch_answers_and_audits_each_socket_on_its_own(make_token):
    patient: User = PatientFactory.create()
    doctor: User = DoctorFactory.create()
    inactive: User = PatientFactory.create(is_active=False)
    phone = DeviceFactory.create(user=doctor)
    someone_elses = DeviceFactory.create(user=patient)

    def tok(user: User, **kw: Any) -> str:
        return make_token(uid=user.firebase_uid, phone_number=user.phone_number, **kw)

    requests = [
        ws_auth.SocketAuth(tok(patient), None, scope("10.0.0.1")),
        ws_auth.SocketAuth(tok(doctor), phone.pk, scope("10.0.0.2")),
        ws_auth.SocketAuth(tok(patient, lifetime=-600), None, scope("10.0.0.3")),
        ws_auth.SocketAuth(
            make_token(uid="never-registered", phone_number="+15550001111"), None, scope("10.0.0.4")
        ),
        ws_auth.SocketAuth(tok(inactive), None, scope("10.0.0.5")),
        ws_auth.SocketAuth(tok(doctor), someone_elses.pk, scope("10.0.0.6")),
        ws_auth.SocketAuth(tok(doctor), 987654321, scope("10.0.0.7")),
        ws_auth.SocketAuth("not-a-token", None, scope("10.0.0.8")),
        ws_auth.SocketAuth(tok(patient), None, scope("10.0.0.9")),  # a second socket of the same user
    ]
    before = last_id()
    answers = ws_auth.authenticate_sockets(requests)
    outcomes = [
        answer.code if isinstance(answer, ApplicationError) else (answer[0].pk, answer[2])
        for answer in answers
    ]
    assert outcomes == [
        (patient.pk, None),
        (doctor.pk, phone.pk),
        "token_expired",
        "not_registered",
        "user_inactive",
        "device_not_found",
        "device_not_found",
        "invalid_token",
        (patient.pk, None),
    ]
    ok = answers[0]
    assert isinstance(ok, tuple)
    assert ok[1].uid == patient.firebase_uid
    assert ok[1].expires_at > 0
    signin, socket = actions.AUTH_SIGNIN, "socket"
    assert rows_after(before) == [
        (signin, patient.pk, "ok", "", socket, "10.0.0.1", "app/2.0"),
        (signin, doctor.pk, "ok", "", socket, "10.0.0.2", "app/2.0"),
        (signin, None, "denied", "token_expired", socket, "10.0.0.3", "app/2.0"),
        (signin, None, "denied", "not_registered", socket, "10.0.0.4", "app/2.0"),
        (signin, None, "denied", "user_inactive", socket, "10.0.0.5", "app/2.0"),
        (signin, doctor.pk, "denied", "device_not_found", socket, "10.0.0.6", "app/2.0"),
        (signin, doctor.pk, "denied", "device_not_found", socket, "10.0.0.7", "app/2.0"),
        (signin, None, "denied", "invalid_token", socket, "10.0.0.8", "app/2.0"),
        (signin, patient.pk, "ok", "", socket, "10.0.0.9", "app/2.0"),
    ]


def test_the_single_socket_path_is_the_same(make_token):
    patient: User = PatientFactory.create()
    token = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)
    before = last_id()
    user, verified, device = ws_auth.authenticate_socket(token, None, scope("10.1.1.1"))
    assert (user.pk, verified.uid, device) == (patient.pk, patient.firebase_uid, None)
    with pytest.raises(ApplicationError) as info:
        ws_auth.authenticate_socket(token, 123456789, scope("10.1.1.2"))
    assert info.value.code == "device_not_found"
    assert [(r[1], r[2], r[3], r[5]) for r in rows_after(before)] == [
        (patient.pk, "ok", "", "10.1.1.1"),
        (patient.pk, "denied", "device_not_found", "10.1.1.2"),
    ]


def test_queries_do_not_grow_with_the_sockets(make_token):
    users = [PatientFactory.create() for _ in range(12)]
    devices = [DeviceFactory.create(user=u) for u in users]
    requests = [
        ws_auth.SocketAuth(
            make_token(uid=u.firebase_uid, phone_number=u.phone_number), d.pk, scope("10.2.0.1")
        )
        for u, d in zip(users, devices, strict=True)
    ]
    with CaptureQueriesContext(connection) as queries:
        answers = ws_auth.authenticate_sockets(requests)
    assert [a[0].pk for a in answers] == [u.pk for u in users]
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 3  # users, devices, one INSERT of 12 entries
    assert statements[2].startswith('INSERT INTO "audit_auditentry"')


def test_a_sockets_user_holds_no_profile(make_token):
    """The user a socket keeps for its life comes without its profile (issue 26: idle memory)."""
    doctor: User = DoctorFactory.create()
    token = make_token(uid=doctor.firebase_uid, phone_number=doctor.phone_number)
    user, _verified, _device = ws_auth.authenticate_socket(token, None, scope("10.3.0.1"))
    assert user.pk == doctor.pk
    assert user._state.fields_cache == {}  # no doctor_profile / specialty loaded with it


def test_a_sign_in_that_cannot_be_audited_is_refused_and_a_refusal_stays_one(make_token, monkeypatch):
    from audit import services as audit_services

    patient: User = PatientFactory.create()
    good = make_token(uid=patient.firebase_uid, phone_number=patient.phone_number)

    def broken(entries: list[AuditEntry]) -> None:
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr(audit_services, "record_many", broken)
    monkeypatch.setattr(AuditEntry, "save", lambda self, **kw: broken([self]))
    answers = ws_auth.authenticate_sockets(
        [
            ws_auth.SocketAuth(good, None, scope("10.3.0.1")),
            ws_auth.SocketAuth("bad", None, scope("10.3.0.2")),
        ]
    )
    assert isinstance(answers[0], RuntimeError)
    assert isinstance(answers[1], ApplicationError)
    assert answers[1].code == "invalid_token"
