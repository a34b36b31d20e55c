"""Deactivation and sign-out everywhere: the services, their commands and admin actions, and the
``session.terminate`` events they publish (after commit, once). Live socket closes are proven in
``test_sessions_live.py``."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client
from django.urls import reverse

from accounts import services
from accounts.actors import Operator
from accounts.models import User
from accounts.tests.factories import PatientFactory
from accounts.tests.helpers import assert_error
from audit.models import AuditEntry
from conftest import unique_phone
from core.errors import ApplicationError

pytestmark = pytest.mark.django_db

USERS = reverse("admin:accounts_user_changelist")


@pytest.fixture
def events(monkeypatch) -> list[tuple[str, dict[str, Any]]]:
    """Events published to the channel layer (after commit), in order."""
    from core import realtime

    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(realtime, "publish", lambda group, event: sent.append((group, event)))
    return sent


@pytest.fixture
def staff(django_user_model) -> User:
    return django_user_model.objects.create_superuser(unique_phone(), "correct horse battery")


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def only_terminations(events):
    """The events with the reason's code only (messages are for people)."""
    return [(g, {**e, "error": e.get("error", {}).get("code")}) for g, e in events]


def test_deactivation_publishes_one_close_after_commit(events, django_capture_on_commit_callbacks):
    user = PatientFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.user_set_active(user=user, active=False, actor=Operator(command="test"))
    assert events == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert only_terminations(events) == [
        (f"user.{user.pk}", {"type": "session.terminate", "code": 4403, "error": "user_inactive"})
    ]
    assert User.objects.get(pk=user.pk).is_active is False


def test_a_rolled_back_deactivation_closes_nothing(events, django_capture_on_commit_callbacks):
    user = PatientFactory()

    def deactivate_then_fail() -> None:
        with transaction.atomic():
            services.user_set_active(user=user, active=False, actor=Operator(command="test"))
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        deactivate_then_fail()
    assert events == []
    assert User.objects.get(pk=user.pk).is_active is True


def test_reactivation_publishes_nothing_and_sign_in_works_again(
    events, django_capture_on_commit_callbacks, client_for
):
    user = PatientFactory()
    with django_capture_on_commit_callbacks(execute=True):
        services.user_set_active(user=user, active=False, actor=Operator(command="test"))
    assert_error(client_for(user).get("/api/v1/me"), 401, "user_inactive")
    events.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.user_set_active(user=user, active=True, actor=Operator(command="test"))
    assert events == []
    assert client_for(user).get("/api/v1/me").status_code == 200


def test_only_staff_may_deactivate_and_not_themselves(staff):
    user = PatientFactory()
    with pytest.raises(ApplicationError) as denied:
        services.user_set_active(user=user, active=False, actor=PatientFactory())
    assert denied.value.code == "permission_denied"
    with pytest.raises(ApplicationError) as self_lockout:
        services.user_set_active(user=staff, active=False, actor=staff)
    assert self_lockout.value.code == "cannot_deactivate_self"
    assert User.objects.get(pk=user.pk).is_active is True


def test_a_deleted_account_cannot_be_reactivated(firebase_admin_api):
    user = PatientFactory()
    services.user_delete(user=user, actor=Operator(command="test"))
    with pytest.raises(ApplicationError) as refused:
        services.user_set_active(
            user=User.objects.get(pk=user.pk), active=True, actor=Operator(command="test")
        )
    assert (refused.value.code, refused.value.status) == ("user_deleted", 409)


def test_revoke_sessions_revokes_in_firebase_and_closes(
    events, firebase_admin_api, django_capture_on_commit_callbacks
):
    user = PatientFactory()
    with django_capture_on_commit_callbacks(execute=True):
        services.revoke_sessions(user=user, actor=Operator(command="test"))
    assert only_terminations(events) == [
        (f"user.{user.pk}", {"type": "session.terminate", "code": 4401, "error": "token_revoked"})
    ]
    updates = [(url.split("?")[0].rsplit("/", 1)[-1], body) for url, body in firebase_admin_api]
    assert [(name, body["localId"]) for name, body in updates] == [("accounts:update", user.firebase_uid)]
    assert "validSince" in updates[0][1]


def test_revoke_sessions_when_firebase_is_down_closes_nothing(events, firebase_certs):
    import re

    import responses

    firebase_certs.add(
        responses.POST, re.compile(r"https://identitytoolkit\.googleapis\.com/.*"), status=503, json={}
    )
    user = PatientFactory()
    with pytest.raises(ApplicationError) as unavailable:
        services.revoke_sessions(user=user, actor=Operator(command="test"))
    assert unavailable.value.code == "auth_unavailable"
    assert events == []


# --- commands -------------------------------------------------------------------------------
def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_deactivate_user_command_and_reactivate(events, django_capture_on_commit_callbacks):
    user = PatientFactory()
    with django_capture_on_commit_callbacks(execute=True):
        out = run("deactivate_user", user.phone_number)
    assert f"user {user.pk} deactivated" in out
    assert User.objects.get(pk=user.pk).is_active is False
    assert [e["type"] for _, e in events] == ["session.terminate"]
    assert f"user {user.pk} reactivated" in run("deactivate_user", str(user.pk), "--reactivate")
    assert User.objects.get(pk=user.pk).is_active is True
    audited = AuditEntry.objects.filter(object_type="user", object_id=str(user.pk)).order_by("id")
    assert list(audited.values_list("action", "actor_id", "channel")) == [
        ("user.deactivate", None, "command"),
        ("user.reactivate", None, "command"),
    ]
    with pytest.raises(CommandError):
        run("deactivate_user", unique_phone())


def test_revoke_sessions_command(events, firebase_admin_api, django_capture_on_commit_callbacks):
    user = PatientFactory()
    with django_capture_on_commit_callbacks(execute=True):
        out = run("revoke_sessions", str(user.pk))
    assert f"sessions of user {user.pk} revoked" in out
    assert AuditEntry.objects.filter(
        action="user.signout", object_id=str(user.pk), channel="command"
    ).exists()
    assert [e["code"] for _, e in events] == [4401]
    assert len(firebase_admin_api) == 1
    with pytest.raises(CommandError):
        run("revoke_sessions", "999999999")


# --- admin ----------------------------------------------------------------------------------
def test_admin_actions_deactivate_reactivate_and_sign_out(
    staff_client, staff, events, firebase_admin_api, django_capture_on_commit_callbacks
):
    a, b = PatientFactory(), PatientFactory()

    def act(action: str) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                USERS, {"action": action, "_selected_action": [a.pk, b.pk]}, follow=True
            )
        assert response.status_code == 200
        return response.content.decode()

    assert "Deactivated 2 account(s)" in act("deactivate_accounts")
    assert set(User.objects.filter(pk__in=[a.pk, b.pk]).values_list("is_active", flat=True)) == {False}
    assert sorted(g for g, _ in events) == sorted([f"user.{a.pk}", f"user.{b.pk}"])
    events.clear()
    assert "Reactivated 2 account(s)" in act("reactivate_accounts")
    assert set(User.objects.filter(pk__in=[a.pk, b.pk]).values_list("is_active", flat=True)) == {True}
    assert events == []
    assert "Signed out 2 account(s)" in act("revoke_sessions")
    assert sorted(e["code"] for _, e in events) == [4401, 4401]
    assert len(firebase_admin_api) == 2
    # Each is an audit entry of the staff member, per account.
    rows = AuditEntry.objects.filter(object_type="user", object_id__in=[str(a.pk), str(b.pk)])
    assert sorted(rows.values_list("action", "actor_id", "channel")) == sorted(
        [(action, staff.pk, "admin") for action in ("user.deactivate", "user.reactivate", "user.signout")] * 2
    )


def test_admin_cannot_deactivate_oneself(staff_client, staff, events):
    response = staff_client.post(
        USERS, {"action": "deactivate_accounts", "_selected_action": [staff.pk]}, follow=True
    )
    assert "You cannot deactivate your own account." in response.content.decode()
    assert User.objects.get(pk=staff.pk).is_active is True
    assert events == []
