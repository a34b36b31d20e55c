"""The staff services check the permission themselves (issue 17, finding 1): a command, a future
API or a forgotten admin declaration cannot skip it. Each case runs the service directly with a
staff actor holding every view permission (refused with ``permission_denied``, nothing changed),
a non-staff account holding the permission (refused), staff holding exactly the permission
(done) and an explicit ``Operator`` (done)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.actors import Actor, Operator
from accounts.models import DoctorProfile, User
from accounts.tests.factories import DoctorProfileFactory, PatientFactory, UserFactory
from audit import actions
from audit.models import AuditEntry
from conftest import unique_phone
from core.errors import ApplicationError
from documents import services as document_services
from messaging import services as messaging_services
from messaging.models import Conversation
from messaging.tests.factories import pair
from payments import services as payment_services
from payments.models import Consultation
from payments.tests.factories import people, requested
from ratings import services as rating_services
from ratings.models import Review
from ratings.tests.factories import reviewed

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Case:
    permission: str
    setup: Callable[[], int]  # makes the object; returns its pk
    run: Callable[[int, Actor], Any]  # calls the service on it as ``actor``
    done: Callable[[int, list[tuple[str, dict[str, Any]]]], bool]


def _pending_doctor() -> int:
    doctor = UserFactory.create(role=User.Role.DOCTOR)
    DoctorProfileFactory(user=doctor, verification_status="pending", verified_at=None)
    return int(doctor.pk)


def _patient() -> int:
    return int(PatientFactory.create().pk)


def _user(pk: int) -> User:
    return User.objects.get(pk=pk)


def _conversation() -> int:
    return pair()[2].pk


def _accepted_consultation() -> int:
    patient, doctor = people(consultation_fee=2000)
    consultation = requested(patient, doctor)  # the development provider authorises at once
    payment_services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    return consultation.pk


def _review(hidden: bool = False) -> int:
    review = reviewed(stars=3)
    if hidden:
        Review.objects.filter(pk=review.pk).update(hidden_at=timezone.now(), hidden_reason="spam")
    return review.pk


def _failed_receipt() -> int:
    """A receipt whose rendering failed (a consultation's capture made it)."""
    from documents.models import Document

    document = Document.objects.get(consultation_id=_accepted_consultation())
    Document.objects.filter(pk=document.pk).update(status="failed", error="render_failed")
    return document.pk


def _requeued_and_audited(pk: int, _calls: list[tuple[str, dict[str, Any]]]) -> bool:
    """Queued again, and the service itself wrote the audit entry (an admin action or a command
    alike)."""
    from documents.models import Document

    audited = AuditEntry.objects.filter(action=actions.DOCUMENT_REGENERATE, object_id=str(pk)).exists()
    return Document.objects.get(pk=pk).status == "pending" and audited


def _revoked(pk: int, calls: list[tuple[str, dict[str, Any]]]) -> bool:
    uid = _user(pk).firebase_uid
    return any(body.get("localId") == uid and "validSince" in body for _, body in calls)


CASES: dict[str, Case] = {
    "doctor_set_verification": Case(
        "accounts.verify_doctor",
        _pending_doctor,
        lambda pk, actor: account_services.doctor_set_verification(
            doctor=_user(pk), status="verified", actor=actor
        ),
        lambda pk, _: DoctorProfile.objects.get(pk=pk).verification_status == "verified",
    ),
    "user_set_active": Case(
        "accounts.deactivate_account",
        _patient,
        lambda pk, actor: account_services.user_set_active(user=_user(pk), active=False, actor=actor),
        lambda pk, _: not _user(pk).is_active,
    ),
    "revoke_sessions": Case(
        "accounts.revoke_sessions",
        _patient,
        lambda pk, actor: account_services.revoke_sessions(user=_user(pk), actor=actor),
        _revoked,
    ),
    "user_delete": Case(
        "accounts.erase_account",
        _patient,
        lambda pk, actor: account_services.user_delete(user=_user(pk), actor=actor),
        lambda pk, _: _user(pk).deleted_at is not None,
    ),
    "conversation_set_legal_hold": Case(
        "messaging.manage_legal_hold",
        _conversation,
        lambda pk, actor: messaging_services.conversation_set_legal_hold(
            conversation_id=pk, hold=True, actor=actor
        ),
        lambda pk, _: Conversation.objects.get(pk=pk).legal_hold,
    ),
    "review_hide": Case(
        "ratings.hide_review",
        _review,
        lambda pk, actor: rating_services.review_hide(review_id=pk, reason="abusive", actor=actor),
        lambda pk, _: Review.objects.get(pk=pk).hidden_at is not None,
    ),
    "review_show": Case(
        "ratings.hide_review",
        lambda: _review(hidden=True),
        lambda pk, actor: rating_services.review_show(review_id=pk, actor=actor),
        lambda pk, _: Review.objects.get(pk=pk).hidden_at is None,
    ),
    "document_regenerate": Case(
        "documents.regenerate_document",
        _failed_receipt,
        lambda pk, actor: document_services.document_regenerate(document_id=pk, actor=actor),
        _requeued_and_audited,
    ),
    "consultation_refund": Case(
        "payments.refund_consultation",
        _accepted_consultation,
        lambda pk, actor: payment_services.consultation_refund(consultation_id=pk, actor=actor),
        lambda pk, _: Consultation.objects.get(pk=pk).state == "refunded",
    ),
}


def account(*perms: str, staff: bool = True, every_view: bool = False) -> User:
    user: User = User.objects.create_user(
        unique_phone(), "pw-for-tests-only", is_staff=staff, display_name="Clerk"
    )
    if every_view:
        user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    for perm in perms:
        app_label, codename = perm.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return User.objects.get(pk=user.pk)  # no stale permission cache


@pytest.fixture
def calls(
    firebase_admin_api: list[tuple[str, dict[str, Any]]], settings: Any
) -> list[tuple[str, dict[str, Any]]]:
    settings.PAYMENTS_PROVIDER = "development"
    settings.STRIPE_SECRET_KEY = ""
    return firebase_admin_api


def _refused(case: Case, actor: Actor, calls: list[tuple[str, dict[str, Any]]]) -> None:
    pk = case.setup()
    with pytest.raises(ApplicationError) as refused:
        case.run(pk, actor)
    assert (refused.value.code, refused.value.status) == ("permission_denied", 403)
    assert refused.value.as_dict()["permission"] == case.permission
    assert not case.done(pk, calls)


@pytest.mark.parametrize("name", sorted(CASES))
def test_view_only_staff_is_refused_by_the_service(calls, name):
    _refused(CASES[name], account(every_view=True), calls)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_permission_without_staff_status_is_refused(calls, name):
    _refused(CASES[name], account(CASES[name].permission, staff=False), calls)


@pytest.mark.parametrize("name", sorted(CASES))
def test_staff_holding_exactly_the_permission_may(calls, name):
    case = CASES[name]
    pk = case.setup()
    case.run(pk, account(case.permission))
    assert case.done(pk, calls)


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_explicit_operator_may(calls, name):
    case = CASES[name]
    pk = case.setup()
    case.run(pk, Operator(command="test"))
    assert case.done(pk, calls)


def test_the_account_holder_may_erase_and_sign_out_themselves(calls):
    user = _user(_patient())
    account_services.revoke_sessions(user=user, actor=user)
    assert _revoked(user.pk, calls)
    account_services.user_delete(user=user, actor=user)
    assert _user(user.pk).deleted_at is not None


def test_the_actor_is_required():
    """No default: a caller that forgets the actor fails, it never runs as nobody."""
    pk = _pending_doctor()
    with pytest.raises(TypeError):
        account_services.doctor_set_verification(doctor=_user(pk), status="verified")
    assert DoctorProfile.objects.get(pk=pk).verification_status == "pending"


# --- Operators: the management commands act as an explicit, audited Operator -------------------
def _run(*args: str) -> None:
    call_command(*args, stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize(
    ("args", "action", "done"),
    [
        (("verify_doctor",), actions.DOCTOR_VERIFY, CASES["doctor_set_verification"].done),
        (("verify_doctor", "--reject"), actions.DOCTOR_REJECT, None),
        (("deactivate_user",), actions.USER_DEACTIVATE, CASES["user_set_active"].done),
        (("revoke_sessions",), actions.USER_SIGNOUT, CASES["revoke_sessions"].done),
        (("delete_user",), actions.USER_DELETE, CASES["user_delete"].done),
    ],
)
def test_commands_act_as_an_operator_and_are_audited_as_commands(calls, args, action, done):
    pk = _pending_doctor() if args[0] == "verify_doctor" else _patient()
    _run(args[0], str(pk), *args[1:])
    if done is not None:
        assert done(pk, calls)
    else:
        assert DoctorProfile.objects.get(pk=pk).verification_status == "rejected"
    rows = AuditEntry.objects.filter(action=action, object_type="user", object_id=str(pk))
    assert [(r.channel, r.actor_id, r.actor_staff) for r in rows] == [("command", None, False)]


def test_doctor_decisions_in_the_admin_are_audited_with_who():
    pk = _pending_doctor()
    verifier = account("accounts.view_doctorprofile", "accounts.verify_doctor")
    client = Client()
    client.force_login(verifier)
    changelist = reverse("admin:accounts_doctorprofile_changelist")
    assert client.post(changelist, {"action": "approve", "_selected_action": [pk]}).status_code == 302
    profile = DoctorProfile.objects.get(pk=pk)
    assert (profile.verification_status, profile.verified_by_id) == ("verified", verifier.pk)
    rows = AuditEntry.objects.filter(action=actions.DOCTOR_VERIFY, object_id=str(pk))
    assert [(r.channel, r.actor_id, r.actor_staff) for r in rows] == [("admin", verifier.pk, True)]
