"""The authorization matrix's actors and the one world they act on (built through the services).

Used by ``tests/test_authz_rest.py`` (every REST operation of the OpenAPI schema),
``tests/test_authz_socket.py`` (every socket frame type) and ``tests/test_api_fuzz.py``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import responses
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image

from accounts import services as account_services
from accounts.actors import Operator
from accounts.models import Device, DoctorProfile, Specialty, User
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory, UserFactory
from appointments import on_demand
from appointments import selectors as appointment_selectors
from appointments import services as appointment_services
from appointments.models import Appointment
from calls import services as call_services
from calls.models import Call
from documents import services as document_services
from groups import services as group_services
from messaging import services as messaging_services
from messaging.models import Attachment, Conversation, Mention, Message
from moderation import services as moderation_services
from payments import booking as payment_booking
from payments.models import Consultation
from ratings import services as rating_services
from records import services as record_services
from records.models import Prescription, VisitNote
from scheduled import services as scheduled_services

# The columns of the matrix, in order.
ACTORS: tuple[str, ...] = (
    "anonymous",  # no credentials at all
    "expired_token",  # patient A's token, expired
    "patient_a",  # A: consults the doctor, has a conversation, a call, files; in the group
    "patient_b",  # another patient with nothing to do with A
    "doctor",  # A's doctor: the conversation, the consultation and the call with A; owns the group
    "other_doctor",  # a verified doctor who never met A
    "group_member",  # a patient in the doctor's group (with A), not in A's conversation
    "removed_member",  # was in the group, removed by the doctor
    "staff",  # an admin account (is_staff, is_superuser): no powers over the API
    "deleted_user",  # erased account, presenting the token it had
)
SIGNED_OUT = ("anonymous", "expired_token", "deleted_user")
REGISTERED = tuple(a for a in ACTORS if a not in SIGNED_OUT)

# An id no row has (bigint range, far above any sequence a test run reaches).
MISSING_ID = 9_000_000_000_000

SDP = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"

# Text only the participants may ever see: no denial may carry any of it.
SECRET_BODY = "matrix-secret: chest pain since Tuesday"
SECRET_GROUP_BEFORE = "matrix-secret: group note before the removal"
SECRET_GROUP_AFTER = "matrix-secret: group note after the removal"
SECRET_FILE = "matrix-secret-scan.png"
SECRET_REASON = "matrix-secret: recurring migraine"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


@dataclass
class World:
    users: dict[str, User]
    identities: dict[str, tuple[str, str]]  # actor -> (firebase uid, phone) their token names
    conversation: Conversation  # A <-> doctor
    group: Conversation  # doctor (owner), A, group member; removed member gone
    message_a: Message  # A's, in the conversation
    message_doctor: Message  # the doctor's, in the conversation
    message_to_edit: Message  # A's
    message_to_delete: Message  # A's (the socket matrix deletes it)
    group_before: Message  # the group member's, before the removal
    group_after: Message  # the group member's, after the removal
    attachment: Attachment  # A's file, sent in the conversation
    attachment_unsent: Attachment  # A's upload, not sent yet (only A may see it)
    call: Call  # A called the doctor; answered, then hung up
    consultation: Consultation  # A with the doctor, paid (authorised), not yet accepted
    device_a: Device
    bystander: User  # a patient nobody in the matrix is related to
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def patient_a(self) -> User:
        return self.users["patient_a"]

    @property
    def doctor(self) -> User:
        return self.users["doctor"]

    def user(self, actor: str) -> User:
        return self.users[actor]

    def conversations_of(self, actor: str) -> set[int]:
        """The protected conversations ``actor`` is an active member of."""
        return {
            "patient_a": {self.conversation.pk, self.group.pk},
            "doctor": {self.conversation.pk, self.group.pk},
            "group_member": {self.group.pk},
        }.get(actor, set())


def token_for(minter: Callable[..., str], world: World, actor: str) -> str | None:
    """The bearer token ``actor`` presents (None: anonymous)."""
    if actor == "anonymous":
        return None
    if actor == "expired_token":
        uid, phone = world.identities["patient_a"]
        now = int(time.time())
        return minter(uid, phone, lifetime=-60, iat=now - 3660, auth_time=now - 3660)
    uid, phone = world.identities[actor]
    return minter(uid, phone)


def _send(sender: User, conversation: Conversation, body: str | None, **kw: Any) -> Message:
    return messaging_services.message_send(
        sender=sender, conversation_id=conversation.pk, client_id=uuid.uuid4(), body=body, **kw
    ).message


def _firebase_admin_mock() -> responses.RequestsMock:
    """Google's Identity Toolkit admin API (token revocation, user deletion) at the HTTP boundary."""
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body or b"{}")
        return 200, {}, json.dumps({"localId": body.get("localId", ""), "kind": "identitytoolkit#Response"})

    mock.add_callback(
        responses.POST, re.compile(r"https://identitytoolkit\.googleapis\.com/.*"), callback=answer
    )
    mock.add_passthru(re.compile(r"http://(127\.0\.0\.1|localhost)(:\d+)?/.*"))
    return mock


def build_world() -> World:
    """Everyone and everything of the matrix, through the real services (needs MEDIA_ROOT set)."""
    users: dict[str, User] = {
        "patient_a": PatientFactory.create(display_name="Alice Matrix"),
        "patient_b": PatientFactory.create(display_name="Bob Matrix"),
        "doctor": DoctorFactory.create(display_name="Dr Dana Matrix"),
        "other_doctor": DoctorFactory.create(display_name="Dr Otto Matrix"),
        "group_member": PatientFactory.create(display_name="Gina Matrix"),
        "removed_member": PatientFactory.create(display_name="Rex Matrix"),
        "staff": UserFactory.create(role=None, is_staff=True, is_superuser=True, display_name="Stella Staff"),
        "deleted_user": PatientFactory.create(display_name="Dora Deleted"),
    }
    identities = {name: (str(u.firebase_uid), str(u.phone_number)) for name, u in users.items()}
    a, doctor = users["patient_a"], users["doctor"]
    member, removed, deleted = users["group_member"], users["removed_member"], users["deleted_user"]

    # The consultation opens A's conversation with the doctor (development payment provider:
    # authorised at once, so it is "paid").
    consultation = payment_booking.consultation_request(
        patient=a, doctor_id=doctor.pk, kind="chat", reason=SECRET_REASON
    )
    conversation = Conversation.objects.get(pk=consultation.conversation_id)
    message_a = _send(a, conversation, SECRET_BODY)
    message_doctor = _send(doctor, conversation, "matrix-secret: take two and call me")
    message_to_edit = _send(a, conversation, "matrix-secret: a typo to edit")
    message_to_delete = _send(a, conversation, "matrix-secret: sent by mistake")
    upload = SimpleUploadedFile(SECRET_FILE, png(), content_type="image/png")
    attachment = messaging_services.attachment_upload(uploader=a, upload=upload, name=SECRET_FILE)
    _send(a, conversation, None, attachment_ids=[attachment.pk])
    attachment.refresh_from_db()
    upload = SimpleUploadedFile("matrix-unsent.png", png(), content_type="image/png")
    attachment_unsent = messaging_services.attachment_upload(
        uploader=a, upload=upload, name="matrix-unsent.png"
    )

    # The doctor's group: its members first talk to the doctor (a doctor adds only "their" patients).
    for patient in (member, removed, deleted):
        messaging_services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    group = group_services.group_create(
        creator=doctor, name="Matrix care circle", member_ids=[a.pk, member.pk, removed.pk]
    )
    group_before = _send(member, group, SECRET_GROUP_BEFORE)
    group_services.member_remove(actor=doctor, group_id=group.pk, user_id=removed.pk)
    group_after = _send(member, group, SECRET_GROUP_AFTER)
    # A mentions the doctor and the member in the group ("mentions of me": only theirs).
    mentioning = _send(
        a,
        group,
        "@Dana @Gil matrix-secret: please look",
        mentions=[
            {"user_id": doctor.pk, "offset": 0, "length": 5},
            {"user_id": member.pk, "offset": 6, "length": 4},
        ],
    )
    mention_ids = dict(Mention.objects.filter(message=mentioning).values_list("user_id", "id"))

    # A call record: A called, the doctor answered, A hung up.
    started = call_services.call_start(caller=a, conversation_id=conversation.pk, media="audio", sdp=SDP)
    call_services.call_accept(user=doctor, call_id=started.call.pk, sdp=SDP)
    call_services.call_hangup(user=a, call_id=started.call.pk)
    call = Call.objects.get(pk=started.call.pk)

    device_a = DeviceFactory.create(user=a)
    DeviceFactory.create(user=users["patient_b"])

    # The deleted user talked to the doctor, then erased their account.
    deleted_conversation = Conversation.objects.get(
        direct_key=f"{min(deleted.pk, doctor.pk)}:{max(deleted.pk, doctor.pk)}"
    )
    _send(deleted, deleted_conversation, "matrix-secret: erased with the account")
    with _firebase_admin_mock():
        account_services.user_delete(user=deleted, actor=Operator(command="test"))
    deleted.refresh_from_db()

    # The other doctor takes bookings all day; B holds a confirmed appointment with them (made
    # directly: it opens no conversation, so no other row of the matrix changes).
    other = users["other_doctor"]
    schedule = appointment_services.schedule_set(
        doctor=other,
        timezone_name="UTC",
        weekly_hours=[{"weekday": d, "start": "00:00", "end": "23:00"} for d in range(7)],
        min_notice_minutes=0,
        horizon_days=30,
    )
    # Two days ahead: well outside the free-cancel window (24 h), so rescheduling it is allowed
    # however long the matrix takes (a slot just past "now + 24 h" was a flake).
    later = timezone.now() + dt.timedelta(days=2)
    start, end = appointment_selectors.free_slots(
        schedule=schedule, start=later, end=later + dt.timedelta(days=1)
    )[0]
    appointment = Appointment.objects.create(
        doctor=other, patient=users["patient_b"], kind="chat", starts_at=start, ends_at=end, state="confirmed"
    )

    # The doctor's scheduled message to A (pending), and an image the doctor may make the group's
    # avatar (an unsent upload).
    scheduled, _ = scheduled_services.scheduled_create(
        author=doctor,
        conversation_id=conversation.pk,
        body="matrix-secret: take the second dose at 20:00",
        send_at=timezone.now() + dt.timedelta(days=1),
    )
    upload = SimpleUploadedFile("matrix-avatar.png", png(), content_type="image/png")
    avatar_upload = messaging_services.attachment_upload(
        uploader=doctor, upload=upload, name="matrix-avatar.png"
    )

    # B asks for the first available doctor of the other doctor's specialty (only they take it).
    matrix_specialty = Specialty.objects.create(slug="matrix-cardiology", name="Matrix cardiology")
    DoctorProfile.objects.filter(user=other).update(specialty=matrix_specialty)
    on_demand_request = on_demand.request_create(
        patient=users["patient_b"], specialty=matrix_specialty.slug, kind="chat", reason=SECRET_REASON
    )

    # The clinical record of A's consultation, made directly (the services want an accepted
    # consultation; this one stays paid for the payments rows): the doctor's signed note, shared
    # with A, and a prescription for A.
    signed_at = timezone.now()
    note = VisitNote.objects.create(
        consultation=consultation,
        author=doctor,
        state=VisitNote.State.SIGNED,
        assessment="matrix-secret: migraine with aura",
        signed_at=signed_at,
        shared_at=signed_at,
    )
    profile = DoctorProfile.objects.get(user=doctor)
    prescription = Prescription.objects.create(
        consultation=consultation,
        doctor=doctor,
        patient=a,
        number=record_services.new_number(),
        verification_code=record_services.new_verification_code(),
        doctor_licence_number=profile.licence_number,
        jurisdiction=profile.jurisdiction,
        medication_name="matrix-secret: sumatriptan",
        dose="50 mg",
        frequency="at onset",
        quantity=6,
    )
    # An earlier consultation of A with the doctor, completed, and A's rating of it.
    earlier = Consultation.objects.create(
        patient=users["patient_a"],
        doctor=doctor,
        kind="chat",
        state=Consultation.State.COMPLETED,
        price=consultation.price,
        currency=consultation.currency,
        platform_fee=consultation.platform_fee,
        conversation=conversation,
        provider=consultation.provider,
        expires_at=timezone.now() - dt.timedelta(days=20),
        accepted_at=timezone.now() - dt.timedelta(days=20),
        completed_at=timezone.now() - dt.timedelta(days=3),
        closes_at=timezone.now() + dt.timedelta(days=4),
    )
    review = rating_services.review_create(
        patient=users["patient_a"], consultation_id=earlier.pk, stars=4, comment="Listened carefully."
    )

    # A's consultation summary (the doctor sees it too) and A's copy with the chat (A alone),
    # rendered as the worker would.
    documents = {}
    for name, with_chat in (("document", False), ("chat_document", True)):
        asked = document_services.document_request(
            user=a, kind="consultation_summary", consultation_id=consultation.pk, include_chat=with_chat
        )
        rendered = document_services.document_render(document_id=asked.pk)
        assert rendered is not None
        assert rendered.status == "ready", rendered.error
        documents[name] = rendered

    # The doctor reported A's message (only the doctor may read that report).
    report, _ = moderation_services.report_create(
        reporter=doctor, target="message", message_id=message_a.pk, reason="other", text="matrix-secret: tone"
    )

    consultation.refresh_from_db()
    assert consultation.state == Consultation.State.PAID, consultation.state
    return World(
        users=users,
        identities=identities,
        conversation=conversation,
        group=group,
        message_a=message_a,
        message_doctor=message_doctor,
        message_to_edit=message_to_edit,
        message_to_delete=message_to_delete,
        group_before=group_before,
        group_after=group_after,
        attachment=attachment,
        attachment_unsent=attachment_unsent,
        call=call,
        consultation=consultation,
        device_a=device_a,
        bystander=PatientFactory.create(display_name="Penny Bystander"),
        extra={
            "appointment": appointment,
            "mentions": {"doctor": mention_ids[doctor.pk], "group_member": mention_ids[member.pk]},
            "scheduled": scheduled,
            "avatar_upload": avatar_upload,
            "on_demand": on_demand_request,
            "note": note,
            "prescription": prescription,
            "rated_consultation": earlier,
            "review": review,
            **documents,
            "report": report,
        },
    )


SECRETS = (
    SECRET_BODY,
    SECRET_GROUP_BEFORE,
    SECRET_GROUP_AFTER,
    SECRET_FILE,
    SECRET_REASON,
    "Alice Matrix",
    "matrix-secret",
)


def assert_error_envelope(body: Any, code: str, *, strict: bool = True) -> None:
    """An error is the envelope and nothing else. ``strict`` (a denial: 401/403/404): no key but
    code, message and fields, so no field of the object it names; never any participant's text."""
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error.get("code") == code, error
    assert isinstance(error.get("message"), str), error
    assert error["message"], error
    if strict:
        assert set(error) <= {"code", "message", "fields"}, error
    text = json.dumps(body)
    for secret in SECRETS:
        assert secret not in text, (secret, body)
