"""Races in the waiting room, in real threads with their own database connections: concurrent
admissions capture once; an admission, the doctor's cancel and the no-show sweep at the same
moment end the appointment exactly one way, with the money to match, and never deadlock (every
writer locks the consultation before the appointment)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from appointments import no_shows, services, waiting_room
from appointments.models import Appointment
from appointments.tests.factories import confirmed_appointment, move_start
from core.errors import ApplicationError
from payments import selectors as payment_selectors

pytestmark = pytest.mark.django_db(transaction=True)


def at_once(actions: list[Callable[[], Any]]) -> list[str]:
    """Run the actions in threads released together; each outcome is ``ok``, an error code, or
    ``unexpected ...`` (a deadlock or any other exception)."""
    barrier = threading.Barrier(len(actions))
    outcomes: list[str] = [""] * len(actions)

    def run(index: int, action: Callable[[], Any]) -> None:
        barrier.wait(timeout=120)
        try:
            action()
            outcomes[index] = "ok"
        except ApplicationError as exc:
            outcomes[index] = exc.code
        except Exception as exc:  # recorded, so a failure names it
            outcomes[index] = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    return outcomes


def waiting(stripe_fake: Any, *, started_ago: int) -> Appointment:
    appointment = confirmed_appointment(stripe_fake, starts_in=dt.timedelta(minutes=5))
    waiting_room.check_in(user=appointment.patient, appointment_id=appointment.pk)
    return move_start(appointment, starts_in=dt.timedelta(minutes=-started_ago))


def captures(stripe_fake: Any, appointment: Appointment) -> int:
    assert appointment.consultation is not None
    intent = appointment.consultation.payment_intent_id
    return len(stripe_fake.calls("POST", f"/v1/payment_intents/{intent}/capture"))


def test_concurrent_admissions_capture_once(stripe_fake):
    appointment = waiting(stripe_fake, started_ago=1)
    doctor = appointment.doctor
    outcomes = at_once(
        [lambda: waiting_room.admit(user=doctor, appointment_id=appointment.pk) for _ in range(4)]
    )
    assert outcomes == ["ok"] * 4, outcomes
    fresh = Appointment.objects.get(pk=appointment.pk)
    assert fresh.state == "admitted"
    assert [t.to_state for t in fresh.transitions.all()].count("admitted") == 1
    assert captures(stripe_fake, fresh) == 1
    assert fresh.consultation is not None
    assert payment_selectors.ledger_summary(consultation_id=fresh.consultation.pk).charge == 3000


@pytest.mark.parametrize("round_", range(3))
def test_admission_cancel_and_no_show_at_once_end_one_way(stripe_fake, round_):
    # 20 minutes after the start: the doctor's no-show is due, and the doctor admits or cancels.
    appointment = waiting(stripe_fake, started_ago=20)
    doctor = appointment.doctor
    outcomes = at_once(
        [
            lambda: waiting_room.admit(user=doctor, appointment_id=appointment.pk),
            lambda: services.appointment_cancel(user=doctor, appointment_id=appointment.pk),
            lambda: no_shows.doctor_no_show(appointment_id=appointment.pk),
        ]
    )
    assert not [o for o in outcomes if o.startswith("unexpected")], outcomes
    fresh = Appointment.objects.get(pk=appointment.pk)
    consultation = fresh.consultation
    assert consultation is not None
    ended = [t.to_state for t in fresh.transitions.all() if t.to_state != "checked_in"]
    assert fresh.state in ("admitted", "cancelled", "no_show_doctor"), fresh.state
    assert ended[-1] == fresh.state
    assert ended.count(fresh.state) == 1
    assert not {"admitted", "cancelled", "no_show_doctor"} - {fresh.state} & set(ended)
    summary = payment_selectors.ledger_summary(consultation_id=consultation.pk)
    intent = stripe_fake.payment_intent(consultation.payment_intent_id)
    if fresh.state == "admitted":
        assert outcomes[0] == "ok", outcomes
        assert (consultation.state, summary.charge, captures(stripe_fake, fresh)) == ("in_progress", 3000, 1)
    else:
        assert outcomes[0] == "appointment_closed", outcomes
        assert (summary.charge, captures(stripe_fake, fresh), intent["status"]) == (0, 0, "canceled")
