"""The audit log: one row per audited action with the right fields and no text or PII; the
database refuses UPDATE and DELETE; the admin shows it read-only; refusals are logged."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test import Client as DjangoClient
from PIL import Image
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.factories import PatientFactory
from audit import actions, services
from audit.client import clean_user_agent, client_ip, from_scope
from audit.models import AuditEntry
from calls import services as calls_services
from calls.tests.conftest import SDP_OFFER
from messaging import services as messaging_services
from messaging.models import Conversation
from messaging.tests.factories import pair

pytestmark = pytest.mark.django_db

SECRET_TEXT = "my biopsy result is positive"
USER_AGENT = "healthchat-android/3.1 (test)"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def tokens(minted_tokens: list[str]) -> list[str]:
    """The tokens the shared ``client_for`` minted (none may leak into the log)."""
    return minted_tokens


@pytest.fixture
def api(client_for):
    """The shared authenticated client (root conftest), with this suite's user agent."""
    return lambda user: client_for(user, headers={"HTTP_USER_AGENT": USER_AGENT})


def last_id() -> int:
    row = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first()
    return row or 0


def new_rows(since: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(id__gt=since).order_by("id"))


def assert_no_pii(rows: list[AuditEntry], *secrets: str) -> None:
    """No field of any row holds message text, a token or a phone number."""
    for row in rows:
        dump = json.dumps(
            {f.attname: str(getattr(row, f.attname)) for f in AuditEntry._meta.fields}, ensure_ascii=False
        )
        for secret in secrets:
            if secret:
                assert secret not in dump, f"{secret[:12]}... leaked into {row.action}"
        assert "+1" not in dump  # no E.164 phone number


def the_one(since: int, **expected: Any) -> AuditEntry:
    rows = new_rows(since)
    assert len(rows) == 1, [(r.action, r.outcome, r.code) for r in rows]
    row = rows[0]
    for name, value in expected.items():
        assert getattr(row, name) == value, (name, getattr(row, name), value)
    return row


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(out, format="PNG")
    return out.getvalue()


def sent_attachment(api, patient: User, conversation: Conversation) -> int:
    uploaded = api(patient).post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile("scan.png", png(), content_type="image/png")},
        format="multipart",
    )
    assert uploaded.status_code == 201, uploaded.content
    attachment_id = int(uploaded.json()["id"])
    messaging_services.message_send(
        sender=patient,
        conversation_id=conversation.pk,
        client_id=uuid.uuid4(),
        body=SECRET_TEXT,
        attachment_ids=[attachment_id],
    )
    return attachment_id


# --- REST reads: one row each --------------------------------------------------------------------
def test_each_rest_read_writes_exactly_one_row(api, tokens):
    patient, doctor, conversation = pair()
    attachment_id = sent_attachment(api, patient, conversation)
    call_id = calls_services.call_start(
        caller=patient, conversation_id=conversation.pk, media="audio", sdp=SDP_OFFER
    ).call.pk
    client = api(doctor)
    common = {"actor_id": doctor.pk, "actor_staff": False, "outcome": "ok", "channel": "rest"}
    checks = [
        ("/api/v1/conversations", actions.CONVERSATION_LIST, "", ""),
        (
            f"/api/v1/conversations/{conversation.pk}",
            actions.CONVERSATION_READ,
            "conversation",
            conversation.pk,
        ),
        (
            f"/api/v1/conversations/{conversation.pk}/messages",
            actions.HISTORY_READ,
            "conversation",
            conversation.pk,
        ),
        (f"/api/v1/attachments/{attachment_id}", actions.ATTACHMENT_LINK, "attachment", attachment_id),
        ("/api/v1/calls", actions.CALL_LIST, "", ""),
        (f"/api/v1/calls/{call_id}", actions.CALL_READ, "call", call_id),
    ]
    everything: list[AuditEntry] = []
    for url, action, object_type, object_id in checks:
        before = last_id()
        response = client.get(url)
        assert response.status_code == 200, (url, response.content)
        row = the_one(before, action=action, object_type=object_type, object_id=str(object_id), **common)
        assert row.ip == "127.0.0.1"
        assert row.user_agent == USER_AGENT
        assert row.code == ""
        everything.append(row)
    # The streamed download: its holder comes from the signed link, no Authorization header.
    url = client.get(f"/api/v1/attachments/{attachment_id}").json()["url"]
    before = last_id()
    download = APIClient().get(url)
    assert download.status_code == 200
    b"".join(download.streaming_content)
    everything.append(
        the_one(
            before,
            action=actions.ATTACHMENT_DOWNLOAD,
            actor_id=doctor.pk,
            object_type="attachment",
            object_id=str(attachment_id),
            outcome="ok",
        )
    )
    assert_no_pii(everything, SECRET_TEXT, *tokens, url.split("token=")[1], patient.phone_number)


def test_export_over_rest_and_the_command_each_write_one_row(api, tokens, capsys):
    patient, _doctor, conversation = pair()
    messaging_services.message_send(
        sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=SECRET_TEXT
    )
    before = last_id()
    assert api(patient).get("/api/v1/me/export").status_code == 200
    rest = the_one(
        before,
        action=actions.USER_EXPORT,
        actor_id=patient.pk,
        object_type="user",
        object_id=str(patient.pk),
        channel="rest",
    )
    before = last_id()
    call_command("export_user", str(patient.pk))
    assert SECRET_TEXT in capsys.readouterr().out  # the export itself has the text; the log not
    command = the_one(
        before,
        action=actions.USER_EXPORT,
        actor_id=None,
        object_type="user",
        object_id=str(patient.pk),
        channel="command",
        ip=None,
    )
    assert_no_pii([rest, command], SECRET_TEXT, *tokens, patient.phone_number)


def test_registration_is_logged_as_a_sign_in(make_token):
    from conftest import unique_phone

    phone = unique_phone()
    token = make_token(phone_number=phone)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    before = last_id()
    response = client.post("/api/v1/auth/register", {"role": "patient", "display_name": "Ann"}, format="json")
    assert response.status_code == 201, response.content
    user = User.objects.get(phone_number=phone)
    row = the_one(before, action=actions.AUTH_REGISTER, actor_id=user.pk, outcome="ok", channel="rest")
    assert_no_pii([row], token, phone)


# --- Refusals on REST -------------------------------------------------------------------------
def test_rest_authorization_failures_are_logged(api, tokens):
    patient, _doctor, conversation = pair()
    stranger = PatientFactory()
    before = last_id()
    response = api(stranger).get(f"/api/v1/conversations/{conversation.pk}/messages")
    assert response.status_code == 404
    the_one(
        before,
        action=actions.AUTHZ_DENIED,
        actor_id=stranger.pk,
        object_type="conversation",
        object_id=str(conversation.pk),
        outcome="denied",
        code="conversation_not_found",
        channel="rest",
    )
    # 403 from a rule: a patient may not open a conversation with another patient.
    before = last_id()
    response = api(stranger).post("/api/v1/conversations", {"peer_id": patient.pk}, format="json")
    assert response.status_code == 403
    the_one(before, action=actions.AUTHZ_DENIED, actor_id=stranger.pk, code="contact_not_allowed")
    # A forged download link: refused, logged without the link's token.
    before = last_id()
    forged = "forged-token-value"
    assert APIClient().get(f"/api/v1/attachments/1/content?token={forged}").status_code == 403
    row = the_one(before, action=actions.AUTHZ_DENIED, actor_id=None, code="invalid_link")
    assert_no_pii(new_rows(0), forged, *tokens)
    assert row.object_type == "attachment"


def test_rejected_tokens_are_failed_sign_ins_and_anonymous_calls_are_not(make_token, token_minter):
    user = PatientFactory()
    expired = make_token(uid=user.firebase_uid, phone_number=user.phone_number, lifetime=-600)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {expired}")
    before = last_id()
    assert client.get("/api/v1/conversations").status_code == 401
    row = the_one(before, action=actions.AUTH_SIGNIN, outcome="denied", actor_id=None, code="token_expired")
    assert_no_pii([row], expired, user.phone_number)
    before = last_id()
    assert APIClient().get("/api/v1/conversations").status_code == 401
    assert new_rows(before) == []


# --- The database refuses changes -------------------------------------------------------------
def test_database_refuses_update_and_delete_through_orm_and_sql():
    row = services.record(actions.CONVERSATION_LIST, actor=1)
    attempts = [
        lambda: AuditEntry.objects.filter(pk=row.pk).update(outcome="denied"),
        lambda: AuditEntry.objects.filter(pk=row.pk).delete(),
        lambda: row.save(),
        lambda: row.delete(),
    ]
    for attempt in attempts:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()
    for sql in (
        "UPDATE audit_auditentry SET actor_id = 2 WHERE id = %s",
        "DELETE FROM audit_auditentry WHERE id = %s",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [row.pk])
    fresh = AuditEntry.objects.get(pk=row.pk)
    assert (fresh.actor_id, fresh.outcome) == (1, "ok")


def test_no_free_text_fits_in_a_row():
    with pytest.raises(ValueError, match="unknown audit action"):
        services.record("sent a message to Bob")
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEntry.objects.create(action="history.read", code=SECRET_TEXT, channel="rest")
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEntry.objects.create(action="history.read", object_id=SECRET_TEXT, channel="rest")
    # The service drops what is not an id or a code instead of storing it.
    row = services.record(actions.AUTHZ_DENIED, object_type="conversation", object_id=SECRET_TEXT, code="x y")
    assert (row.object_id, row.code) == ("", "invalid_code")


def test_record_many_is_one_insert(django_assert_num_queries):
    entries = [
        services.entry(actions.HISTORY_READ, actor=i, object_type="conversation", object_id=i)
        for i in range(5)
    ]
    with django_assert_num_queries(1):
        services.record_many(entries)
    assert AuditEntry.objects.filter(action=actions.HISTORY_READ).count() == 5


# --- Where from -----------------------------------------------------------------------------------
def test_forwarded_for_is_believed_only_from_trusted_proxies(settings):
    settings.TRUSTED_PROXIES = []
    assert client_ip("10.0.0.5", "203.0.113.7") == "10.0.0.5"
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_ip("10.0.0.5", "203.0.113.7") == "203.0.113.7"
    # A client cannot spoof by prepending: the right-most untrusted hop wins.
    assert client_ip("10.0.0.5", "1.2.3.4, 203.0.113.7, 10.0.0.9") == "203.0.113.7"
    assert client_ip("192.0.2.1", "203.0.113.7") == "192.0.2.1"  # the peer is not a proxy
    assert client_ip("10.0.0.5", "not-an-ip") == "10.0.0.5"
    assert client_ip("garbage", None) is None
    assert clean_user_agent("x" * 500) == "x" * 200
    assert clean_user_agent("a\nb\x00c") == "a?b?c"
    scope = {
        "client": ("10.0.0.5", 5555),
        "headers": [(b"x-forwarded-for", b"198.51.100.2"), (b"user-agent", b"okhttp/4.12")],
    }
    client = from_scope(scope)
    assert (client.channel, client.ip, client.user_agent) == ("socket", "198.51.100.2", "okhttp/4.12")


# --- Admin ------------------------------------------------------------------------------------------
@pytest.fixture
def staff() -> tuple[User, DjangoClient]:
    user = User.objects.create_superuser(phone_number="+12025550999", password="a-long-passphrase-1")
    browser = DjangoClient(HTTP_USER_AGENT="Firefox")
    browser.force_login(user)
    return user, browser


def test_admin_views_of_health_data_are_logged(staff):
    user, browser = staff
    patient, _doctor, conversation = pair()
    pages = [
        ("/admin/messaging/conversation/", "messaging.conversation", ""),
        (
            f"/admin/messaging/conversation/{conversation.pk}/change/",
            "messaging.conversation",
            conversation.pk,
        ),
        ("/admin/accounts/user/", "accounts.user", ""),
        (f"/admin/accounts/user/{patient.pk}/change/", "accounts.user", patient.pk),
        ("/admin/accounts/doctorprofile/", "accounts.doctorprofile", ""),
        ("/admin/groups/groupconversation/", "messaging.conversation", ""),
        ("/admin/calls/call/", "calls.call", ""),
        ("/admin/payments/consultation/", "payments.consultation", ""),
    ]
    for url, object_type, object_id in pages:
        before = last_id()
        response = browser.get(url)
        assert response.status_code == 200, url
        the_one(
            before,
            action=actions.ADMIN_VIEW,
            actor_id=user.pk,
            actor_staff=True,
            object_type=object_type,
            object_id=str(object_id),
            channel="admin",
            user_agent="Firefox",
        )


def test_legal_hold_from_the_admin_is_audited_with_who_and_when(staff):
    user, browser = staff
    _patient, _doctor, conversation = pair()
    url = f"/admin/messaging/conversation/{conversation.pk}/change/"
    before = last_id()
    response = browser.post(url, {"legal_hold": "on", **_empty_inline()})
    assert response.status_code == 302, response.content[:2000]
    conversation.refresh_from_db()
    assert conversation.legal_hold is True
    rows = new_rows(before)
    assert [(r.action, r.actor_id, r.object_id, r.channel) for r in rows] == [
        (actions.LEGAL_HOLD_SET, user.pk, str(conversation.pk), "admin"),
        (actions.ADMIN_CHANGE, user.pk, str(conversation.pk), "admin"),
    ]
    assert rows[0].actor_staff is True
    assert rows[0].at is not None
    # The changelist action releases it (and a second release changes and logs nothing).
    for _ in range(2):
        browser.post(
            "/admin/messaging/conversation/",
            {"action": "release_legal_hold", "_selected_action": [conversation.pk]},
        )
    conversation.refresh_from_db()
    assert conversation.legal_hold is False
    assert (
        AuditEntry.objects.filter(action=actions.LEGAL_HOLD_RELEASE, object_id=str(conversation.pk)).count()
        == 1
    )


def _empty_inline() -> dict[str, str]:
    return {
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }


def test_audit_admin_is_read_only(staff):
    _user, browser = staff
    row = services.record(actions.HISTORY_READ, actor=42, object_type="conversation", object_id=7)
    assert browser.get("/admin/audit/auditentry/").status_code == 200
    assert browser.get("/admin/audit/auditentry/?q=42").status_code == 200
    assert browser.get("/admin/audit/auditentry/?q=some+text").status_code == 200
    assert (
        browser.get(f"/admin/audit/auditentry/?action={actions.HISTORY_READ}&outcome=ok").status_code == 200
    )
    assert browser.get(f"/admin/audit/auditentry/{row.pk}/change/").status_code == 200  # view only
    assert browser.get("/admin/audit/auditentry/add/").status_code == 403
    assert browser.post(f"/admin/audit/auditentry/{row.pk}/change/", {"outcome": "denied"}).status_code == 403
    assert browser.post(f"/admin/audit/auditentry/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    response = browser.post(
        "/admin/audit/auditentry/", {"action": "delete_selected", "_selected_action": [row.pk]}
    )
    assert response.status_code in (200, 302)
    assert AuditEntry.objects.filter(pk=row.pk, outcome="ok").exists()
    from django.contrib import admin

    model_admin = admin.site._registry[AuditEntry]
    request = type("R", (), {"user": _user})()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_the_socket_send_path_writes_no_audit_rows():
    patient, _doctor, conversation = pair()
    before = last_id()
    for _ in range(3):
        messaging_services.message_send(
            sender=patient, conversation_id=conversation.pk, client_id=uuid.uuid4(), body="hi"
        )
    assert new_rows(before) == []
