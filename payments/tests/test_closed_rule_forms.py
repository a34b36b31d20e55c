"""The closed rule is ONE decision (``selectors.consultation_closed``) reached through three forms
of the same query: the SQL statement run on Django's connection (the worker thread's writers and
every other path), the same statement run by the event loop's batch writer (``raw_pipeline`` on
its own async connection), and the ORM query of other databases. They must agree, for every
kind of consultation history, direct and group conversations and named recipients alike.
Plus the paths that share the send path's check: encrypted sends, and a group send taken by
the event loop's writer."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from accounts.models import User
from accounts.tests.factories import DeviceFactory, DoctorFactory, PatientFactory
from core.errors import ApplicationError
from groups import services as group_services
from messaging import batching, loop_writer, reach
from messaging import services as messaging
from messaging.models import Conversation, Message
from messaging.raw_pipeline import RawPipeline
from messaging.send_rules import registry
from messaging.tests.factories import send_item, send_together
from payments import selectors
from payments.models import Consultation
from payments.tests.factories import completed, people

NOW = timezone.now()
PAST, FUTURE = NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=1)

# (name, [(state, closes_at)] of one patient with one doctor, closed?)
HISTORIES: list[tuple[str, list[tuple[str, dt.datetime | None]], bool]] = [
    ("never consulted", [], False),
    ("completed, inside the window", [("completed", FUTURE)], False),
    ("completed, window over", [("completed", PAST)], True),
    ("window over, then a new request", [("completed", PAST), ("requested", None)], False),
    ("window over, then a paid one", [("completed", PAST), ("paid", None)], False),
    ("window over, then one accepted", [("completed", PAST), ("accepted", None)], False),
    ("window over, then one in progress", [("completed", PAST), ("in_progress", None)], False),
    ("window over, a later one inside its window", [("completed", PAST), ("completed", FUTURE)], False),
    ("window over, then one cancelled", [("completed", PAST), ("cancelled", None)], True),
    (
        "window over, then one declined and one expired",
        [("completed", PAST), ("declined", None), ("expired", None)],
        True,
    ),
    ("refunded only", [("refunded", None)], False),
    ("declined only", [("declined", None)], False),
]


def test_the_decision_itself() -> None:
    for name, history, closed in HISTORIES:
        assert selectors.consultation_closed(history, NOW) is closed, name


def _consultation(
    patient: User, doctor: User, conversation: Conversation, state: str, closes_at: Any
) -> None:
    times: dict[str, Any] = {}
    if state in ("accepted", "in_progress", "completed"):
        times["accepted_at"] = NOW - dt.timedelta(days=10)
    if state == "completed":
        times.update(completed_at=closes_at - dt.timedelta(days=7), closes_at=closes_at)
    if state in ("declined", "cancelled", "expired", "refunded"):
        times["ended_at"] = NOW - dt.timedelta(days=20)
    Consultation.objects.create(
        patient=patient,
        doctor=doctor,
        kind="chat",
        state=state,
        price=3000,
        currency="GBP",
        platform_fee=450,
        conversation=conversation,
        provider="development",
        expires_at=NOW + dt.timedelta(hours=1),
        **times,
    )


def _world() -> tuple[list[reach.Reach], list[bool]]:
    """For each history: a direct send, a group send, and a reach named by recipient (a new
    group with the doctor), each with its expected refusal; plus a doctor's reaches (never)."""
    reaches: list[reach.Reach] = []
    expected: list[bool] = []
    for _name, history, closed in HISTORIES:
        patient, doctor = PatientFactory.create(), DoctorFactory.create()
        direct, _ = messaging.conversation_open_direct(user=patient, peer_id=doctor.pk)
        for state, closes_at in history:
            _consultation(patient, doctor, direct, state, closes_at)
        bystander = DoctorFactory.create()
        group = Conversation.objects.create(kind=Conversation.Kind.GROUP, name="g", created_by=patient)
        for member in (patient, doctor, bystander):
            group.memberships.create(user=member, role="member")
        reaches += [
            reach.Reach(patient, direct.pk),
            reach.Reach(patient, group.pk),
            reach.Reach(patient, None, (bystander.pk, doctor.pk)),
            reach.Reach(patient, None, (bystander.pk,)),
            reach.Reach(doctor, direct.pk),
            reach.Reach(doctor, None, (patient.pk,)),
        ]
        expected += [closed, closed, closed, False, False, False]
    return reaches, expected


async def _through_the_loop_writers_pipeline(statement: Any) -> Any:
    conn = await psycopg.AsyncConnection.connect(**loop_writer.connection_params(), autocommit=True)
    try:
        (rows,) = await RawPipeline(conn).round_trip([(statement.sql, statement.params)])
    finally:
        await conn.close()
    return statement.answer(rows)


@pytest.mark.django_db(transaction=True)
async def test_the_three_forms_agree_with_the_decision() -> None:
    reaches, expected = await sync_to_async(_world)()
    wanted = {i for i, refused in enumerate(expected) if refused}

    thread = await sync_to_async(selectors.consultation_reach_rule)(reaches)
    orm = await sync_to_async(selectors.consultation_reach_rule_orm)(reaches)
    statement = selectors.consultation_reach_statement(reaches)
    assert statement is not None
    loop = await _through_the_loop_writers_pipeline(statement)

    assert set(thread) == wanted
    assert set(orm) == wanted
    assert set(loop) == wanted
    assert {e.code for e in [*thread.values(), *orm.values(), *loop.values()]} == {"consultation_closed"}
    assert all(e.status == 403 for e in thread.values())


@pytest.mark.django_db
def test_the_rule_is_registered_and_asked_once_per_batch(django_assert_num_queries: Any) -> None:
    assert selectors.CONSULTATION_CLOSED_RULE in registry.rules
    patients = [PatientFactory.create() for _ in range(3)]
    doctor = DoctorFactory.create()
    with django_assert_num_queries(1):
        assert reach.refusals([reach.Reach(p, None, (doctor.pk,)) for p in patients]) == {}
    with django_assert_num_queries(0):  # nobody a patient: nothing to ask
        assert reach.refusals([reach.Reach(doctor, None, (patients[0].pk,))]) == {}


@pytest.mark.django_db
def test_an_encrypted_send_is_refused_too(stripe_fake: Any) -> None:
    patient, doctor = people()
    conversation, _ = messaging.conversation_open_direct(user=patient, peer_id=doctor.pk, e2ee=True)
    consultation = completed(patient, doctor, stripe_fake)
    assert consultation.conversation_id == conversation.pk
    device = DeviceFactory.create(user=patient)
    Consultation.objects.filter(pk=consultation.pk).update(closes_at=timezone.now() - dt.timedelta(minutes=1))
    with pytest.raises(ApplicationError) as info:
        messaging.message_send(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body=None,
            ciphertexts={"1": base64.b64encode(b"sealed").decode()},
            sender_device_id=device.pk,
        )
    assert info.value.code == "consultation_closed"
    assert not Message.objects.filter(conversation=conversation).exists()


@pytest.mark.django_db(transaction=True)
async def test_a_group_send_on_the_loop_writer_is_refused_and_handed_over(
    stripe_fake: Any, queued_pushes: list[list[int]]
) -> None:
    def setup() -> tuple[User, User, int]:
        patient, doctor = people()
        consultation = completed(patient, doctor, stripe_fake)
        group = group_services.group_create(creator=patient, name="Family", member_ids=[doctor.pk])
        Consultation.objects.filter(pk=consultation.pk).update(
            closes_at=timezone.now() - dt.timedelta(minutes=1)
        )
        return patient, doctor, group.pk

    patient, doctor, group_id = await sync_to_async(setup)()
    batcher = batching.SendBatcher()
    await send_together(batcher, [send_item(doctor, group_id, "warm")])  # the group's kind learnt
    results = await send_together(
        batcher, [send_item(patient, group_id, "refused"), send_item(doctor, group_id, "fine")]
    )
    assert batcher.loop_writer.handed_over == 1
    assert getattr(results[0], "code", None) == "consultation_closed"
    assert results[1].created
    bodies = await sync_to_async(
        lambda: list(
            Message.objects.filter(conversation_id=group_id, kind="text").values_list("body", flat=True)
        )
    )()
    assert sorted(bodies) == ["fine", "warm"]
    await batcher.loop_writer.close()
