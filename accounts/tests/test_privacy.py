"""Erasure leaves nothing behind, and an export shows nothing of other people.

A patient uses everything (REST sign-up with an emergency contact, a device, an upload, messages
in a direct and a group conversation, an edit, a paid consultation with a Stripe webhook, staff
editing the account in the admin), then erases the account. Then the WHOLE database (every
text, varchar, json and bytea column of every table, found through information_schema), the
Redis keys and values under this test worker's prefix and the storage directory are searched
for the patient's phone number, display name, Firebase uid, push token, emergency contact, the
texts they sent and the contents and name of the file they uploaded. They may remain only in
``ALLOWED_TABLES`` (pseudonymised financial and audit rows; extend the list when such a table
is added, with the reason).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as dj_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts import services as account_services
from accounts.models import User
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from audit.models import AuditEntry
from conftest import unique_phone
from documents.models import Document
from groups import services as group_services
from messaging import services as messaging_services
from payments import booking as payment_booking
from payments import services as payment_services
from payments import webhooks as payment_webhooks
from payments.gateway import get_gateway
from payments.models import Consultation, LedgerEntry, WebhookEvent
from payments.tests.fake_stripe import FakeStripe, sign

pytestmark = pytest.mark.django_db(transaction=True)

# Tables where an erased user's data may remain, and why. A hit anywhere else fails the test.
# Financial rows are kept for legal retention and point at the user by id only; the audit log
# (the ``audit`` app) records who did what by id. Add a table here only with its reason.
ALLOWED_TABLES: dict[str, str] = {
    "payments_consultation": "financial record (legal retention), user by id; intake text erased",
    "payments_consultationtransition": "financial record, actor by id",
    "payments_ledgerentry": "financial record, amounts and Stripe ids",
    "payments_webhookevent": "Stripe's events as received (ids, amounts, our metadata: ids only)",
    "audit_auditentry": "the append-only audit log: actor and object by id, never content",
}
ALLOWED_TABLE_PREFIXES: tuple[str, ...] = ("audit_",)
WEBHOOK_SECRET = "whsec_privacy_test"


def allowed(table: str) -> bool:
    return table in ALLOWED_TABLES or table.startswith(ALLOWED_TABLE_PREFIXES)


# --- the scans ------------------------------------------------------------------------------
SCANNED_TYPES = ("text", "character varying", "character", "json", "jsonb", "bytea", "ARRAY")


def scan_database(needles: dict[str, str]) -> list[tuple[str, str, str]]:
    """(table, column, needle name) for every needle found anywhere in the public schema."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " JOIN information_schema.tables USING (table_catalog, table_schema, table_name)"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND data_type = ANY(%s)"
            " ORDER BY table_name, ordinal_position",
            [list(SCANNED_TYPES)],
        )
        columns = cursor.fetchall()
        tables = {t for t, _, _ in columns}
        expected = {"accounts_user", "messaging_message", "messaging_attachment", "django_admin_log"}
        assert expected <= tables, f"the scan misses tables: {expected - tables}"
        hits = []
        for table, column, data_type in columns:
            as_text = (
                f"encode({connection.ops.quote_name(column)}, 'escape')"
                if data_type == "bytea"
                else f"{connection.ops.quote_name(column)}::text"
            )
            for name, needle in needles.items():
                cursor.execute(
                    f"SELECT count(*) FROM {connection.ops.quote_name(table)}"  # names from the catalogue
                    f" WHERE strpos(lower({as_text}), lower(%s)) > 0",
                    [needle],
                )
                if cursor.fetchone()[0]:
                    hits.append((table, column, name))
    return hits


def redis_prefixes() -> set[str]:
    return {
        dj_settings.CACHES["default"].get("KEY_PREFIX", ""),
        dj_settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", ""),
        dj_settings.CELERY_TASK_DEFAULT_QUEUE,
    } - {""}


def redis_dump(client: Any, key: bytes) -> bytes:
    kind = client.type(key).decode()
    parts: list[bytes] = [key]
    if kind == "string":
        parts.append(client.get(key) or b"")
    elif kind == "hash":
        for field, value in client.hgetall(key).items():
            parts += [field, value]
    elif kind == "list":
        parts += client.lrange(key, 0, -1)
    elif kind == "set":
        parts += list(client.smembers(key))
    elif kind == "zset":
        parts += [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    elif kind == "stream":
        for _, fields in client.xrange(key):
            for field, value in fields.items():
                parts += [field, value]
    return b"\x00".join(parts)


def scan_redis(needles: dict[str, str]) -> list[tuple[str, str]]:
    """(key, needle name) for every needle in a key or value under this test worker's prefixes."""
    client = redis.Redis.from_url(str(dj_settings.REDIS_URL))
    hits = []
    scanned = 0
    try:
        for prefix in redis_prefixes():
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                scanned += 1
                blob = redis_dump(client, key).lower()
                hits += [
                    (key.decode(errors="replace"), n)
                    for n, v in needles.items()
                    if v.lower().encode() in blob
                ]
    finally:
        client.close()
    assert scanned > 0, "no Redis keys under this worker's prefixes: the scan looked in the wrong place"
    return hits


REDIS_CANARY_KEY = f"{dj_settings.CACHES['default'].get('KEY_PREFIX', '')}:privacy-scan-self-test"


def plant_redis_canary() -> str:
    """A value the Redis scan must find: proof that it looks where the test's keys are."""
    value = f"canary-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(str(dj_settings.REDIS_URL))
    client.set(REDIS_CANARY_KEY, value, ex=60)
    client.close()
    return value


def forget_redis_canary() -> None:
    client = redis.Redis.from_url(str(dj_settings.REDIS_URL))
    client.delete(REDIS_CANARY_KEY)
    client.close()


def scan_storage(root: Path, needles: dict[str, str]) -> list[tuple[str, str]]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            blob = path.read_bytes().lower() + str(path).lower().encode()
            hits += [(str(path), n) for n, v in needles.items() if v.lower().encode() in blob]
    return hits


# --- the life of a patient ---------------------------------------------------------------------
@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def stripe(settings):
    fake = FakeStripe().start()
    settings.PAYMENTS_PROVIDER = "stripe"
    settings.STRIPE_SECRET_KEY = "sk_test_privacy"
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.PLATFORM_FEE_PERCENT = 15
    yield fake
    fake.stop()


def staff_edits_in_admin(user: User) -> None:
    """Staff open the patient's account in the admin and save it (the admin logs the change)."""
    staff = User.objects.create_superuser(unique_phone(), "correct horse battery")
    client = Client()
    client.force_login(staff)
    url = reverse("admin:accounts_user_change", args=[user.pk])
    page = client.get(url)
    form = page.context["adminform"].form
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        if field.disabled:
            continue
        value = form[name].value()
        if value is None or value is False:
            continue
        data[name] = [str(v) for v in value] if isinstance(value, list | tuple) else value
    data["is_active"] = "on"
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        data.update({management.add_prefix(k): v for k, v in management.initial.items()})
        for sub in formset.forms:
            for name in sub.fields:
                value = sub[name].value()
                if value not in (None, False):
                    data[sub.add_prefix(name)] = value
    response = client.post(url, data)
    assert response.status_code == 302, response.content[:3000]


def live_a_life(api_for, stripe: FakeStripe) -> dict[str, Any]:
    marker = uuid.uuid4().hex[:12]
    phone = unique_phone()
    uid = f"privacy-uid-{marker}"
    secrets = {
        "phone": phone,
        "phone_digits": phone.lstrip("+"),
        "display_name": f"Zelda Canary{marker}",
        "firebase_uid": uid,
        "fcm_token": f"fcm-token-{marker}",
        "emergency_contact": f"Emergency Person{marker}",
        "emergency_phone": unique_phone(),
        "direct_text": f"my test results {marker} are worrying",
        "edited_text": f"edited words {marker}x",
        "group_text": f"group confession {marker}g",
        "reason": f"chest pain since {marker}r",
        "file_content": f"LAB REPORT {marker}f",
        "file_name": f"lab-{marker}n",
    }
    secrets["file_sha256"] = hashlib.sha256(secrets["file_content"].encode()).hexdigest()
    client = api_for(uid, phone)
    registered = client.post(
        "/api/v1/auth/register",
        {
            "role": "patient",
            "display_name": secrets["display_name"],
            "emergency_contact_name": secrets["emergency_contact"],
            "emergency_contact_phone": secrets["emergency_phone"],
        },
        format="json",
    )
    assert registered.status_code == 201, registered.content
    patient = User.objects.get(firebase_uid=uid)
    device = client.post(
        "/api/v1/devices", {"fcm_token": secrets["fcm_token"], "platform": "android"}, format="json"
    )
    assert device.status_code in (200, 201), device.content

    doctor = DoctorFactory.create(profile__consultation_fee=2500)
    DeviceFactory(user=doctor, fcm_token=f"doctor-token-{marker}", installation_id=None)
    direct, _ = messaging_services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    upload = client.post(
        "/api/v1/attachments",
        {
            "file": SimpleUploadedFile(
                f"{secrets['file_name']}.txt", secrets["file_content"].encode(), content_type="text/plain"
            )
        },
        format="multipart",
    )
    assert upload.status_code == 201, upload.content
    sent = messaging_services.message_send(
        sender=patient,
        conversation_id=direct.pk,
        client_id=uuid.uuid4(),
        body=secrets["direct_text"],
        attachment_ids=[upload.json()["id"]],
    ).message
    to_edit = messaging_services.message_send(
        sender=patient, conversation_id=direct.pk, client_id=uuid.uuid4(), body="a typo"
    ).message
    messaging_services.message_edit(user=patient, message_id=to_edit.pk, body=secrets["edited_text"])
    doctor_reply = messaging_services.message_send(
        sender=doctor,
        conversation_id=direct.pk,
        client_id=uuid.uuid4(),
        body=f"doctor says {marker}d",
        reply_to=sent.pk,
    ).message
    messaging_services.receipt_mark(
        user=patient, conversation_id=direct.pk, seq=doctor_reply.seq, kind="read"
    )

    group = group_services.group_create(
        creator=doctor, name=f"Support group {marker}", member_ids=[patient.pk]
    )
    messaging_services.message_send(
        sender=patient, conversation_id=group.pk, client_id=uuid.uuid4(), body=secrets["group_text"]
    )

    consultation = payment_booking.consultation_request(
        patient=patient, doctor_id=doctor.pk, kind="chat", reason=secrets["reason"]
    )
    intent_id = consultation.payment_intent_id
    assert intent_id is not None
    stripe.authorize(intent_id)
    event = stripe.event("payment_intent.amount_capturable_updated", stripe.payment_intent(intent_id))
    body = json.dumps(event)
    hook = Client().generic(
        "POST",
        "/api/v1/payments/stripe/webhook",
        body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, WEBHOOK_SECRET),
    )
    assert hook.status_code == 200, hook.content
    intent = get_gateway("stripe").retrieve_payment_intent(intent_id)
    payment_webhooks.reconcile_payment_intent(intent=intent, fix=True)
    payment_services.consultation_accept(user=doctor, consultation_id=consultation.pk)
    payment_services.consultation_complete(user=doctor, consultation_id=consultation.pk)

    staff_edits_in_admin(patient)
    exported = client.get("/api/v1/me/export")
    assert exported.status_code == 200
    return {
        "patient": patient,
        "doctor": doctor,
        "client": client,
        "secrets": secrets,
        "consultation": consultation,
        "direct": direct,
        "group": group,
        "export": exported.json(),
    }


@pytest.fixture
def api_for(token_minter):
    from rest_framework.test import APIClient

    def build(uid: str, phone: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_minter.mint(uid, phone)}")
        return client

    return build


# --- the tests --------------------------------------------------------------------------------
def test_erasure_leaves_the_user_only_in_pseudonymised_financial_and_audit_rows(
    api_for, stripe, media, firebase_admin_api
):
    life = live_a_life(api_for, stripe)
    secrets, patient = life["secrets"], life["patient"]
    # The scans can see the secrets before erasure (otherwise they would prove nothing).
    before_db = {name for _, _, name in scan_database(secrets)}
    assert {"phone", "display_name", "firebase_uid", "fcm_token", "direct_text", "group_text"} <= before_db
    assert {name for _, name in scan_storage(media, secrets)} >= {"file_content"}
    assert scan_redis({"self_test": plant_redis_canary()}) == [(REDIS_CANARY_KEY, "self_test")]
    forget_redis_canary()
    # The payment's receipt was generated (it prints the patient's name): erasure removes it.
    receipt = Document.objects.get(patient=patient, kind="receipt")
    assert (receipt.status, (media / receipt.file.name).is_file()) == ("ready", True)

    response = life["client"].delete("/api/v1/me")
    assert response.status_code == 204, response.content
    assert not Document.objects.filter(patient=patient).exists()
    assert not (media / receipt.file.name).exists()

    db_hits = scan_database(secrets)
    assert [h for h in db_hits if not allowed(h[0])] == [], db_hits
    assert scan_redis(secrets) == []
    assert scan_storage(media, secrets) == []
    # Pseudonymised, not gone: the money trail and the conversation history remain, by id.
    consultation = Consultation.objects.get(pk=life["consultation"].pk)
    assert consultation.patient_id == patient.pk
    assert consultation.reason == ""
    assert LedgerEntry.objects.filter(consultation=consultation).exists()
    assert WebhookEvent.objects.exists()
    row = User.objects.get(pk=patient.pk)
    assert (row.phone_number, row.firebase_uid, row.display_name) == (None, None, "")
    # The audit trail of what the user did stays, under their id only.
    assert AuditEntry.objects.filter(actor_id=patient.pk).exists()


def test_the_export_holds_nothing_of_other_users_beyond_what_they_sent_in_shared_conversations(
    api_for, stripe, media
):
    life = live_a_life(api_for, stripe)
    patient, doctor = life["patient"], life["doctor"]
    # Another patient of the same doctor, in a conversation the patient is not part of.
    bystander = PatientFactory(display_name="Bystander Bob")
    theirs, _ = messaging_services.conversation_open_direct(user=bystander, peer_id=doctor.pk)
    hidden = messaging_services.message_send(
        sender=bystander, conversation_id=theirs.pk, client_id=uuid.uuid4(), body="bystander secret"
    ).message
    messaging_services.message_send(
        sender=doctor, conversation_id=theirs.pk, client_id=uuid.uuid4(), body="advice for bob only"
    )
    exported = life["client"].get("/api/v1/me/export").json()
    text = json.dumps(exported)
    for other in (doctor, bystander):
        assert other.phone_number not in text
        assert other.phone_number.lstrip("+") not in text
        assert other.firebase_uid not in text
    assert "Bystander Bob" not in text
    assert "bystander secret" not in text
    assert "advice for bob only" not in text
    assert theirs.pk not in {c["id"] for c in exported["messaging"]["conversations"]}
    assert hidden.pk not in {m["id"] for m in exported["messaging"]["messages_sent"]}
    # Their own data is all there.
    assert exported["user"]["phone_number"] == patient.phone_number
    assert life["secrets"]["direct_text"] in text
    assert life["secrets"]["reason"] in text
    # Every message in the export is the user's own, or another member's in a shared conversation.
    shared = {life["direct"].pk, life["group"].pk}
    assert {c["id"] for c in exported["messaging"]["conversations"]} == shared
    for message in exported["messaging"]["messages_sent"]:
        assert message["conversation_id"] in shared
        assert message["sender_id"] == patient.pk or message["conversation_id"] in shared
    # The same holds the other way round: the doctor's export has no patient's number.
    doctor_export = json.dumps(account_services.user_export(user=doctor))
    for other in (patient, bystander):
        assert other.phone_number not in doctor_export
        assert other.firebase_uid not in doctor_export
    assert life["secrets"]["direct_text"] not in doctor_export  # the patient's words, not the doctor's
