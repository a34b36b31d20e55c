"""The call state machine: ringing, first answer wins, busy, glare, reject/cancel/hangup, ring
timeout, dropped sockets, authorization and bad input. Real PostgreSQL; events recorded."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from calls import services, tasks
from calls.models import Call, CallParticipant
from calls.tests.conftest import CANDIDATE, SDP_ANSWER, SDP_OFFER
from core.errors import ApplicationError
from groups import services as group_services
from messaging import services as messaging_services
from messaging.models import Event, Message
from messaging.tests.factories import pair
from notifications.models import PushDelivery

pytestmark = pytest.mark.django_db

CALLER_SOCKET = "specific.caller!1"
PHONE = "specific.callee!phone"
TABLET = "specific.callee!tablet"


def group(user_id: int) -> str:
    return f"user.{user_id}"


def invite(run, caller, conversation, *, media="audio", sdp=SDP_OFFER, channel=CALLER_SOCKET):
    return run(
        services.call_start,
        caller=caller,
        conversation_id=conversation.pk,
        media=media,
        sdp=sdp,
        channel_name=channel,
    )


def accept(run, callee, call_id, channel=PHONE, device_id=None):
    return run(
        services.call_accept,
        user=callee,
        call_id=call_id,
        sdp=SDP_ANSWER,
        channel_name=channel,
        device_id=device_id,
    )


def code_of(info: pytest.ExceptionInfo[ApplicationError]) -> str:
    return info.value.code


def history_entries(conversation):
    return list(
        Message.objects.filter(conversation=conversation, kind="system", system__event="call").order_by("seq")
    )


# --- Starting ----------------------------------------------------------------------------------
def test_invite_rings_every_device_of_the_callee(run, outbox):
    patient, doctor, conversation = pair()
    result = invite(run, patient, conversation, media="video")
    call = result.call
    assert result.ringing
    assert call.state == "ringing"
    assert call.media == "video"
    assert call.caller_id == patient.pk
    people = [{k: p[k] for k in ("user_id", "role", "state", "left_at")} for p in result.data["participants"]]
    assert people == [
        {"user_id": patient.pk, "role": "caller", "state": "joined", "left_at": None},
        {"user_id": doctor.pk, "role": "callee", "state": "ringing", "left_at": None},
    ]
    sent = outbox.one("call.invite", group(doctor.pk))
    assert sent.frame["data"]["sdp"] == SDP_OFFER
    assert sent.frame["data"]["call"]["id"] == call.pk
    assert outbox.types() == ["call.invite"]  # nothing to the caller's devices, nothing in history yet
    assert abs((call.ring_expires_at - call.created_at).total_seconds() - 45) < 1
    caller = CallParticipant.objects.get(call=call, user=patient)
    assert caller.channel_name == CALLER_SOCKET


def test_only_members_of_a_direct_conversation_may_call(run, outbox):
    patient, doctor, conversation = pair()
    outsider = PatientFactory()
    with pytest.raises(ApplicationError) as info:
        invite(run, outsider, conversation)
    assert code_of(info) == "conversation_not_found"
    assert info.value.status == 404
    group_conversation = group_services.group_create(creator=doctor, name="Ward", member_ids=[patient.pk])
    with pytest.raises(ApplicationError) as info:
        invite(run, doctor, group_conversation)
    assert code_of(info) == "group_calls_unavailable"
    messaging_services.block_user(user=doctor, blocked_id=patient.pk)
    with pytest.raises(ApplicationError) as info:
        invite(run, patient, conversation)
    assert code_of(info) == "blocked"
    assert not Call.objects.exists()
    assert outbox.sent == []


def test_bad_input_is_refused_before_anything_is_written(run):
    patient, _doctor, conversation = pair()
    cases = [
        ({"sdp": "v=0\r\n" + "a=x\r\n" * 4000}, "sdp_too_large"),
        ({"sdp": ""}, "invalid_sdp"),
        ({"sdp": "hello"}, "invalid_sdp"),
        ({"sdp": "v=0\r\n\x00"}, "invalid_sdp"),
        ({"media": "hologram"}, "invalid_media"),
    ]
    for overrides, expected in cases:
        with pytest.raises(ApplicationError) as info:
            invite(run, patient, conversation, **overrides)
        assert code_of(info) == expected
    assert not Call.objects.exists()


# --- Answering ---------------------------------------------------------------------------------
def test_first_accept_wins_and_the_other_devices_are_told(run, outbox):
    patient, doctor, conversation = pair()
    phone = DeviceFactory(user=doctor)
    call = invite(run, patient, conversation).call
    outbox.clear()
    loaded = accept(run, doctor, call.pk, channel=PHONE, device_id=phone.pk)
    assert loaded.call.state == "accepted"
    assert loaded.call.answered_at is not None
    answer = outbox.one("call.accept", CALLER_SOCKET)  # only the caller's call socket
    assert answer.frame["data"] == {"call_id": call.pk, "user_id": doctor.pk, "sdp": SDP_ANSWER}
    elsewhere = outbox.one("call.answered_elsewhere", group(doctor.pk))
    assert elsewhere.exclude == PHONE
    assert elsewhere.frame["data"] == {"call_id": call.pk}
    with pytest.raises(ApplicationError) as info:
        accept(run, doctor, call.pk, channel=TABLET)
    assert code_of(info) == "call_not_ringing"
    assert info.value.status == 409
    me = CallParticipant.objects.get(call=call, user=doctor)
    assert (me.state, me.channel_name, me.device_id) == ("joined", PHONE, phone.pk)


def test_ringing_is_reported_to_the_caller_once(run, outbox):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    outbox.clear()
    run(services.call_ringing, user=doctor, call_id=call.pk)
    run(services.call_ringing, user=doctor, call_id=call.pk)
    assert outbox.one("call.ringing", CALLER_SOCKET).frame["data"] == {
        "call_id": call.pk,
        "user_id": doctor.pk,
    }


def test_reject(run, outbox):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    outbox.clear()
    loaded = run(services.call_reject, user=doctor, call_id=call.pk, channel_name=PHONE)
    assert loaded.call.state == "rejected"
    assert loaded.call.end_reason == "rejected"
    assert outbox.one("call.reject", CALLER_SOCKET).frame["data"] == {
        "call_id": call.pk,
        "user_id": doctor.pk,
    }
    ended = outbox.of("call.ended")
    assert {s.target for s in ended} == {group(patient.pk), group(doctor.pk)}
    assert all(s.exclude == PHONE for s in ended)  # the rejecting socket knows already
    assert ended[0].frame["data"]["call"]["state"] == "rejected"
    [entry] = history_entries(conversation)
    assert entry.system == {
        "event": "call",
        "call_id": call.pk,
        "media": "audio",
        "state": "rejected",
        "end_reason": "rejected",
        "duration": 0,
    }
    assert not PushDelivery.objects.filter(kind="message").exists()  # a declined call is not "missed"
    states = dict(CallParticipant.objects.filter(call=call).values_list("user_id", "state"))
    assert states == {patient.pk: "left", doctor.pk: "declined"}


def test_cancel_tells_the_ringing_devices_and_records_a_missed_call(run, outbox):
    patient, doctor, conversation = pair()
    DeviceFactory(user=doctor)
    call = invite(run, patient, conversation).call
    outbox.clear()
    loaded = run(services.call_cancel, user=patient, call_id=call.pk, channel_name=CALLER_SOCKET)
    assert loaded.call.state == "cancelled"
    cancel = outbox.one("call.cancel", group(doctor.pk))
    assert cancel.frame["data"] == {"call_id": call.pk, "reason": "cancelled"}
    [entry] = history_entries(conversation)
    assert entry.system["state"] == "cancelled"
    assert outbox.one("message.new", group(doctor.pk)).frame["data"]["message"]["id"] == entry.pk
    assert PushDelivery.objects.filter(kind="message", message=entry, device__user=doctor).count() == 1


def test_hangup_records_the_duration(run, outbox):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    accept(run, doctor, call.pk)
    Call.objects.filter(pk=call.pk).update(answered_at=timezone.now() - dt.timedelta(seconds=65))
    outbox.clear()
    loaded = run(services.call_hangup, user=doctor, call_id=call.pk, channel_name=PHONE)
    call.refresh_from_db()
    assert (call.state, call.end_reason, call.ended_by_id) == ("ended", "hangup", doctor.pk)
    assert 65 <= call.duration <= 67
    assert loaded.data()["duration"] == call.duration
    hangup = outbox.one("call.hangup", CALLER_SOCKET)
    assert hangup.frame["data"] == {"call_id": call.pk, "user_id": doctor.pk, "reason": "hangup"}
    [entry] = history_entries(conversation)
    assert (entry.system["state"], entry.system["duration"]) == ("ended", call.duration)
    with pytest.raises(ApplicationError) as info:
        run(services.call_hangup, user=patient, call_id=call.pk, channel_name=CALLER_SOCKET)
    assert code_of(info) == "call_not_active"


def test_hangup_with_failed_media_and_hangup_while_ringing(run, outbox):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    accept(run, doctor, call.pk)
    run(services.call_hangup, user=patient, call_id=call.pk, reason="failed", channel_name=CALLER_SOCKET)
    call.refresh_from_db()
    assert (call.state, call.end_reason) == ("failed", "media_failed")
    # Ringing: the caller's hangup is a cancel, the callee's a reject.
    second = invite(run, patient, conversation).call
    assert run(services.call_hangup, user=patient, call_id=second.pk).call.state == "cancelled"
    third = invite(run, patient, conversation).call
    assert run(services.call_hangup, user=doctor, call_id=third.pk).call.state == "rejected"


# --- Busy, glare, one call per conversation -------------------------------------------------------
def test_a_callee_in_another_call_is_busy(run, outbox):
    patient, doctor, conversation = pair()
    other_patient = PatientFactory()
    other, _ = messaging_services.conversation_open_direct(user=other_patient, peer_id=doctor.pk)
    first = invite(run, other_patient, other).call
    accept(run, doctor, first.pk)
    outbox.clear()
    result = invite(run, patient, conversation)
    assert not result.ringing
    assert (result.call.state, result.call.end_reason) == ("busy", "busy")
    assert outbox.of("call.invite") == []
    [entry] = history_entries(conversation)
    assert entry.system["state"] == "busy"
    # The caller who is in a call cannot start another.
    with pytest.raises(ApplicationError) as info:
        invite(run, doctor, conversation)
    assert code_of(info) == "already_in_call"


def test_a_second_invite_in_the_same_conversation_is_refused(run):
    patient, _doctor, conversation = pair()
    first = invite(run, patient, conversation).call
    with pytest.raises(ApplicationError) as info:
        invite(run, patient, conversation)
    assert code_of(info) == "call_in_progress"
    assert info.value.extra == {"call_id": first.pk}


def test_the_database_allows_one_active_call_per_conversation():
    patient, _doctor, conversation = pair()
    now = timezone.now()
    Call.objects.create(conversation=conversation, caller=patient, media="audio", ring_expires_at=now)
    with pytest.raises(IntegrityError), transaction.atomic():
        Call.objects.create(conversation=conversation, caller=patient, media="audio", ring_expires_at=now)
    Call.objects.create(
        conversation=conversation,
        caller=patient,
        media="audio",
        state="missed",
        end_reason="timeout",
        ended_at=now,
        ring_expires_at=now,
    )


@pytest.mark.parametrize("lower_first", [True, False])
def test_glare_the_lower_user_id_wins_whoever_came_first(run, outbox, lower_first):
    patient, doctor, conversation = pair()
    low, high = sorted([patient, doctor], key=lambda u: u.pk)
    first, second = (low, high) if lower_first else (high, low)
    a = invite(run, first, conversation, channel="specific.first!1").call
    b = invite(run, second, conversation, channel="specific.second!1").call
    a.refresh_from_db()
    b.refresh_from_db()
    winner, loser = (a, b) if first == low else (b, a)
    assert winner.caller_id == low.pk
    assert winner.state == "ringing"
    assert (loser.state, loser.end_reason) == ("cancelled", "glare")
    assert Call.objects.filter(conversation=conversation, state__in=["ringing", "accepted"]).count() == 1
    assert history_entries(conversation) == []  # a glare loser is not a call anyone missed
    if not lower_first:  # the high user's ringing call was cancelled: their devices are told
        assert outbox.of("call.cancel", group(low.pk))[0].frame["data"]["reason"] == "glare"
        assert any(s.frame["data"]["call"]["end_reason"] == "glare" for s in outbox.of("call.ended"))


@pytest.mark.django_db(transaction=True)
def test_glare_with_simultaneous_invites_on_two_connections():
    patient, doctor, conversation = pair()
    low = min(patient.pk, doctor.pk)
    barrier = threading.Barrier(2)
    results: dict[int, object] = {}

    def call_from(user):
        try:
            barrier.wait(timeout=5)
            results[user.pk] = services.call_start(
                caller=user,
                conversation_id=conversation.pk,
                media="audio",
                sdp=SDP_OFFER,
                channel_name=f"c{user.pk}",
            ).call.state
        except Exception as exc:  # pragma: no cover - reported below
            results[user.pk] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=call_from, args=(u,)) for u in (patient, doctor)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(isinstance(r, Exception) for r in results.values()), results
    active = list(Call.objects.filter(conversation=conversation, state="ringing"))
    assert [c.caller_id for c in active] == [low]
    losers = Call.objects.filter(conversation=conversation, state="cancelled", end_reason="glare")
    assert [c.caller_id for c in losers] == [max(patient.pk, doctor.pk)]


# --- Ring timeout ----------------------------------------------------------------------------------
def test_ring_timeout_makes_the_call_missed_with_history_and_push(run, outbox):
    patient, doctor, conversation = pair()
    doctor_phone = DeviceFactory(user=doctor)
    call = invite(run, patient, conversation).call
    outbox.clear()
    with transaction.atomic():
        assert tasks.call_ring_timeout.apply(args=(call.pk,)).get() is False  # not due yet
    Call.objects.filter(pk=call.pk).update(ring_expires_at=timezone.now() - dt.timedelta(seconds=1))
    with_effects = run(lambda: tasks.call_ring_timeout.apply(args=(call.pk,)).get())
    assert with_effects is True
    call.refresh_from_db()
    assert (call.state, call.end_reason, call.duration) == ("missed", "timeout", 0)
    missed = outbox.of("call.missed")
    assert {s.target for s in missed} == {group(patient.pk), group(doctor.pk)}
    assert missed[0].frame["data"]["call"]["state"] == "missed"
    [entry] = history_entries(conversation)
    assert entry.sender_id == patient.pk
    assert entry.system["state"] == "missed"
    assert Event.objects.filter(conversation=conversation, kind="message.new", message=entry).exists()
    push = PushDelivery.objects.get(kind="message", message=entry)
    assert push.device_id == doctor_phone.pk
    # Idempotent: a second run (a retried task, or the sweep) changes nothing.
    assert run(lambda: tasks.call_ring_timeout.apply(args=(call.pk,)).get()) is False
    assert len(history_entries(conversation)) == 1


def test_the_missed_call_push_says_missed_call(run):
    from notifications import services as push_services

    patient, doctor, conversation = pair()
    DeviceFactory(user=doctor)
    call = invite(run, patient, conversation).call
    Call.objects.filter(pk=call.pk).update(ring_expires_at=timezone.now())
    run(services.call_ring_timeout, call_id=call.pk)
    row = PushDelivery.objects.select_related("device", "message", "message__sender", "conversation").get(
        kind="message"
    )
    rendered = push_services._render(row, push_services._context([row]))
    assert rendered.title == f"Missed call from {patient.display_name}"
    assert rendered.body is None


def test_an_offline_callee_is_rung_by_a_high_priority_push(run):
    patient, doctor, conversation = pair()
    phone = DeviceFactory(user=doctor)
    call = invite(run, patient, conversation).call
    ids = run(services.call_ring_offline, call_id=call.pk, user_ids=[doctor.pk])
    row = PushDelivery.objects.get(pk__in=ids)
    assert (row.kind, row.ref, row.device_id, row.conversation_id) == (
        "call",
        str(call.pk),
        phone.pk,
        conversation.pk,
    )
    # Once answered, the ring push is withdrawn on the devices it reached.
    PushDelivery.objects.filter(pk=row.pk).update(state="sent", sent_at=timezone.now())
    accept(run, doctor, call.pk)
    assert PushDelivery.objects.filter(kind="call.cancelled", ref=str(call.pk), device=phone).exists()


def test_accepting_an_overdue_call_is_refused_and_misses_it(run):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    Call.objects.filter(pk=call.pk).update(ring_expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(ApplicationError) as info:
        accept(run, doctor, call.pk)
    assert code_of(info) == "call_not_ringing"
    call.refresh_from_db()
    assert call.state == "missed"


def test_the_sweep_fires_lost_timers(run):
    patient, _doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    assert run(services.calls_sweep) == 0
    assert run(services.calls_sweep, now=timezone.now() + dt.timedelta(seconds=46)) == 1
    call.refresh_from_db()
    assert call.state == "missed"


# --- Out of order, authorization ---------------------------------------------------------------------
def test_out_of_order_frames_are_refused(run):
    patient, doctor, conversation = pair()
    with pytest.raises(ApplicationError) as info:  # accept before any invite
        accept(run, doctor, 999_999)
    assert code_of(info) == "call_not_found"
    call = invite(run, patient, conversation).call
    for fn, user, expected in [
        (services.call_accept, patient, "call_action_not_allowed"),
        (services.call_cancel, doctor, "call_action_not_allowed"),
        (services.call_reject, patient, "call_action_not_allowed"),
    ]:
        kwargs = {"sdp": SDP_ANSWER} if fn is services.call_accept else {}
        with pytest.raises(ApplicationError) as info:
            run(fn, user=user, call_id=call.pk, **kwargs)
        assert code_of(info) == expected
    with pytest.raises(ApplicationError) as info:  # the callee has no call socket before answering
        run(services.call_ice, user=doctor, call_id=call.pk, candidate=CANDIDATE, channel_name=PHONE)
    assert code_of(info) == "not_call_device"
    with pytest.raises(ApplicationError) as info:
        run(services.call_update, user=patient, call_id=call.pk, sdp=SDP_OFFER, channel_name=CALLER_SOCKET)
    assert code_of(info) == "call_not_active"
    accept(run, doctor, call.pk)
    with pytest.raises(ApplicationError) as info:
        run(services.call_reject, user=doctor, call_id=call.pk)
    assert code_of(info) == "call_not_ringing"
    run(services.call_hangup, user=patient, call_id=call.pk)
    for fn in (services.call_ice, services.call_update):
        payload = {"candidate": CANDIDATE} if fn is services.call_ice else {"sdp": SDP_OFFER}
        with pytest.raises(ApplicationError) as info:  # ice after hangup
            run(fn, user=patient, call_id=call.pk, channel_name=CALLER_SOCKET, **payload)
        assert code_of(info) == "call_not_active"
    with pytest.raises(ApplicationError) as info:
        run(services.call_resume, user=patient, call_id=call.pk, channel_name="x")
    assert code_of(info) == "call_not_active"


def test_nobody_else_can_touch_a_call(run, outbox):
    patient, _doctor, conversation = pair()
    intruder = DoctorFactory()
    call = invite(run, patient, conversation).call
    outbox.clear()
    for fn, extra in [
        (services.call_accept, {"sdp": SDP_ANSWER}),
        (services.call_reject, {}),
        (services.call_cancel, {}),
        (services.call_hangup, {}),
        (services.call_ringing, {}),
        (services.call_ice, {"candidate": CANDIDATE, "channel_name": "specific.intruder!1"}),
        (services.call_resume, {}),
    ]:
        with pytest.raises(ApplicationError) as info:
            run(fn, user=intruder, call_id=call.pk, **extra)
        assert code_of(info) == "call_not_found", fn
        assert info.value.status == 404
    assert outbox.sent == []
    call.refresh_from_db()
    assert call.state == "ringing"


# --- ICE relay ----------------------------------------------------------------------------------------
def test_ice_is_relayed_opaque_to_the_other_side_only(run, outbox):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    outbox.clear()
    run(services.call_ice, user=patient, call_id=call.pk, candidate=CANDIDATE, channel_name=CALLER_SOCKET)
    ringing = outbox.one("call.ice", group(doctor.pk))  # every ringing device of the callee
    assert ringing.frame["data"] == {"call_id": call.pk, "user_id": patient.pk, "candidate": CANDIDATE}
    accept(run, doctor, call.pk, channel=PHONE)
    outbox.clear()
    run(services.call_ice, user=patient, call_id=call.pk, candidate=CANDIDATE, channel_name=CALLER_SOCKET)
    run(services.call_ice, user=doctor, call_id=call.pk, candidate={"candidate": ""}, channel_name=PHONE)
    assert [(s.target, s.frame["type"]) for s in outbox.sent] == [
        (PHONE, "call.ice"),
        (CALLER_SOCKET, "call.ice"),
    ]
    with pytest.raises(ApplicationError) as info:  # the callee's other device is not in the call
        run(services.call_ice, user=doctor, call_id=call.pk, candidate=CANDIDATE, channel_name=TABLET)
    assert code_of(info) == "not_call_device"
    run(services.call_update, user=doctor, call_id=call.pk, sdp=SDP_OFFER, channel_name=PHONE)
    assert outbox.one("call.update", CALLER_SOCKET).frame["data"]["sdp"] == SDP_OFFER


@pytest.mark.parametrize(
    ("candidate", "code"),
    [
        ({"candidate": "x" * 3000}, "candidate_too_large"),
        ({}, "invalid_candidate"),
        ({"candidate": {"nested": 1}}, "invalid_candidate"),
        ({f"k{i}": 1 for i in range(9)}, "invalid_candidate"),
        ("candidate:1 1 udp", "invalid_candidate"),
        ({"candidate": "c", "sdpMLineIndex": 10**30}, "invalid_candidate"),
        ({"candidate": "c", "sdpMLineIndex": float("inf")}, "invalid_candidate"),
    ],
)
def test_bad_candidates_are_refused(run, outbox, candidate, code):
    patient, _doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    outbox.clear()
    with pytest.raises(ApplicationError) as info:
        run(services.call_ice, user=patient, call_id=call.pk, candidate=candidate, channel_name=CALLER_SOCKET)
    assert code_of(info) == code
    assert outbox.sent == []


# --- Dropped sockets ------------------------------------------------------------------------------------
def test_a_dropped_call_socket_is_announced_and_the_call_ends_after_the_grace(run, outbox, settings):
    settings.CALL_RECONNECT_GRACE_SECONDS = 20
    patient, doctor, conversation = pair()
    phone = DeviceFactory(user=doctor)
    call = invite(run, patient, conversation).call
    accept(run, doctor, call.pk, channel=PHONE, device_id=phone.pk)
    outbox.clear()
    assert run(services.call_socket_closed, user=doctor, channel_name=PHONE, call_ids=[call.pk]) == [call.pk]
    note = outbox.one("call.peer_disconnected", CALLER_SOCKET)
    assert note.frame["data"] == {"call_id": call.pk, "user_id": doctor.pk, "grace_seconds": 20.0}
    # Within the grace period nothing ends; the same device resumes on a new socket.
    assert run(services.call_reconnect_timeout, call_id=call.pk, user_id=doctor.pk) is False
    with pytest.raises(ApplicationError) as info:  # another device of the user cannot take over
        run(services.call_resume, user=doctor, call_id=call.pk, device_id=None, channel_name=TABLET)
    assert code_of(info) == "not_call_device"
    run(services.call_resume, user=doctor, call_id=call.pk, device_id=phone.pk, channel_name="specific.new!2")
    assert outbox.one("call.peer_resumed", CALLER_SOCKET).frame["data"] == {
        "call_id": call.pk,
        "user_id": doctor.pk,
    }
    # The old socket's late close changes nothing any more.
    assert run(services.call_socket_closed, user=doctor, channel_name=PHONE, call_ids=[call.pk]) == []
    run(services.call_ice, user=doctor, call_id=call.pk, candidate=CANDIDATE, channel_name="specific.new!2")
    # Dropped again, and this time it stays away.
    run(services.call_socket_closed, user=doctor, channel_name="specific.new!2", call_ids=[call.pk])
    later = timezone.now() + dt.timedelta(seconds=21)
    assert run(services.call_reconnect_timeout, call_id=call.pk, user_id=doctor.pk, now=later) is True
    call.refresh_from_db()
    assert (call.state, call.end_reason) == ("ended", "connection_lost")
    assert outbox.of("call.ended", group(patient.pk))


def test_a_caller_whose_socket_closes_while_ringing_cancels(run, outbox):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    outbox.clear()
    run(services.call_socket_closed, user=patient, channel_name=CALLER_SOCKET, call_ids=[call.pk])
    call.refresh_from_db()
    assert (call.state, call.end_reason) == ("cancelled", "caller_disconnected")
    assert outbox.one("call.cancel", group(doctor.pk)).frame["data"]["reason"] == "caller_disconnected"


def test_the_call_socket_of_a_ringing_callee_closing_changes_nothing(run):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    assert run(services.call_socket_closed, user=doctor, channel_name=PHONE, call_ids=[call.pk]) == []
    call.refresh_from_db()
    assert call.state == "ringing"


# --- Queries ------------------------------------------------------------------------------------------
def test_ice_relay_costs_two_queries(run, outbox, django_assert_num_queries):
    patient, doctor, conversation = pair()
    call = invite(run, patient, conversation).call
    accept(run, doctor, call.pk)
    with django_assert_num_queries(2):  # the call, its participants
        services.call_ice(user=patient, call_id=call.pk, candidate=CANDIDATE, channel_name=CALLER_SOCKET)
