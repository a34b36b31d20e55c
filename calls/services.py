"""Call actions: the call state machine and the signalling relay.

States (``Call.state``)::

    ringing ──accept──► accepted ──hangup──► ended (duration) / failed (media failed)
       │                    └── socket gone longer than the grace period ──► ended (connection_lost)
       ├── reject ──► rejected         ├── cancel ──► cancelled      ├── timeout ──► missed
    (busy and glare-losing invites are recorded already final: busy / cancelled)

Every transition is one function that owns its transaction. Locks are always taken in the same
order: the conversation row (messaging's lock, which also orders the call's history entry), then
the call row, then (for a new call) the users' rows. Socket events, pushes and Celery tasks go
out only after commit.

Routing: a participant who is in the call (the caller's inviting socket, the callee's answering
socket) is reached on that socket only (its channel-layer channel); a callee who has not answered
is reached on every device (its user group). SDP and candidates are relayed opaque and never
stored.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core import realtime
from core.errors import ApplicationError, NotFound, PermissionDenied
from messaging import reach
from messaging import selectors as messaging_selectors
from messaging import services as messaging
from messaging.models import Conversation

from . import selectors
from . import validators as v
from .models import Call, CallParticipant

logger = logging.getLogger("healthchat.calls")

State = Call.State
Role = CallParticipant.Role
PState = CallParticipant.State
# Final states that tell the callee they missed a call (their entry in the history is pushed).
MISSED_FOR_CALLEE = (State.MISSED, State.CANCELLED, State.BUSY)


def ring_timeout_seconds() -> float:
    return float(settings.CALL_RING_TIMEOUT_SECONDS)


def reconnect_grace_seconds() -> float:
    return float(settings.CALL_RECONNECT_GRACE_SECONDS)


# --- Delivery ---------------------------------------------------------------------------------
def _channel_send(channel: str, frame: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        realtime.send_from_sync(layer, "send", channel, {"type": "client.event", "frame": frame})
    except Exception:  # a live hint: the peer's client also has GET calls/{id}
        logger.warning("could not relay %s to a call device", frame.get("type"), exc_info=True)


def _to_participant(participant: CallParticipant, frame: dict[str, Any], *, on_commit: bool = True) -> None:
    """To the participant's call socket, or to all their devices when none is in the call."""
    channel = participant.channel_name
    if channel:
        if on_commit:
            transaction.on_commit(lambda: _channel_send(channel, frame))
        else:
            _channel_send(channel, frame)
    elif on_commit:
        messaging.fan_out_on_commit(user_ids=[participant.user_id], frame=frame)
    else:
        messaging.fan_out(user_ids=[participant.user_id], frame=frame)


def _safely(what: str, fn: Callable[[], object]) -> Callable[[], None]:
    """An after-commit side effect whose failure must not turn a committed action into an error."""

    def run() -> None:
        try:
            fn()
        except Exception:
            logger.exception("calls: %s failed", what)

    return run


def _queue(task_name: str, call_id: int, *args: int, countdown: float) -> None:
    """Queue a timer task on commit. Eager mode (no broker) runs tasks at once, which would
    fire every timer early: there the beat sweep and the lazy checks are the timers."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return
    from . import tasks

    task = getattr(tasks, task_name)
    transaction.on_commit(
        _safely(f"queueing {task_name}", lambda: task.apply_async(args=(call_id, *args), countdown=countdown))
    )


# --- Loading ------------------------------------------------------------------------------------
@dataclass
class Loaded:
    call: Call
    participants: list[CallParticipant]
    me: CallParticipant

    @property
    def others(self) -> list[CallParticipant]:
        return [p for p in self.participants if p.pk != self.me.pk]

    @property
    def caller(self) -> CallParticipant:
        return next(p for p in self.participants if p.role == Role.CALLER)

    @property
    def callees(self) -> list[CallParticipant]:
        return [p for p in self.participants if p.role == Role.CALLEE]

    def data(self) -> dict[str, Any]:
        return selectors.call_data(self.call, self.participants)


def _missing() -> NotFound:
    return NotFound("No such call.", code="call_not_found")


def _load(*, user: User, call_id: int, for_update: bool) -> Loaded:
    """The call and its participants, for one of them (others get ``call_not_found``).

    ``for_update``: inside a transaction, lock the conversation row, then the call row."""
    if for_update:
        conversation_id = (
            Call.objects.filter(pk=call_id, participants__user=user)
            .values_list("conversation_id", flat=True)
            .first()
        )
        if conversation_id is None:
            raise _missing()
        messaging.lock(conversation_id)
        call = Call.objects.select_for_update().filter(pk=call_id).first()
    else:
        call = Call.objects.filter(pk=call_id).first()
    if call is None:
        raise _missing()
    participants = list(CallParticipant.objects.filter(call=call).order_by("id"))
    me = next((p for p in participants if p.user_id == user.pk), None)
    if me is None:
        raise _missing()
    return Loaded(call, participants, me)


def _lock_call(call_id: int) -> Loaded | None:
    """For timers (no acting user): lock as above; None if the call is gone."""
    conversation_id = Call.objects.filter(pk=call_id).values_list("conversation_id", flat=True).first()
    if conversation_id is None:
        return None
    messaging.lock(conversation_id)
    call = Call.objects.select_for_update().get(pk=call_id)
    participants = list(CallParticipant.objects.filter(call=call).order_by("id"))
    caller = next(p for p in participants if p.role == Role.CALLER)
    return Loaded(call, participants, caller)


def _require_active(call: Call) -> None:
    if call.state not in v.ACTIVE_STATES:
        raise ApplicationError("call_not_active", f"This call is over ({call.state}).", status=409)


def _require_ringing(call: Call) -> None:
    if call.state == State.ACCEPTED:
        raise ApplicationError("call_not_ringing", "This call was already answered.", status=409)
    if call.state != State.RINGING:
        raise ApplicationError("call_not_ringing", f"This call is over ({call.state}).", status=409)


def _require_role(me: CallParticipant, role: str, action: str) -> None:
    if me.role != role:
        raise PermissionDenied(f"Only the {role} may {action} this call.", code="call_action_not_allowed")


def _require_call_socket(me: CallParticipant, channel_name: str) -> None:
    if not me.channel_name or me.channel_name != channel_name:
        raise PermissionDenied(
            "Signal from the socket that is in the call (or call.resume first).", code="not_call_device"
        )


# --- Starting a call ----------------------------------------------------------------------------
def check_can_call(*, caller: User, conversation_id: int, media: str) -> tuple[Conversation, list[int]]:
    """May ``caller`` call the other members of this conversation? Returns it and the callees."""
    v.validate_media(media)
    membership = messaging_selectors.membership_get(user=caller, conversation_id=conversation_id)
    conversation = membership.conversation
    if conversation.kind != Conversation.Kind.DIRECT:
        raise ApplicationError(
            "group_calls_unavailable", "Calls are between the two members of a direct conversation."
        )
    callee_ids = [
        uid
        for uid in messaging_selectors.active_member_ids(conversation_id=conversation_id)
        if uid != caller.pk
    ]
    callees = list(User.objects.filter(pk__in=callee_ids, is_active=True, deleted_at__isnull=True))
    if not callees:
        raise ApplicationError("callee_unavailable", "There is nobody to call in this conversation.")
    if any(messaging.is_blocked(caller.pk, callee.pk) for callee in callees):
        raise PermissionDenied("This conversation is blocked.", code="blocked")
    reach.check(sender=caller, recipient_ids=tuple(c.pk for c in callees))
    return conversation, [c.pk for c in callees]


@dataclass(frozen=True)
class StartResult:
    call: Call
    data: dict[str, Any]
    callee_ids: list[int]

    @property
    def ringing(self) -> bool:
        return self.call.state == State.RINGING


def _in_a_call(user_ids: list[int]) -> set[int]:
    """Users who are in a call now: joined an answered call, or calling someone."""
    return set(
        CallParticipant.objects.filter(
            user_id__in=user_ids, state=PState.JOINED, call__state__in=v.ACTIVE_STATES
        ).values_list("user_id", flat=True)
    )


def _create(
    *,
    conversation: Conversation,
    caller: User,
    callee_ids: list[int],
    media: str,
    state: str,
    device_id: int | None,
    channel_name: str,
    now: dt.datetime,
    end_reason: str = "",
) -> tuple[Call, list[CallParticipant]]:
    final = state not in v.ACTIVE_STATES
    call = Call.objects.create(
        conversation=conversation,
        caller=caller,
        media=media,
        state=state,
        end_reason=end_reason,
        ended_by=caller if final else None,
        ring_expires_at=now + dt.timedelta(seconds=ring_timeout_seconds()),
        ended_at=now if final else None,
    )
    people = [
        CallParticipant(
            call=call,
            user=caller,
            role=Role.CALLER,
            state=PState.LEFT if final else PState.JOINED,
            device_id=device_id,
            channel_name="" if final else channel_name,
            joined_at=now,
            left_at=now if final else None,
        ),
        *(
            CallParticipant(
                call=call,
                user_id=uid,
                role=Role.CALLEE,
                state=PState.MISSED if final else PState.RINGING,
                left_at=now if final else None,
            )
            for uid in callee_ids
        ),
    ]
    CallParticipant.objects.bulk_create(people)
    return call, people


def call_start(
    *,
    caller: User,
    conversation_id: int,
    media: str,
    sdp: str,
    device_id: int | None = None,
    channel_name: str = "",
) -> StartResult:
    """``call.invite``: ring the other member of a direct conversation with the caller's offer.

    - Another call in the conversation is ringing the other way (glare): the call of the user
      with the lower id wins; the other is cancelled with reason ``glare`` (if that is this one,
      it is recorded already cancelled and returned).
    - Any other active call in the conversation: ``call_in_progress``.
    - The caller is in another call: ``already_in_call``. The callee is: the call is recorded as
      ``busy`` (and returned), with its entry in the history.
    """
    sdp = v.validate_sdp(sdp)
    conversation, callee_ids = check_can_call(caller=caller, conversation_id=conversation_id, media=media)
    now = timezone.now()
    with transaction.atomic():
        messaging.lock(conversation_id)
        list(User.objects.select_for_update().filter(pk__in=[caller.pk, *callee_ids]).order_by("pk"))
        existing = (
            Call.objects.select_for_update()
            .filter(conversation_id=conversation_id, state__in=v.ACTIVE_STATES)
            .first()
        )
        if existing is not None and existing.state == State.RINGING and existing.ring_expires_at <= now:
            _expire_ringing(_lock_call(existing.pk), now)  # overdue: its timer has not run yet
            existing = None
        if existing is not None:
            glare = existing.state == State.RINGING and existing.caller_id in callee_ids
            if not glare:
                raise ApplicationError(
                    "call_in_progress",
                    "This conversation already has a call.",
                    status=409,
                    extra={"call_id": existing.pk},
                )
            if existing.caller_id < caller.pk:  # theirs wins: ours is over before it starts
                call, people = _create(
                    conversation=conversation,
                    caller=caller,
                    callee_ids=callee_ids,
                    media=media,
                    state=State.CANCELLED,
                    end_reason="glare",
                    device_id=device_id,
                    channel_name=channel_name,
                    now=now,
                )
                return StartResult(call, selectors.call_data(call, people), callee_ids)
            loaded = _lock_call(existing.pk)
            assert loaded is not None
            _finish(loaded, state=State.CANCELLED, reason="glare", actor=None, now=now)
            _notify_callees(loaded, {"type": "call.cancel", "data": _ref(loaded, reason="glare")})
        if _in_a_call([caller.pk]):
            raise ApplicationError("already_in_call", "You are already in a call.", status=409)
        if _in_a_call(callee_ids):
            call, people = _create(
                conversation=conversation,
                caller=caller,
                callee_ids=callee_ids,
                media=media,
                state=State.BUSY,
                end_reason="busy",
                device_id=device_id,
                channel_name=channel_name,
                now=now,
            )
            _log_to_history(Loaded(call, people, people[0]))
            return StartResult(call, selectors.call_data(call, people), callee_ids)
        call, people = _create(
            conversation=conversation,
            caller=caller,
            callee_ids=callee_ids,
            media=media,
            state=State.RINGING,
            device_id=device_id,
            channel_name=channel_name,
            now=now,
        )
        data = selectors.call_data(call, people)
        messaging.fan_out_on_commit(
            user_ids=callee_ids, frame={"type": "call.invite", "data": {"call": data, "sdp": sdp}}
        )
        _queue("call_ring_timeout", call.pk, countdown=ring_timeout_seconds())
    logger.info("call %s: %s ringing in conversation %s", call.pk, media, conversation_id)
    return StartResult(call, data, callee_ids)


def call_ring_offline(*, call_id: int, user_ids: list[int]) -> list[int]:
    """Ring the devices of callees with no connected socket: a high-priority push."""
    from notifications import services as push

    call = Call.objects.filter(pk=call_id, state=State.RINGING).first()
    if call is None:
        return []
    return push.push_incoming_call(
        call_id=str(call.pk),
        conversation_id=call.conversation_id,
        caller_id=call.caller_id,
        callee_ids=user_ids,
    )


# --- Ringing, answering, refusing -------------------------------------------------------------------
def _ref(loaded: Loaded, **extra: Any) -> dict[str, Any]:
    return {"call_id": loaded.call.pk, **extra}


def _notify_callees(loaded: Loaded, frame: dict[str, Any]) -> None:
    for callee in loaded.callees:
        _to_participant(callee, frame)


def call_ringing(*, user: User, call_id: int) -> None:
    """``call.ringing``: a callee's device is ringing; the caller hears it once."""
    with transaction.atomic():
        loaded = _load(user=user, call_id=call_id, for_update=True)
        _require_role(loaded.me, Role.CALLEE, "ring")
        _require_ringing(loaded.call)
        if loaded.me.rang_at is not None:
            return
        loaded.me.rang_at = timezone.now()
        loaded.me.save(update_fields=["rang_at"])
        _to_participant(loaded.caller, {"type": "call.ringing", "data": _ref(loaded, user_id=user.pk)})


def call_accept(
    *, user: User, call_id: int, sdp: str, device_id: int | None = None, channel_name: str = ""
) -> Loaded:
    """``call.accept``: the first device to answer wins; the callee's other devices stop ringing
    (``call.answered_elsewhere``) and a late answer gets ``call_not_ringing``."""
    sdp = v.validate_sdp(sdp)
    now = timezone.now()
    with transaction.atomic():
        loaded = _load(user=user, call_id=call_id, for_update=True)
        call, me = loaded.call, loaded.me
        _require_role(me, Role.CALLEE, "answer")
        _require_ringing(call)
        overdue = call.ring_expires_at <= now
        if overdue:  # its timer has not run yet: it is missed, not answered
            _expire_ringing(loaded, now)
        else:
            call.state, call.answered_at = State.ACCEPTED, now
            call.save(update_fields=["state", "answered_at"])
            me.state, me.joined_at, me.device_id, me.channel_name = (
                PState.JOINED,
                now,
                device_id,
                channel_name,
            )
            me.save(update_fields=["state", "joined_at", "device_id", "channel_name"])
            accept = {"type": "call.accept", "data": _ref(loaded, user_id=user.pk, sdp=sdp)}
            _to_participant(loaded.caller, accept)
            messaging.fan_out_on_commit(
                user_ids=[user.pk],
                frame={"type": "call.answered_elsewhere", "data": _ref(loaded)},
                exclude_channel=channel_name or None,
            )
            _stop_ring_pushes(call)
    if overdue:
        raise ApplicationError("call_not_ringing", "This call was missed.", status=409)
    logger.info("call %s answered", call.pk)
    return loaded


def _reject(loaded: Loaded, user: User, channel_name: str) -> None:
    _require_role(loaded.me, Role.CALLEE, "reject")
    _require_ringing(loaded.call)
    _finish(loaded, state=State.REJECTED, reason="rejected", actor=user, acting_channel=channel_name)
    _to_participant(loaded.caller, {"type": "call.reject", "data": _ref(loaded, user_id=user.pk)})


def _cancel(loaded: Loaded, user: User, channel_name: str) -> None:
    _require_role(loaded.me, Role.CALLER, "cancel")
    _require_ringing(loaded.call)
    _finish(loaded, state=State.CANCELLED, reason="cancelled", actor=user, acting_channel=channel_name)
    _notify_callees(loaded, {"type": "call.cancel", "data": _ref(loaded, reason="cancelled")})


def call_reject(*, user: User, call_id: int, channel_name: str = "") -> Loaded:
    """``call.reject``: the callee declines a ringing call."""
    with transaction.atomic():
        loaded = _load(user=user, call_id=call_id, for_update=True)
        _reject(loaded, user, channel_name)
    return loaded


def call_cancel(*, user: User, call_id: int, channel_name: str = "") -> Loaded:
    """``call.cancel``: the caller gives up before an answer."""
    with transaction.atomic():
        loaded = _load(user=user, call_id=call_id, for_update=True)
        _cancel(loaded, user, channel_name)
    return loaded


def call_hangup(*, user: User, call_id: int, reason: str = "hangup", channel_name: str = "") -> Loaded:
    """``call.hangup``: end an answered call (``reason`` ``failed``: the media never connected).
    On a call still ringing it is the caller's cancel or the callee's reject."""
    if reason not in ("hangup", "failed"):
        raise ApplicationError("invalid_reason", "reason must be hangup or failed.")
    with transaction.atomic():
        loaded = _load(user=user, call_id=call_id, for_update=True)
        _require_active(loaded.call)
        if loaded.call.state == State.RINGING:
            if loaded.me.role == Role.CALLER:
                _cancel(loaded, user, channel_name)
            else:
                _reject(loaded, user, channel_name)
            return loaded
        failed = reason == "failed"
        _finish(
            loaded,
            state=State.FAILED if failed else State.ENDED,
            reason="media_failed" if failed else "hangup",
            actor=user,
            acting_channel=channel_name,
        )
        for other in loaded.others:
            _to_participant(
                other, {"type": "call.hangup", "data": _ref(loaded, user_id=user.pk, reason=reason)}
            )
    logger.info("call %s ended after %ss", loaded.call.pk, loaded.call.duration)
    return loaded


# --- Relaying signalling ----------------------------------------------------------------------------
def call_ice(*, user: User, call_id: int, candidate: dict[str, Any], channel_name: str) -> None:
    """``call.ice``: relay one trickled candidate, opaque, to the other side. While ringing, the
    caller's candidates go to every ringing device of the callee (each one answers with its own)."""
    candidate = v.validate_candidate(candidate)
    loaded = _load(user=user, call_id=call_id, for_update=False)
    _require_active(loaded.call)
    _require_call_socket(loaded.me, channel_name)
    frame = {"type": "call.ice", "data": _ref(loaded, user_id=user.pk, candidate=candidate)}
    for other in loaded.others:
        if other.state in (PState.JOINED, PState.RINGING):
            _to_participant(other, frame, on_commit=False)


def call_update(*, user: User, call_id: int, sdp: str, channel_name: str) -> None:
    """``call.update``: relay a renegotiation offer or answer (ICE restart after a network change,
    video switched on) between the two sockets of an answered call."""
    sdp = v.validate_sdp(sdp)
    loaded = _load(user=user, call_id=call_id, for_update=False)
    _require_active(loaded.call)
    if loaded.call.state != State.ACCEPTED:
        raise ApplicationError("call_not_active", "This call is not answered yet.", status=409)
    _require_call_socket(loaded.me, channel_name)
    for other in loaded.others:
        if other.state == PState.JOINED:
            _to_participant(
                other,
                {"type": "call.update", "data": _ref(loaded, user_id=user.pk, sdp=sdp)},
                on_commit=False,
            )


# --- Sockets that drop and come back ---------------------------------------------------------------
def call_socket_closed(*, user: User, channel_name: str, call_ids: list[int]) -> list[int]:
    """The socket ``channel_name`` closed. In an answered call the other side is told
    (``call.peer_disconnected``) and the call ends after ``CALL_RECONNECT_GRACE_SECONDS`` unless
    the device resumes; a caller whose socket closes while ringing cancels the call. Returns the
    ids of the calls affected."""
    affected: list[int] = []
    grace = reconnect_grace_seconds()
    still_here = set(  # without locks: most closing sockets are no longer in an active call
        CallParticipant.objects.filter(
            call_id__in=call_ids, user=user, channel_name=channel_name, call__state__in=v.ACTIVE_STATES
        ).values_list("call_id", flat=True)
    )
    for call_id in sorted(still_here):
        with transaction.atomic():
            try:
                loaded = _load(user=user, call_id=call_id, for_update=True)
            except NotFound:
                continue
            call, me = loaded.call, loaded.me
            if call.state not in v.ACTIVE_STATES or me.channel_name != channel_name:
                continue  # over, or this device already resumed on a new socket
            affected.append(call_id)
            if call.state == State.RINGING:
                _finish(loaded, state=State.CANCELLED, reason="caller_disconnected", actor=user)
                _notify_callees(
                    loaded, {"type": "call.cancel", "data": _ref(loaded, reason="caller_disconnected")}
                )
                continue
            me.channel_name, me.disconnected_at = "", timezone.now()
            me.save(update_fields=["channel_name", "disconnected_at"])
            for other in loaded.others:
                if other.state == PState.JOINED:
                    _to_participant(
                        other,
                        {
                            "type": "call.peer_disconnected",
                            "data": _ref(loaded, user_id=user.pk, grace_seconds=grace),
                        },
                    )
            _queue("call_reconnect_timeout", call.pk, user.pk, countdown=grace)
    return affected


def call_resume(*, user: User, call_id: int, device_id: int | None = None, channel_name: str = "") -> Loaded:
    """``call.resume``: this socket takes over the user's side of an answered call (after a
    reconnect). Only the device that is in the call may resume it."""
    with transaction.atomic():
        loaded = _load(user=user, call_id=call_id, for_update=True)
        call, me = loaded.call, loaded.me
        _require_active(call)
        if call.state != State.ACCEPTED or me.state != PState.JOINED:
            raise ApplicationError("call_not_active", "Only an answered call can be resumed.", status=409)
        if me.device_id is not None and me.device_id != device_id:
            raise PermissionDenied("Another device of yours is in this call.", code="not_call_device")
        was_away = me.disconnected_at is not None or me.channel_name != channel_name
        me.channel_name, me.disconnected_at = channel_name, None
        me.save(update_fields=["channel_name", "disconnected_at"])
        if was_away:
            for other in loaded.others:
                if other.state == PState.JOINED:
                    _to_participant(
                        other, {"type": "call.peer_resumed", "data": _ref(loaded, user_id=user.pk)}
                    )
    return loaded


# --- Timers (Celery tasks and the beat sweep call these) ------------------------------------------
def call_ring_timeout(*, call_id: int, now: dt.datetime | None = None) -> bool:
    """A ringing call past its ``ring_expires_at`` is missed: ``call.missed`` to both sides, an
    entry in the history and a push to the callee. Idempotent; True if it changed the call."""
    now = now or timezone.now()
    with transaction.atomic():
        loaded = _lock_call(call_id)
        if loaded is None or loaded.call.state != State.RINGING or loaded.call.ring_expires_at > now:
            return False
        _expire_ringing(loaded, now)
    return True


def _expire_ringing(loaded: Loaded | None, now: dt.datetime) -> None:
    if loaded is None:
        return
    _finish(loaded, state=State.MISSED, reason="timeout", actor=None, now=now, ended_frame=False)
    frame = {"type": "call.missed", "data": {"call": loaded.data()}}
    messaging.fan_out_on_commit(user_ids=[p.user_id for p in loaded.participants], frame=frame)
    logger.info("call %s missed", loaded.call.pk)


def call_reconnect_timeout(*, call_id: int, user_id: int, now: dt.datetime | None = None) -> bool:
    """End an answered call whose participant's socket stayed away past the grace period."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=reconnect_grace_seconds())
    with transaction.atomic():
        loaded = _lock_call(call_id)
        if loaded is None or loaded.call.state != State.ACCEPTED:
            return False
        gone = next((p for p in loaded.participants if p.user_id == user_id), None)
        if gone is None or gone.disconnected_at is None or gone.disconnected_at > cutoff:
            return False
        _finish(loaded, state=State.ENDED, reason="connection_lost", actor=None, now=now)
    logger.info("call %s ended: connection lost", call_id)
    return True


def calls_sweep(*, now: dt.datetime | None = None) -> int:
    """Beat: fire the timers whose tasks were lost (broker down) or never queued (eager mode)."""
    now = now or timezone.now()
    done = 0
    overdue = list(
        Call.objects.filter(state=State.RINGING, ring_expires_at__lte=now).values_list("pk", flat=True)[:500]
    )
    for call_id in overdue:
        done += call_ring_timeout(call_id=call_id, now=now)
    cutoff = now - dt.timedelta(seconds=reconnect_grace_seconds())
    dropped = list(
        CallParticipant.objects.filter(disconnected_at__lte=cutoff, call__state=State.ACCEPTED).values_list(
            "call_id", "user_id"
        )[:500]
    )
    for call_id, user_id in dropped:
        done += call_reconnect_timeout(call_id=call_id, user_id=user_id, now=now)
    return done


# --- Ending ---------------------------------------------------------------------------------------
def _finish(
    loaded: Loaded,
    *,
    state: str,
    reason: str,
    actor: User | None,
    acting_channel: str = "",
    now: dt.datetime | None = None,
    ended_frame: bool = True,
) -> None:
    """Make the call final (inside the caller's transaction, call row locked): participants
    leave, the history gets its entry, ring pushes are withdrawn, and (``ended_frame``) every
    device of every participant but the acting socket gets ``call.ended`` with the record."""
    now = now or timezone.now()
    call = loaded.call
    was_ringing = call.state == State.RINGING
    # The sockets to address before they are cleared below.
    sockets = {p.pk: p.channel_name for p in loaded.participants}
    call.state, call.end_reason, call.ended_at, call.ended_by = state, reason, now, actor
    if call.answered_at is not None:
        call.duration = max(0, int((now - call.answered_at).total_seconds()))
    call.save(update_fields=["state", "end_reason", "ended_at", "ended_by", "duration"])
    for p in loaded.participants:
        if p.state == PState.RINGING:
            p.state = (
                PState.DECLINED
                if state == State.REJECTED and actor and p.user_id == actor.pk
                else PState.MISSED
            )
        elif p.state == PState.JOINED:
            p.state = PState.LEFT
        p.left_at = p.left_at or now
        p.disconnected_at = None
        p.channel_name = ""
    CallParticipant.objects.bulk_update(
        loaded.participants, ["state", "left_at", "disconnected_at", "channel_name"]
    )
    for p in loaded.participants:  # callers of _finish still address the sockets of the call
        p.channel_name = sockets[p.pk]
    if ended_frame:
        messaging.fan_out_on_commit(
            user_ids=[p.user_id for p in loaded.participants],
            frame={"type": "call.ended", "data": {"call": loaded.data()}},
            exclude_channel=acting_channel or None,
        )
    if was_ringing:
        _stop_ring_pushes(call)
    if reason != "glare":
        _log_to_history(loaded)


def _stop_ring_pushes(call: Call) -> None:
    from notifications import services as push

    call_id = str(call.pk)
    transaction.on_commit(
        _safely("withdrawing the ring push", lambda: push.push_call_cancelled(call_id=call_id))
    )


def _log_to_history(loaded: Loaded) -> None:
    call = loaded.call
    messaging.call_log_message_create(
        conversation_id=call.conversation_id,
        actor=call.caller,
        payload={
            "call_id": call.pk,
            "media": call.media,
            "state": call.state,
            "end_reason": call.end_reason,
            "duration": call.duration,
        },
        notify=call.state in MISSED_FOR_CALLEE,
    )


# --- Account export (registered with accounts) ------------------------------------------------
def export_user_calls(user: User) -> list[dict[str, Any]]:
    """The calls ``user`` took part in, newest first, as ``GET /calls`` shows them (the other
    participants by id only: nothing the user could not already see)."""
    return [selectors.call_data(call) for call in selectors.call_list(user=user)]
