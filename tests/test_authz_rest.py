"""Authorization matrix, REST: every operation of the OpenAPI schema x every actor.

One world (tests/authz.py) is built once per module inside a transaction; each cell runs in a
savepoint rolled back after it, so a cell that deletes or changes something leaves the world
as it was. Every cell is its own test: ``test_rest_cell[<METHOD> <path>[#variant] | <actor>]``.

A new endpoint fails ``test_table_covers_every_operation`` until its row is added here.
Denials (401/403/404) must be the bare error envelope, and a 404 for an object that exists but
is not the caller's must be byte-for-byte the 404 for an id that does not exist.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from documents.selectors import SIGNING_SALT as DOCUMENT_SIGNING_SALT
from messaging.selectors import ATTACHMENT_SIGNING_SALT
from tests.authz import (
    ACTORS,
    MISSING_ID,
    REGISTERED,
    World,
    assert_error_envelope,
    png,
    token_for,
)


# --- Expected outcomes -------------------------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    status: int
    code: str | None = None


OK, CREATED, ACCEPTED, NO_CONTENT = Expect(200), Expect(201), Expect(202), Expect(204)


def not_found(code: str) -> Expect:
    return Expect(404, code)


def forbidden(code: str) -> Expect:
    return Expect(403, code)


def conflict(code: str) -> Expect:
    return Expect(409, code)


def invalid(code: str) -> Expect:
    return Expect(400, code)


SIGNED_OUT_REFUSALS = {
    "anonymous": Expect(401, "not_authenticated"),
    "expired_token": Expect(401, "token_expired"),
    "deleted_user": forbidden("not_registered"),  # the erased account's token names nobody now
}


def row(registered: Expect, **named: Expect) -> dict[str, Expect]:
    """One row: ``registered`` for every registered actor not named, the standard refusals for
    the signed-out ones unless named."""
    out = {**SIGNED_OUT_REFUSALS, **dict.fromkeys(REGISTERED, registered), **named}
    assert set(out) == set(ACTORS), set(out) ^ set(ACTORS)
    return out


def everyone(outcome: Expect) -> dict[str, Expect]:
    """Endpoints that do not authenticate the caller at all."""
    return dict.fromkeys(ACTORS, outcome)


# --- Requests ------------------------------------------------------------------------------------
Params = Callable[[World], dict[str, int] | dict[str, str]]
BodyFn = Callable[[World, str], Any]
QueryFn = Callable[[World, str, dict[str, Any]], dict[str, Any]]
Visible = Callable[[World], tuple[set[int], dict[str, set[int]]]]


def _no_params(w: World) -> dict[str, int]:
    return {}


@dataclass(frozen=True)
class Op:
    expect: dict[str, Expect]
    params: Params = _no_params  # path parameters; the first is the object the row is about
    body: BodyFn | None = None
    query: QueryFn | None = None
    multipart: bool = False
    # (the protected ids a list may show, actor -> the ones it must show); others must not appear
    visible: Visible | None = None


A_AND_DOCTOR = {"patient_a": OK, "doctor": OK}
GROUP_MEMBERS = {"patient_a": OK, "doctor": OK, "group_member": OK}


def conv(w: World) -> dict[str, int]:
    return {"conversation_id": w.conversation.pk}


def group_conv(w: World) -> dict[str, int]:
    return {"conversation_id": w.group.pk}


def group(w: World) -> dict[str, int]:
    return {"group_id": w.group.pk}


def consultation(w: World) -> dict[str, int]:
    return {"consultation_id": w.consultation.pk}


def note(w: World) -> dict[str, int]:
    return {"note_id": w.extra["note"].pk}


def prescription(w: World) -> dict[str, int]:
    return {"prescription_id": w.extra["prescription"].pk}


def rated_consultation(w: World) -> dict[str, int]:
    return {"consultation_id": w.extra["rated_consultation"].pk}


def attachment(w: World) -> dict[str, int]:
    return {"attachment_id": w.attachment.pk}


def content_link(w: World, actor: str, params: dict[str, int]) -> dict[str, Any]:
    """The signed download link ``GET attachments/{id}`` would give ``actor`` (none when signed out)."""
    if actor in ("anonymous", "expired_token"):
        return {}
    payload = {"a": params["attachment_id"], "u": w.user(actor).pk, "v": "file"}
    return {"token": signing.dumps(payload, salt=ATTACHMENT_SIGNING_SALT)}


def document(w: World) -> dict[str, int]:
    return {"document_id": w.extra["document"].pk}


def document_link(w: World, actor: str, params: dict[str, int]) -> dict[str, Any]:
    """The signed download link ``GET documents/{id}`` would give ``actor`` (none when signed out)."""
    if actor in ("anonymous", "expired_token"):
        return {}
    payload = {"d": params["document_id"], "u": w.user(actor).pk, "h": w.extra["document"].sha256[:16]}
    return {"token": signing.dumps(payload, salt=DOCUMENT_SIGNING_SALT)}


def summary_request(include_chat: bool) -> BodyFn:
    return lambda w, a: {
        "kind": "consultation_summary",
        "consultation_id": w.consultation.pk,
        "include_chat": include_chat,
    }


def free_slot(w: World) -> str:
    """The other doctor's first free slot two days ahead (B's appointment holds an earlier one)."""
    from appointments import selectors as appointment_selectors

    schedule = appointment_selectors.bookable_schedule(doctor_id=w.user("other_doctor").pk)
    later = timezone.now() + dt.timedelta(days=2)
    slots = appointment_selectors.free_slots(schedule=schedule, start=later, end=later + dt.timedelta(days=1))
    return slots[0][0].isoformat()


def consultation_row(**named: Expect) -> dict[str, Expect]:
    return row(not_found("consultation_not_found"), **named)


def protected(ids: set[int], seen_by: dict[str, set[int]]) -> tuple[set[int], dict[str, set[int]]]:
    return ids, seen_by


TABLE: dict[str, Op] = {
    # --- accounts ---
    "POST /api/v1/auth/register": Op(
        row(
            OK,  # idempotent: the account already registered for this token
            doctor=conflict("role_mismatch"),
            other_doctor=conflict("role_mismatch"),
            staff=conflict("role_mismatch"),
            deleted_user=CREATED,  # the phone number is free again: a new, empty account
        ),
        body=lambda w, a: {"role": "patient", "display_name": "Matrix Registrant"},
    ),
    "GET /api/v1/me": Op(row(OK)),
    "PATCH /api/v1/me": Op(row(OK), body=lambda w, a: {"display_name": "Renamed Matrix"}),
    "DELETE /api/v1/me": Op(row(NO_CONTENT)),
    "GET /api/v1/me/export": Op(row(OK)),
    "GET /api/v1/specialties": Op(everyone(OK)),  # public reference data, no credentials read
    "GET /api/v1/doctors": Op(row(OK)),
    "GET /api/v1/doctors/{doctor_id}": Op(row(OK), params=lambda w: {"doctor_id": w.doctor.pk}),
    "POST /api/v1/devices": Op(
        row(CREATED), body=lambda w, a: {"platform": "android", "installation_id": f"fid-matrix-{a}"}
    ),
    "DELETE /api/v1/devices/{device_id}": Op(
        row(not_found("device_not_found"), patient_a=NO_CONTENT),
        params=lambda w: {"device_id": w.device_a.pk},
    ),
    "PUT /api/v1/keys": Op(
        row(not_found("device_not_found"), patient_a=OK),
        body=lambda w, a: w.extra["keys_upload"],
    ),
    "GET /api/v1/keys/count": Op(
        row(not_found("device_not_found"), patient_a=OK),
        query=lambda w, a, p: {"device_id": w.device_a.pk},
    ),
    # Who shares an active conversation with A (or may open one) may fetch A's keys.
    "GET /api/v1/keys/{user_id}": Op(
        row(forbidden("keys_not_allowed"), patient_a=OK, doctor=OK, group_member=OK),
        params=lambda w: {"user_id": w.patient_a.pk},
    ),
    # --- messaging ---
    "GET /api/v1/conversations": Op(
        row(OK),
        visible=lambda w: protected(
            {w.conversation.pk, w.group.pk}, {a: w.conversations_of(a) for a in REGISTERED}
        ),
    ),
    "POST /api/v1/conversations#other_doctor": Op(
        row(
            CREATED,  # patients open a conversation with any verified doctor; doctors with doctors
            other_doctor=invalid("cannot_contact_self"),
            staff=forbidden("contact_not_allowed"),
        ),
        body=lambda w, a: {"peer_id": w.user("other_doctor").pk},
    ),
    "POST /api/v1/conversations#patient_a": Op(
        row(
            forbidden("contact_not_allowed"),  # only A's own doctor may talk to A
            patient_a=invalid("cannot_contact_self"),
            doctor=OK,  # theirs already exists
        ),
        body=lambda w, a: {"peer_id": w.patient_a.pk},
    ),
    "GET /api/v1/conversations/{conversation_id}": Op(
        row(not_found("conversation_not_found"), **A_AND_DOCTOR), params=conv
    ),
    "GET /api/v1/conversations/{conversation_id}#group": Op(
        row(not_found("conversation_not_found"), **GROUP_MEMBERS), params=group_conv
    ),
    "GET /api/v1/conversations/{conversation_id}/messages": Op(
        row(not_found("conversation_not_found"), **A_AND_DOCTOR),
        params=conv,
        visible=lambda w: protected(
            {w.message_a.pk, w.message_doctor.pk},
            {key: {w.message_a.pk, w.message_doctor.pk} for key in ("patient_a", "doctor")},
        ),
    ),
    "GET /api/v1/conversations/{conversation_id}/messages#group": Op(
        row(
            not_found("conversation_not_found"),
            **GROUP_MEMBERS,
            removed_member=OK,  # what they saw while a member, and nothing after
        ),
        params=group_conv,
        visible=lambda w: protected(
            {w.group_before.pk, w.group_after.pk},
            {
                **{
                    key: {w.group_before.pk, w.group_after.pk}
                    for key in ("patient_a", "doctor", "group_member")
                },
                "removed_member": {w.group_before.pk},
            },
        ),
    ),
    # Search finds only what the caller may read (the removed member: what they saw as a member).
    "GET /api/v1/search/messages": Op(
        row(OK),
        query=lambda w, a, p: {"q": "matrix secret"},
        visible=lambda w: protected(
            {w.message_a.pk, w.message_doctor.pk, w.group_before.pk, w.group_after.pk},
            {
                "patient_a": {w.message_a.pk, w.message_doctor.pk, w.group_before.pk, w.group_after.pk},
                "doctor": {w.message_a.pk, w.message_doctor.pk, w.group_before.pk, w.group_after.pk},
                "group_member": {w.group_before.pk, w.group_after.pk},
                "removed_member": {w.group_before.pk},
            },
        ),
    ),
    "GET /api/v1/search/messages#conversation": Op(
        row(OK),  # another's conversation as a filter: no hits, and no 404 that would confirm it
        query=lambda w, a, p: {"q": "matrix secret", "conversation_id": w.conversation.pk},
        visible=lambda w: protected(
            {w.message_a.pk, w.message_doctor.pk},
            {key: {w.message_a.pk, w.message_doctor.pk} for key in ("patient_a", "doctor")},
        ),
    ),
    "POST /api/v1/attachments": Op(row(CREATED), multipart=True),
    "GET /api/v1/attachments/{attachment_id}": Op(
        row(not_found("attachment_not_found"), **A_AND_DOCTOR), params=attachment
    ),
    "GET /api/v1/attachments/{attachment_id}#unsent": Op(
        row(not_found("attachment_not_found"), patient_a=OK),  # the uploader alone, until it is sent
        params=lambda w: {"attachment_id": w.attachment_unsent.pk},
    ),
    "GET /api/v1/attachments/{attachment_id}/content": Op(
        {
            **row(not_found("attachment_not_found"), **A_AND_DOCTOR),
            # No authentication: the signed link is the credential, and the holder's access is
            # checked again. Without one:
            "anonymous": forbidden("invalid_link"),
            "expired_token": forbidden("invalid_link"),
            "deleted_user": not_found("attachment_not_found"),
        },
        params=attachment,
        query=content_link,
    ),
    "POST /api/v1/blocks": Op(row(NO_CONTENT), body=lambda w, a: {"user_id": w.bystander.pk}),
    "DELETE /api/v1/blocks/{user_id}": Op(row(NO_CONTENT), params=lambda w: {"user_id": w.bystander.pk}),
    # --- reactions, pins, mentions (issue 24): members who may read the message, nobody else ---
    "POST /api/v1/messages/{message_id}/reactions": Op(
        row(not_found("message_not_found"), **A_AND_DOCTOR),
        params=lambda w: {"message_id": w.message_doctor.pk},
        body=lambda w, a: {"emoji": "👍"},
    ),
    "DELETE /api/v1/messages/{message_id}/reactions/{emoji}": Op(
        row(not_found("message_not_found"), **A_AND_DOCTOR),
        params=lambda w: {"message_id": str(w.message_doctor.pk), "emoji": "%F0%9F%91%8D"},
    ),
    "PUT /api/v1/messages/{message_id}/pin": Op(
        row(not_found("message_not_found"), **A_AND_DOCTOR),
        params=lambda w: {"message_id": w.message_doctor.pk},
    ),
    # A group: only its owner (the doctor) pins; members get past the read check, not the role's.
    "PUT /api/v1/messages/{message_id}/pin#group": Op(
        row(
            not_found("message_not_found"),
            doctor=OK,
            patient_a=forbidden("not_group_admin"),
            group_member=forbidden("not_group_admin"),
        ),
        params=lambda w: {"message_id": w.group_after.pk},
    ),
    "DELETE /api/v1/messages/{message_id}/pin": Op(
        row(not_found("message_not_found"), **A_AND_DOCTOR),
        params=lambda w: {"message_id": w.message_doctor.pk},
    ),
    "GET /api/v1/mentions": Op(
        row(OK),
        visible=lambda w: protected(
            set(w.extra["mentions"].values()), {a: {m} for a, m in w.extra["mentions"].items()}
        ),
    ),
    # --- edit history, reports and moderation (issue 23) ---
    "GET /api/v1/messages/{message_id}/versions": Op(
        row(not_found("message_not_found"), **A_AND_DOCTOR),
        params=lambda w: {"message_id": w.message_doctor.pk},
    ),
    # A reports the doctor's message; the doctor cannot report their own; nobody else may read it.
    "POST /api/v1/reports": Op(
        row(not_found("message_not_found"), patient_a=CREATED, doctor=invalid("cannot_report_self")),
        body=lambda w, a: {"target": "message", "message_id": w.message_doctor.pk, "reason": "abuse"},
    ),
    "GET /api/v1/reports": Op(
        row(OK),
        visible=lambda w: protected({w.extra["report"].pk}, {"doctor": {w.extra["report"].pk}}),
    ),
    "GET /api/v1/reports/{report_id}": Op(
        row(not_found("report_not_found"), doctor=OK),
        params=lambda w: {"report_id": w.extra["report"].pk},
    ),
    "GET /api/v1/moderation/notices": Op(row(OK)),
    # --- groups ---
    "POST /api/v1/groups": Op(row(CREATED), body=lambda w, a: {"name": "Matrix new group"}),
    "GET /api/v1/groups/{group_id}": Op(row(not_found("group_not_found"), **GROUP_MEMBERS), params=group),
    # The avatar: the owner (the doctor) sets and removes it; other members are not admins.
    "PUT /api/v1/groups/{group_id}/avatar": Op(
        row(
            not_found("group_not_found"),
            doctor=OK,
            patient_a=forbidden("not_group_admin"),
            group_member=forbidden("not_group_admin"),
        ),
        params=group,
        body=lambda w, a: {"attachment_id": w.extra["avatar_upload"].pk},
    ),
    "DELETE /api/v1/groups/{group_id}/avatar": Op(
        row(
            not_found("group_not_found"),
            doctor=NO_CONTENT,
            patient_a=forbidden("not_group_admin"),
            group_member=forbidden("not_group_admin"),
        ),
        params=group,
    ),
    "PATCH /api/v1/groups/{group_id}": Op(
        row(
            not_found("group_not_found"),
            doctor=OK,
            patient_a=forbidden("not_group_admin"),
            group_member=forbidden("not_group_admin"),
        ),
        params=group,
        body=lambda w, a: {"name": "Renamed circle"},
    ),
    "POST /api/v1/groups/{group_id}/members": Op(
        row(
            not_found("group_not_found"),
            doctor=CREATED,
            patient_a=forbidden("not_group_admin"),
            group_member=forbidden("not_group_admin"),
        ),
        params=group,
        body=lambda w, a: {"user_id": w.user("other_doctor").pk},
    ),
    "PATCH /api/v1/groups/{group_id}/members/{user_id}": Op(
        row(
            not_found("group_not_found"),
            doctor=OK,
            patient_a=forbidden("not_group_owner"),
            group_member=forbidden("not_group_owner"),
        ),
        params=lambda w: {"group_id": w.group.pk, "user_id": w.user("group_member").pk},
        body=lambda w, a: {"role": "admin"},
    ),
    "DELETE /api/v1/groups/{group_id}/members/{user_id}": Op(
        row(
            not_found("group_not_found"),
            doctor=NO_CONTENT,
            patient_a=forbidden("not_group_admin"),
            group_member=invalid("use_leave"),
        ),
        params=lambda w: {"group_id": w.group.pk, "user_id": w.user("group_member").pk},
    ),
    "POST /api/v1/groups/{group_id}/leave": Op(
        row(
            not_found("group_not_found"),
            patient_a=NO_CONTENT,
            doctor=NO_CONTENT,
            group_member=NO_CONTENT,
        ),
        params=group,
    ),
    # --- notifications ---
    "GET /api/v1/conversations/{conversation_id}/mute": Op(
        row(not_found("conversation_not_found"), **A_AND_DOCTOR), params=conv
    ),
    "POST /api/v1/conversations/{conversation_id}/mute": Op(
        row(not_found("conversation_not_found"), **A_AND_DOCTOR), params=conv, body=lambda w, a: {}
    ),
    "DELETE /api/v1/conversations/{conversation_id}/mute": Op(
        row(not_found("conversation_not_found"), **A_AND_DOCTOR), params=conv
    ),
    "GET /api/v1/notifications/preferences": Op(row(OK)),
    "PUT /api/v1/notifications/preferences": Op(row(OK), body=lambda w, a: {"previews": True}),
    # --- scheduled messages: doctors schedule; each sees and touches only their own ---
    "GET /api/v1/scheduled-messages": Op(
        row(OK),
        visible=lambda w: protected({w.extra["scheduled"].pk}, {"doctor": {w.extra["scheduled"].pk}}),
    ),
    "POST /api/v1/scheduled-messages": Op(
        row(
            forbidden("scheduling_not_allowed"),  # patients and staff (no doctor role)
            doctor=CREATED,
            other_doctor=not_found("conversation_not_found"),
        ),
        body=lambda w, a: {
            "conversation_id": w.conversation.pk,
            "body": "matrix-secret: see you tomorrow",
            "send_at": (timezone.now() + dt.timedelta(hours=2)).isoformat(),
        },
    ),
    "GET /api/v1/scheduled-messages/{scheduled_id}": Op(
        row(not_found("scheduled_message_not_found"), doctor=OK),
        params=lambda w: {"scheduled_id": w.extra["scheduled"].pk},
    ),
    "PATCH /api/v1/scheduled-messages/{scheduled_id}": Op(
        row(not_found("scheduled_message_not_found"), doctor=OK),
        params=lambda w: {"scheduled_id": w.extra["scheduled"].pk},
        body=lambda w, a: {"body": "matrix-secret: changed"},
    ),
    "DELETE /api/v1/scheduled-messages/{scheduled_id}": Op(
        row(not_found("scheduled_message_not_found"), doctor=OK),
        params=lambda w: {"scheduled_id": w.extra["scheduled"].pk},
    ),
    # --- calls ---
    "GET /api/v1/calls": Op(
        row(OK),
        visible=lambda w: protected({w.call.pk}, {key: {w.call.pk} for key in ("patient_a", "doctor")}),
    ),
    "GET /api/v1/calls/{call_id}": Op(
        row(not_found("call_not_found"), **A_AND_DOCTOR), params=lambda w: {"call_id": w.call.pk}
    ),
    "GET /api/v1/calls/turn-credentials": Op(row(OK)),
    # --- payments ---
    "GET /api/v1/consultations": Op(
        row(OK),
        visible=lambda w: protected(
            {w.consultation.pk}, {key: {w.consultation.pk} for key in ("patient_a", "doctor")}
        ),
    ),
    "POST /api/v1/consultations": Op(
        row(
            CREATED,
            doctor=forbidden("patients_only"),
            other_doctor=forbidden("patients_only"),
            staff=forbidden("patients_only"),
        ),
        body=lambda w, a: {"doctor_id": w.user("other_doctor").pk, "kind": "chat"},
    ),
    "GET /api/v1/consultations/{consultation_id}": Op(consultation_row(**A_AND_DOCTOR), params=consultation),
    "POST /api/v1/consultations/{consultation_id}/accept": Op(
        consultation_row(doctor=OK, patient_a=forbidden("not_allowed")),
        params=consultation,
        body=lambda w, a: {},
    ),
    "POST /api/v1/consultations/{consultation_id}/decline": Op(
        consultation_row(doctor=OK, patient_a=forbidden("not_allowed")),
        params=consultation,
        body=lambda w, a: {},
    ),
    "POST /api/v1/consultations/{consultation_id}/cancel": Op(
        consultation_row(doctor=OK, patient_a=OK), params=consultation, body=lambda w, a: {}
    ),
    "POST /api/v1/consultations/{consultation_id}/start": Op(
        # the doctor passes the checks of who may act; a paid request must be accepted first
        consultation_row(doctor=conflict("invalid_transition"), patient_a=forbidden("not_allowed")),
        params=consultation,
        body=lambda w, a: {},
    ),
    "POST /api/v1/consultations/{consultation_id}/complete": Op(
        consultation_row(doctor=conflict("invalid_transition"), patient_a=forbidden("not_allowed")),
        params=consultation,
        body=lambda w, a: {},
    ),
    # --- ratings (A rated an earlier, completed consultation with the doctor) ---
    "GET /api/v1/consultations/{consultation_id}/rating": Op(
        consultation_row(**A_AND_DOCTOR), params=rated_consultation
    ),
    "POST /api/v1/consultations/{consultation_id}/rating": Op(
        consultation_row(patient_a=conflict("already_rated"), doctor=forbidden("not_the_patient")),
        params=rated_consultation,
        body=lambda w, a: {"stars": 5},
    ),
    "POST /api/v1/consultations/{consultation_id}/rating#not_completed": Op(
        consultation_row(
            patient_a=conflict("consultation_not_completed"), doctor=forbidden("not_the_patient")
        ),
        params=consultation,
        body=lambda w, a: {"stars": 5},
    ),
    "PATCH /api/v1/consultations/{consultation_id}/rating": Op(
        consultation_row(patient_a=OK, doctor=forbidden("not_the_patient")),
        params=rated_consultation,
        body=lambda w, a: {"stars": 3},
    ),
    "PUT /api/v1/consultations/{consultation_id}/rating/reply": Op(
        consultation_row(doctor=OK, patient_a=forbidden("not_the_doctor")),
        params=rated_consultation,
        body=lambda w, a: {"text": "Thank you."},
    ),
    "GET /api/v1/doctors/{doctor_id}/ratings": Op(
        row(OK),
        params=lambda w: {"doctor_id": w.doctor.pk},
        visible=lambda w: protected(
            {w.extra["review"].pk}, {key: {w.extra["review"].pk} for key in REGISTERED}
        ),
    ),
    "GET /api/v1/availability": Op(
        row(forbidden("doctors_only"), doctor=OK, other_doctor=OK),
    ),
    "PUT /api/v1/availability": Op(
        row(forbidden("doctors_only"), doctor=OK, other_doctor=OK), body=lambda w, a: {"online": True}
    ),
    "GET /api/v1/doctors/{doctor_id}/availability": Op(row(OK), params=lambda w: {"doctor_id": w.doctor.pk}),
    "GET /api/v1/payouts": Op(row(forbidden("doctors_only"), doctor=OK, other_doctor=OK)),
    "POST /api/v1/payouts/onboarding": Op(row(forbidden("doctors_only"), doctor=OK, other_doctor=OK)),
    # --- appointments ---
    "GET /api/v1/schedule": Op(row(forbidden("doctors_only"), doctor=OK, other_doctor=OK)),
    "PUT /api/v1/schedule": Op(
        row(forbidden("doctors_only"), doctor=OK, other_doctor=OK), body=lambda w, a: {"slot_minutes": 30}
    ),
    "GET /api/v1/doctors/{doctor_id}/slots": Op(
        row(OK),
        params=lambda w: {"doctor_id": w.user("other_doctor").pk},
        query=lambda w, a, p: {
            "start": dt.date.today().isoformat(),
            "end": dt.date.today().isoformat(),
            "tz": "UTC",
        },
    ),
    "GET /api/v1/appointments": Op(
        row(OK),
        visible=lambda w: protected(
            {w.extra["appointment"].pk},
            {"patient_b": {w.extra["appointment"].pk}, "other_doctor": {w.extra["appointment"].pk}},
        ),
    ),
    "POST /api/v1/appointments": Op(
        row(
            CREATED,
            doctor=forbidden("patients_only"),
            other_doctor=forbidden("patients_only"),
            staff=forbidden("patients_only"),
        ),
        body=lambda w, a: {"doctor_id": w.user("other_doctor").pk, "kind": "chat", "starts_at": free_slot(w)},
    ),
    "GET /api/v1/appointments/{appointment_id}": Op(
        row(not_found("appointment_not_found"), patient_b=OK, other_doctor=OK),
        params=lambda w: {"appointment_id": w.extra["appointment"].pk},
    ),
    "POST /api/v1/appointments/{appointment_id}/cancel": Op(
        row(not_found("appointment_not_found"), patient_b=OK, other_doctor=OK),
        params=lambda w: {"appointment_id": w.extra["appointment"].pk},
        body=lambda w, a: {},
    ),
    "POST /api/v1/appointments/{appointment_id}/reschedule": Op(
        row(not_found("appointment_not_found"), patient_b=OK, other_doctor=OK),
        params=lambda w: {"appointment_id": w.extra["appointment"].pk},
        body=lambda w, a: {"starts_at": free_slot(w)},
    ),
    # The waiting room: B's appointment is two days ahead (too early to check in, nobody waiting).
    "POST /api/v1/appointments/{appointment_id}/check-in": Op(
        row(
            not_found("appointment_not_found"),
            patient_b=conflict("check_in_too_early"),
            other_doctor=forbidden("not_the_patient"),
        ),
        params=lambda w: {"appointment_id": w.extra["appointment"].pk},
        body=lambda w, a: {},
    ),
    "GET /api/v1/appointments/{appointment_id}/position": Op(
        row(
            not_found("appointment_not_found"),
            patient_b=conflict("not_waiting"),
            other_doctor=forbidden("not_the_patient"),
        ),
        params=lambda w: {"appointment_id": w.extra["appointment"].pk},
    ),
    "POST /api/v1/appointments/{appointment_id}/admit": Op(
        row(
            not_found("appointment_not_found"),
            patient_b=forbidden("not_the_doctor"),
            other_doctor=conflict("patient_not_waiting"),
        ),
        params=lambda w: {"appointment_id": w.extra["appointment"].pk},
        body=lambda w, a: {},
    ),
    "GET /api/v1/waiting-room": Op(row(forbidden("doctors_only"), doctor=OK, other_doctor=OK)),
    "GET /api/v1/appointments/{appointment_id}/ics": Op(
        row(not_found("appointment_not_found"), patient_b=OK, other_doctor=OK),
        params=lambda w: {"appointment_id": w.extra["appointment"].pk},
    ),
    "POST /api/v1/calendar/feed": Op(
        row(forbidden("doctors_only"), doctor=CREATED, other_doctor=CREATED), body=lambda w, a: {}
    ),
    "DELETE /api/v1/calendar/feed": Op(
        row(forbidden("doctors_only"), doctor=NO_CONTENT, other_doctor=NO_CONTENT)
    ),
    "GET /api/v1/calendar/feeds/{token}/calendar.ics": Op(
        everyone(not_found("feed_not_found")),  # the token is the only credential; a wrong one is 404
        params=lambda w: {"token": "x" * 43},
    ),
    "GET /api/v1/on-demand": Op(
        row(OK),
        visible=lambda w: protected(
            {w.extra["on_demand"].pk},
            {"patient_b": {w.extra["on_demand"].pk}, "other_doctor": {w.extra["on_demand"].pk}},
        ),
    ),
    "POST /api/v1/on-demand": Op(
        row(
            CREATED,
            patient_b=conflict("request_open"),  # B's request is open
            doctor=forbidden("patients_only"),
            other_doctor=forbidden("patients_only"),
            staff=forbidden("patients_only"),
        ),
        body=lambda w, a: {"specialty": "matrix-cardiology", "kind": "chat"},
    ),
    "GET /api/v1/on-demand/{request_id}": Op(
        row(not_found("request_not_found"), patient_b=OK, other_doctor=OK),
        params=lambda w: {"request_id": w.extra["on_demand"].pk},
    ),
    "POST /api/v1/on-demand/{request_id}/accept": Op(
        row(
            forbidden("doctors_only"),
            doctor=not_found("request_not_found"),  # another specialty: it does not exist for them
            other_doctor=OK,
        ),
        params=lambda w: {"request_id": w.extra["on_demand"].pk},
        body=lambda w, a: {},
    ),
    "POST /api/v1/on-demand/{request_id}/cancel": Op(
        row(not_found("request_not_found"), patient_b=OK),
        params=lambda w: {"request_id": w.extra["on_demand"].pk},
        body=lambda w, a: {},
    ),
    # --- documents (PDF): the patient and the doctor of the record; the chat copy, the patient ---
    "GET /api/v1/documents": Op(
        row(OK),
        visible=lambda w: protected(
            {w.extra["document"].pk, w.extra["chat_document"].pk},
            {
                "patient_a": {w.extra["document"].pk, w.extra["chat_document"].pk},
                "doctor": {w.extra["document"].pk},
            },
        ),
    ),
    "POST /api/v1/documents": Op(
        consultation_row(patient_a=ACCEPTED, doctor=ACCEPTED), body=summary_request(False)
    ),
    "POST /api/v1/documents#chat": Op(
        consultation_row(patient_a=ACCEPTED, doctor=forbidden("chat_patient_only")),
        body=summary_request(True),
    ),
    # A's consultation is authorised, not captured: no payment to give a receipt for yet.
    "POST /api/v1/documents#receipt": Op(
        consultation_row(patient_a=conflict("not_paid"), doctor=conflict("not_paid")),
        body=lambda w, a: {"kind": "receipt", "consultation_id": w.consultation.pk},
    ),
    # The prescription: its patient and its prescriber; anyone else cannot tell it exists.
    "POST /api/v1/documents#prescription": Op(
        row(not_found("prescription_not_found"), patient_a=ACCEPTED, doctor=ACCEPTED),
        body=lambda w, a: {"kind": "prescription", "prescription_id": w.extra["prescription"].pk},
    ),
    "GET /api/v1/documents/{document_id}": Op(
        row(not_found("document_not_found"), **A_AND_DOCTOR), params=document
    ),
    "GET /api/v1/documents/{document_id}#chat": Op(
        row(not_found("document_not_found"), patient_a=OK),
        params=lambda w: {"document_id": w.extra["chat_document"].pk},
    ),
    "GET /api/v1/documents/{document_id}/content": Op(
        {
            **row(not_found("document_not_found"), **A_AND_DOCTOR),
            # No authentication: the signed link is the credential, and the holder's access is
            # checked again. Without one:
            "anonymous": forbidden("invalid_link"),
            "expired_token": forbidden("invalid_link"),
            "deleted_user": not_found("document_not_found"),
        },
        params=document,
        query=document_link,
    ),
    # --- the clinical record (records/): A's consultation is paid, not accepted: the doctor may
    # neither write its note nor prescribe; the note is signed and shared, the prescription issued ---
    "GET /api/v1/consultations/{consultation_id}/notes": Op(
        consultation_row(patient_a=OK, doctor=OK), params=consultation
    ),
    "POST /api/v1/consultations/{consultation_id}/notes": Op(
        consultation_row(patient_a=forbidden("not_the_doctor"), doctor=conflict("consultation_not_eligible")),
        params=consultation,
        body=lambda w, a: {"plan": "rest"},
    ),
    "GET /api/v1/notes/{note_id}": Op(row(not_found("note_not_found"), patient_a=OK, doctor=OK), params=note),
    "PATCH /api/v1/notes/{note_id}": Op(
        row(
            not_found("note_not_found"), patient_a=forbidden("not_the_doctor"), doctor=conflict("note_signed")
        ),
        params=note,
        body=lambda w, a: {"plan": "changed"},
    ),
    "DELETE /api/v1/notes/{note_id}": Op(
        row(
            not_found("note_not_found"), patient_a=forbidden("not_the_doctor"), doctor=conflict("note_signed")
        ),
        params=note,
    ),
    "POST /api/v1/notes/{note_id}/sign": Op(
        row(
            not_found("note_not_found"), patient_a=forbidden("not_the_doctor"), doctor=conflict("note_signed")
        ),
        params=note,
        body=lambda w, a: {},
    ),
    "POST /api/v1/notes/{note_id}/share": Op(
        row(not_found("note_not_found"), patient_a=forbidden("not_the_doctor"), doctor=OK), params=note
    ),
    "POST /api/v1/notes/{note_id}/amendments": Op(
        row(not_found("note_not_found"), patient_a=forbidden("not_the_doctor"), doctor=CREATED),
        params=note,
        body=lambda w, a: {"reason": "correction", "text": "aura lasted 20 minutes"},
    ),
    "GET /api/v1/consultations/{consultation_id}/prescriptions": Op(
        consultation_row(patient_a=OK, doctor=OK), params=consultation
    ),
    "POST /api/v1/consultations/{consultation_id}/prescriptions": Op(
        consultation_row(patient_a=forbidden("not_the_doctor"), doctor=conflict("consultation_not_eligible")),
        params=consultation,
        body=lambda w, a: {
            "medication_name": "Ibuprofen",
            "dose": "400 mg",
            "frequency": "twice",
            "quantity": 10,
        },
    ),
    "GET /api/v1/prescriptions": Op(
        row(OK),
        visible=lambda w: protected(
            {w.extra["prescription"].pk},
            {"patient_a": {w.extra["prescription"].pk}, "doctor": {w.extra["prescription"].pk}},
        ),
    ),
    "GET /api/v1/prescriptions/{prescription_id}": Op(
        row(not_found("prescription_not_found"), patient_a=OK, doctor=OK), params=prescription
    ),
    "POST /api/v1/prescriptions/{prescription_id}/cancel": Op(
        row(not_found("prescription_not_found"), patient_a=forbidden("not_the_doctor"), doctor=OK),
        params=prescription,
        body=lambda w, a: {"reason": "wrong strength"},
    ),
    "GET /api/v1/prescriptions/verify/{code}": Op(
        everyone(OK),  # public: the code is the only credential (a wrong one is 404)
        params=lambda w: {"code": w.extra["prescription"].verification_code},
    ),
    "POST /api/v1/payments/stripe/webhook": Op(
        everyone(invalid("invalid_signature")),  # Stripe's signature is the only credential
        body=lambda w, a: {"id": "evt_matrix", "type": "payment_intent.succeeded"},
    ),
}


def _request(
    client: APIClient, method: str, path: str, op: Op, w: World, actor: str, params: dict[str, Any]
) -> Any:
    url = path.format(**params)
    if op.query is not None:
        url += "?" + urlencode(op.query(w, actor, params))
    if op.multipart:
        upload = SimpleUploadedFile("matrix.png", png(), content_type="image/png")
        return client.generic(method, url, **_multipart(client, {"file": upload}))
    if op.body is not None:
        return client.generic(method, url, json.dumps(op.body(w, actor)), content_type="application/json")
    return client.generic(method, url)


def _multipart(client: APIClient, data: dict[str, Any]) -> dict[str, Any]:
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    return {"data": encode_multipart(BOUNDARY, data), "content_type": MULTIPART_CONTENT}


def _body(response: Any) -> Any:
    if getattr(response, "streaming", False):
        # A file: read to the end (the test client closes it then, keeping the connection open).
        assert b"".join(response.streaming_content)
        return None
    if response.get("Content-Type", "").startswith("application/json") and response.content:
        return response.json()
    return None


def _split(key: str) -> tuple[str, str]:
    method, path = key.split("#", 1)[0].split(" ", 1)
    return method, path


CELLS = [(key, actor) for key in TABLE for actor in ACTORS]


@pytest.mark.parametrize(("operation", "actor"), CELLS, ids=[f"{k} | {a}" for k, a in CELLS])
def test_rest_cell(
    operation: str,
    actor: str,
    matrix_world: World,
    db: Any,
    make_token: Callable[..., str],
    firebase_admin_api: Any,
    unthrottled: None,
    settings: Any,
) -> None:
    world = matrix_world
    settings.STRIPE_WEBHOOK_SECRET = "whsec_matrix"
    op = TABLE[operation]
    expected = op.expect[actor]
    method, path = _split(operation)
    client = APIClient()
    token = token_for(make_token, world, actor)
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    params = op.params(world)

    response = _request(client, method, path, op, world, actor, params)

    body = _body(response)
    assert response.status_code == expected.status, (operation, actor, response.status_code, body)
    if expected.status >= 400:
        assert_error_envelope(body, str(expected.code), strict=expected.status in (401, 403, 404))
    if expected.status == 404 and params:
        # "Exists but not yours" must read exactly like "does not exist".
        target = next(iter(params))
        missing = _request(client, method, path, op, world, actor, {**params, target: MISSING_ID})
        assert (missing.status_code, missing.json()) == (response.status_code, body), (operation, actor)
    if op.visible is not None and expected.status == 200:
        ids, seen_by = op.visible(world)
        assert body is not None
        items = body["results"] if isinstance(body, dict) else body  # a page, or a short list
        # a search hit is its message: {"message": {"id", ...}, "rank", "snippet"}; a mention has
        # an id of its own beside its message
        shown = {item["message"]["id"] if "rank" in item else item["id"] for item in items}
        assert shown & ids == seen_by.get(actor, set()), (operation, actor, shown & ids)


def test_table_covers_every_operation() -> None:
    """Every REST operation of the OpenAPI schema has a row, and every row an operation."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    in_schema = {
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }
    in_table = {" ".join(_split(key)) for key in TABLE}
    assert not in_schema - in_table, f"operations without a row in the matrix: {sorted(in_schema - in_table)}"
    assert not in_table - in_schema, (
        f"rows for operations the API does not have: {sorted(in_table - in_schema)}"
    )
    for key, op in TABLE.items():
        assert set(op.expect) == set(ACTORS), key
