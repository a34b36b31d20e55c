"""Every way in has a recorded decision about the consultation's closed rule.

Every client frame type (the protocol's union and every registered socket handler, calls'
included) and every REST write (POST/PUT/PATCH/DELETE of the OpenAPI schema) is listed below,
either as guarded by the rule (with the live tests that prove a patient whose consultation
closed cannot reach the doctor that way) or as not applicable (with the reason). A new frame
or REST write fails ``test_every_frame_has_a_decision`` / ``test_every_rest_write_has_a_decision``
until someone decides.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from drf_spectacular.generators import SchemaGenerator

from calls import handlers as call_handlers
from messaging import handlers as messaging_handlers
from messaging.protocol import CLIENT_FRAMES
from payments.tests import test_closed_rule_live as live


@dataclass(frozen=True)
class Guarded:
    """Guarded by the closed rule (``messaging.reach.check``): ``how``; proven by ``tests`` (in
    ``test_closed_rule_live.py``), each of which uses one of ``markers`` (the frame or path)."""

    how: str
    markers: tuple[str, ...]
    tests: tuple[str, ...]


@dataclass(frozen=True)
class NotApplicable:
    reason: str


Decision = Guarded | NotApplicable

SEND_TESTS = (
    "test_message_send_refused_for_the_patient_and_allowed_for_the_doctor",
    "test_attachment_refused",
    "test_group_message_and_rename_refused_in_a_group_with_the_doctor",
)
CALL_FOLLOW_UP = NotApplicable(
    "acts on a call that exists already: a patient's call was admitted by call.invite (guarded); "
    "a call the doctor placed is the doctor reaching the patient, which the rule allows"
)
NOT_CONTENT_TO_OTHERS = "stores nothing that reaches another user"

FRAMES: dict[str, Decision] = {
    "ping": NotApplicable("keep-alive, answered to the sender only"),
    "auth": NotApplicable("authenticates the socket; nothing reaches anyone"),
    "auth.refresh": NotApplicable("renews the socket's token; nothing reaches anyone"),
    "message.send": Guarded(
        "both batch writers and the single send ask the rule for the conversation's other members "
        "(direct and group, plaintext, encrypted, with attachments)",
        ("send_message", '"message.send"'),
        SEND_TESTS,
    ),
    "message.edit": Guarded(
        "message_edit asks the rule under the conversation's lock",
        ('"message.edit"',),
        ("test_edit_of_an_old_message_refused",),
    ),
    "message.delete": NotApplicable(
        "unsend removes the patient's own content (the doctor sees a tombstone, no new content)"
    ),
    "message.delivered": NotApplicable(
        "a receipt for messages the patient received: part of the doctor reaching the patient"
    ),
    "message.read": NotApplicable(
        "a receipt for messages the patient received: part of the doctor reaching the patient"
    ),
    "typing": Guarded(
        "typing_notify asks the rule (an indicator in a conversation the patient may not write to)",
        ('"typing"',),
        ("test_typing_refused",),
    ),
    "sync": NotApplicable("reads the caller's own history"),
    "reaction.add": Guarded(
        "reaction_add asks the rule (an emoji is the patient's content in front of the doctor)",
        ('"reaction.add"', "/reactions"),
        ("test_reaction_refused_and_the_doctor_may_still_react",),
    ),
    "reaction.remove": NotApplicable("takes the patient's own reaction back; no new content"),
    "message.pin": NotApplicable("marks a message of the conversation; no content of the patient's"),
    "message.unpin": NotApplicable("removes a mark; no content"),
    "presence.subscribe": NotApplicable("reads others' presence; nothing reaches them"),
    "appointment.check_in": NotApplicable(
        "the patient enters the doctor's waiting room; the doctor sees a queue entry, no content"
    ),
    "waiting_room.admit": NotApplicable(
        "the doctor's action (it opens the consultation; a call it starts is the doctor's call)"
    ),
    "call.invite": Guarded(
        "check_can_call asks the rule for the callees",
        ('"call.invite"',),
        ("test_call_invite_refused_and_the_doctor_may_still_call",),
    ),
    "call.ringing": CALL_FOLLOW_UP,
    "call.accept": CALL_FOLLOW_UP,
    "call.reject": CALL_FOLLOW_UP,
    "call.cancel": CALL_FOLLOW_UP,
    "call.hangup": CALL_FOLLOW_UP,
    "call.ice": CALL_FOLLOW_UP,
    "call.update": CALL_FOLLOW_UP,
    "call.resume": CALL_FOLLOW_UP,
}

REST_WRITES: dict[str, Decision] = {
    "POST /api/v1/attachments": NotApplicable(
        "an upload is the uploader's until message.send attaches it (guarded: test_attachment_refused)"
    ),
    "POST /api/v1/auth/register": NotApplicable(NOT_CONTENT_TO_OTHERS),
    "POST /api/v1/documents": NotApplicable(
        "renders a PDF of the record for its own participants; nothing the patient writes reaches the doctor"
    ),
    "PUT /api/v1/availability": NotApplicable("a doctor's own hours"),
    "PUT /api/v1/schedule": NotApplicable("a doctor's own schedule"),
    "POST /api/v1/calendar/feed": NotApplicable("a doctor's own feed token"),
    "DELETE /api/v1/calendar/feed": NotApplicable("a doctor's own feed token"),
    "POST /api/v1/appointments/{appointment_id}/cancel": NotApplicable("ends an appointment; no content"),
    "POST /api/v1/appointments/{appointment_id}/check-in": NotApplicable(
        "the patient enters the doctor's waiting room; no content"
    ),
    "POST /api/v1/appointments/{appointment_id}/admit": NotApplicable("the doctor's action"),
    "POST /api/v1/on-demand": NotApplicable(
        "a request for a new consultation (not a write into a conversation); no consultation yet"
    ),
    "POST /api/v1/on-demand/{request_id}/accept": NotApplicable("the doctor's action"),
    "POST /api/v1/on-demand/{request_id}/cancel": NotApplicable("withdraws the patient's own request"),
    "POST /api/v1/appointments/{appointment_id}/reschedule": NotApplicable("moves a time; no content"),
    "POST /api/v1/appointments": NotApplicable(
        "booking opens a new consultation, the documented way out of the closed rule"
    ),
    "POST /api/v1/messages/{message_id}/reactions": Guarded(
        "reaction_add asks the rule, as reaction.add",
        ("/reactions",),
        ("test_reaction_refused_and_the_doctor_may_still_react",),
    ),
    "DELETE /api/v1/messages/{message_id}/reactions/{emoji}": NotApplicable(
        "takes the patient's own reaction back; no new content"
    ),
    "PUT /api/v1/messages/{message_id}/pin": NotApplicable(
        "marks a message of the conversation; no content of the patient's"
    ),
    "DELETE /api/v1/messages/{message_id}/pin": NotApplicable("removes a mark; no content"),
    "POST /api/v1/blocks": NotApplicable("cuts contact; never reaches the blocked user"),
    "DELETE /api/v1/blocks/{user_id}": NotApplicable(NOT_CONTENT_TO_OTHERS),
    "POST /api/v1/consultations": NotApplicable(
        "requesting a new consultation is the documented way out of the closed rule"
    ),
    "POST /api/v1/consultations/{consultation_id}/accept": NotApplicable("the doctor's action"),
    "POST /api/v1/consultations/{consultation_id}/cancel": NotApplicable(
        "acts on an open consultation (the rule does not apply while one is open)"
    ),
    "POST /api/v1/consultations/{consultation_id}/complete": NotApplicable("the doctor's action"),
    "POST /api/v1/consultations/{consultation_id}/decline": NotApplicable("the doctor's action"),
    "POST /api/v1/consultations/{consultation_id}/start": NotApplicable("the doctor's action"),
    "POST /api/v1/conversations": NotApplicable(
        "opens or returns the direct conversation and delivers nothing; what is then written "
        "goes through message.send (guarded)"
    ),
    "POST /api/v1/conversations/{conversation_id}/mute": NotApplicable("the caller's own notifications"),
    "DELETE /api/v1/conversations/{conversation_id}/mute": NotApplicable("the caller's own notifications"),
    "POST /api/v1/devices": NotApplicable(NOT_CONTENT_TO_OTHERS),
    "DELETE /api/v1/devices/{device_id}": NotApplicable(NOT_CONTENT_TO_OTHERS),
    "POST /api/v1/groups": Guarded(
        "group_create asks the rule for the members named",
        ('"groups"',),
        ("test_group_created_with_the_doctor_refused",),
    ),
    "PATCH /api/v1/groups/{group_id}": Guarded(
        "group_update asks the rule for the group's other members (a new name or description)",
        ('"PATCH"',),
        ("test_group_message_and_rename_refused_in_a_group_with_the_doctor",),
    ),
    "POST /api/v1/groups/{group_id}/leave": NotApplicable("leaving ends reach"),
    "PUT /api/v1/groups/{group_id}/avatar": Guarded(
        "group_avatar_set asks the rule for the group's other members (a new picture, like a rename)",
        ('"PATCH"',),
        ("test_group_message_and_rename_refused_in_a_group_with_the_doctor",),
    ),
    "DELETE /api/v1/groups/{group_id}/avatar": NotApplicable("removes the group's picture: no new content"),
    "POST /api/v1/groups/{group_id}/members": Guarded(
        "member_add asks the rule for the user added",
        ("/members",),
        ("test_doctor_added_to_the_patients_group_refused",),
    ),
    "PATCH /api/v1/groups/{group_id}/members/{user_id}": NotApplicable(
        "a role change carries no content of the patient's"
    ),
    "DELETE /api/v1/groups/{group_id}/members/{user_id}": NotApplicable("a removal ends reach"),
    "PUT /api/v1/keys": NotApplicable(
        "key material lets others encrypt to the patient (the doctor reaching the patient)"
    ),
    "PATCH /api/v1/me": NotApplicable("the caller's own profile; nothing is sent to anyone"),
    "DELETE /api/v1/me": NotApplicable("erasure; nothing is sent to anyone"),
    "PUT /api/v1/notifications/preferences": NotApplicable("the caller's own notifications"),
    "POST /api/v1/payments/stripe/webhook": NotApplicable("Stripe's events, no user's content"),
    "POST /api/v1/payouts/onboarding": NotApplicable("a doctor's own payout account"),
    "POST /api/v1/scheduled-messages": NotApplicable(
        "doctors only (the rule restricts patients); at send time the message goes through "
        "messaging's send, which asks every rule"
    ),
    "PATCH /api/v1/scheduled-messages/{scheduled_id}": NotApplicable(
        "edits the author's own pending row; nothing reaches anyone until the send (see POST)"
    ),
    "DELETE /api/v1/scheduled-messages/{scheduled_id}": NotApplicable("cancels; nothing is sent"),
    # The clinical record (records/): only the consultation's doctor writes it; the rule restricts
    # patients reaching doctors, and a patient's attempt is refused (403 not_the_doctor).
    "POST /api/v1/consultations/{consultation_id}/notes": NotApplicable(
        "the consultation's doctor writes its note (a draft nobody else sees)"
    ),
    "PATCH /api/v1/notes/{note_id}": NotApplicable("the doctor edits their own draft"),
    "DELETE /api/v1/notes/{note_id}": NotApplicable("the doctor discards their own draft"),
    "POST /api/v1/notes/{note_id}/sign": NotApplicable("the doctor signs their own draft"),
    "POST /api/v1/notes/{note_id}/share": NotApplicable(
        "the doctor lets the patient read the note: the doctor reaching the patient, which the rule allows"
    ),
    "POST /api/v1/notes/{note_id}/amendments": NotApplicable(
        "the doctor corrects their signed note (the doctor reaching the patient)"
    ),
    "POST /api/v1/consultations/{consultation_id}/prescriptions": NotApplicable(
        "the consultation's doctor prescribes; its own window applies "
        "(HEALTHCHAT_PRESCRIPTION_WINDOW_DAYS after completion, 409 consultation_not_eligible)"
    ),
    "POST /api/v1/prescriptions/{prescription_id}/cancel": NotApplicable(
        "the prescriber cancels their own prescription"
    ),
    "POST /api/v1/consultations/{consultation_id}/rating": NotApplicable(
        "rating a completed consultation is what comes after it, whether or not its follow-up "
        "window has ended; nothing is sent to the doctor (a public review, ratings/)"
    ),
    "PATCH /api/v1/consultations/{consultation_id}/rating": NotApplicable(
        "the patient's own review, within RATING_EDIT_DAYS of writing it; nothing is sent"
    ),
    "PUT /api/v1/consultations/{consultation_id}/rating/reply": NotApplicable(
        "the doctor's public reply (the rule restricts patients); nothing is sent to the patient"
    ),
    "POST /api/v1/reports": NotApplicable(
        "a report goes to the moderators, never to the user reported (a patient may report after "
        "the consultation closed)"
    ),
}


def _check(decisions: dict[str, Decision]) -> None:
    for key, decision in decisions.items():
        if isinstance(decision, NotApplicable):
            assert decision.reason.strip(), key
            continue
        assert decision.how.strip(), key
        assert decision.tests, key
        for name in decision.tests:
            test = getattr(live, name, None)
            assert callable(test), f"{key}: no live test {name}"
            assert name.startswith("test_"), f"{key}: {name} is not a test"
            source = inspect.getsource(test)
            assert any(m in source for m in decision.markers), f"{key}: {name} never uses {decision.markers}"


def test_every_frame_has_a_decision() -> None:
    frames = set(CLIENT_FRAMES) | set(messaging_handlers.HANDLERS) | set(call_handlers.HANDLERS)
    assert not frames - set(FRAMES), f"frames without a closed-rule decision: {sorted(frames - set(FRAMES))}"
    assert not set(FRAMES) - frames, f"decisions for frames that do not exist: {sorted(set(FRAMES) - frames)}"
    _check(FRAMES)


def test_every_rest_write_has_a_decision() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    writes = {
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method in operations
        if method in ("post", "put", "patch", "delete")
    }
    assert not writes - set(REST_WRITES), (
        f"REST writes without a closed-rule decision: {sorted(writes - set(REST_WRITES))}"
    )
    assert not set(REST_WRITES) - writes, (
        f"decisions for REST writes that do not exist: {sorted(set(REST_WRITES) - writes)}"
    )
    _check(REST_WRITES)
