"""A send rule written once, in this test module, and registered the one way every app registers
(``messaging.send_rules.registry``): it runs on the event loop's writer, on the worker thread's
writer and on the single send, with the same outcome for the same input."""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured

from core.errors import ApplicationError, PermissionDenied
from messaging import batching, services
from messaging.models import Message
from messaging.reach import Reach
from messaging.send_rules import BatchStatement, ReachRule, refusals_of, registry
from messaging.tests.factories import pair, send_item, send_together

pytestmark = pytest.mark.django_db(transaction=True)

# The rule: a muted sender's content reaches nobody. What it decides, per writer that asked.
MUTED: set[int] = set()
ASKED: list[str] = []

_MUTED_SQL = """
SELECT t.ord FROM unnest(%(ord)s::int[], %(sender)s::bigint[]) AS t(ord, sender)
WHERE t.sender = ANY(%(muted)s::bigint[])
"""


def _refused(ords: Sequence[int]) -> dict[int, ApplicationError]:
    return {int(o): PermissionDenied("This sender is muted.", code="muted_for_test") for o in ords}


def _asker() -> str:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "thread"
    return "loop"


def muted_statement(reaches: Sequence[Reach]) -> BatchStatement | None:
    def answer(rows: list[tuple[Any, ...]]) -> dict[int, ApplicationError]:
        ASKED.append(_asker())
        return _refused([row[0] for row in rows])

    return BatchStatement(
        _MUTED_SQL,
        {
            "ord": list(range(len(reaches))),
            "sender": [r.sender.pk for r in reaches],
            "muted": sorted(MUTED),
        },
        answer,
    )


def muted_orm(reaches: Sequence[Reach]) -> dict[int, ApplicationError]:
    ASKED.append("orm")
    return _refused([i for i, r in enumerate(reaches) if r.sender.pk in MUTED])


MUTED_RULE = ReachRule(name="tests.muted", statement=muted_statement, orm=muted_orm)


@pytest.fixture(autouse=True)
def muted_rule(queued_pushes: list[list[int]]) -> Iterator[None]:
    MUTED.clear()
    ASKED.clear()
    with registry.replaced(rules=[*registry.rules, MUTED_RULE]):
        yield


def outcome(results: Sequence[Any]) -> list[Any]:
    """Each send's outcome, comparable across conversations: its seq, or its error code."""
    return [r.data["seq"] if isinstance(r, services.SendResult) else r.code for r in results]


async def on_the_loop(sends: Any) -> tuple[list[Any], batching.SendBatcher]:
    batcher = batching.SendBatcher()
    try:
        results = await send_together(batcher, sends)
    finally:
        await batcher.loop_writer.close()
    return results, batcher


async def test_an_accepting_rule_runs_on_both_writers_with_the_same_outcome() -> None:
    patient, doctor, first = await sync_to_async(pair)()
    # A batch written on the event loop (the conversation's kind is learnt first, once).
    sends = [send_item(patient, first.pk, "a"), send_item(doctor, first.pk, "b")]
    loop_results, batcher = await on_the_loop(sends)
    assert (batcher.loop_writer.batches, batcher.loop_writer.handed_over) == (1, 0)
    assert ASKED == ["loop"]  # the rule's statement ran in the loop writer's round trip

    ASKED.clear()
    other_patient, other_doctor, second = await sync_to_async(pair)()
    thread_results = await sync_to_async(services.message_send_many)(
        requests=[send_item(other_patient, second.pk, "a"), send_item(other_doctor, second.pk, "b")]
    )
    assert ASKED == ["thread"]  # the same statement, on Django's connection
    assert outcome(loop_results) == outcome(thread_results) == [1, 2]


async def test_a_refusing_rule_gives_the_same_outcome_on_every_writer() -> None:
    patient, doctor, first = await sync_to_async(pair)()
    MUTED.add(patient.pk)
    sends = [
        send_item(patient, first.pk, "a"),
        send_item(doctor, first.pk, "b"),
        send_item(patient, first.pk, "c"),
    ]
    loop_results, batcher = await on_the_loop(sends)
    # The loop writer asked the rule in its first round trip, saw a refusal, rolled back and
    # handed the batch to the thread's writer, which asked the same statement again.
    assert ASKED[:2] == ["loop", "thread"]
    assert batcher.loop_writer.handed_over == 1

    other_patient, other_doctor, second = await sync_to_async(pair)()
    MUTED.add(other_patient.pk)
    ASKED.clear()
    thread_results = await sync_to_async(services.message_send_many)(
        requests=[
            send_item(other_patient, second.pk, "a"),
            send_item(other_doctor, second.pk, "b"),
            send_item(other_patient, second.pk, "c"),
        ]
    )
    assert "thread" in ASKED
    expected = ["muted_for_test", 1, "muted_for_test"]
    assert outcome(loop_results) == outcome(thread_results) == expected

    # The single send (the encrypted path's and the commands' way in) asks it too.
    ASKED.clear()
    with pytest.raises(ApplicationError) as refused:
        await sync_to_async(services.send)(
            services.SendRequest(sender=patient, conversation_id=first.pk, client_id=uuid.uuid4(), body="d")
        )
    assert refused.value.code == "muted_for_test"
    assert ASKED == ["thread"]
    stored = await sync_to_async(
        lambda: sorted(
            Message.objects.filter(conversation_id__in=[first.pk, second.pk]).values_list("body", flat=True)
        )
    )()
    assert stored == ["b", "b"]  # nothing refused was stored, on any writer


def test_a_rule_without_both_forms_is_refused_at_registration() -> None:
    with pytest.raises(ImproperlyConfigured):
        registry.register_rule(muted_orm)  # type: ignore[arg-type]  # a bare function: no statement
    with pytest.raises(TypeError):
        ReachRule(name="tests.half", statement=muted_statement)  # type: ignore[call-arg]
    with pytest.raises(ImproperlyConfigured):  # two different rules under one name
        registry.register_rule(ReachRule(name="tests.muted", statement=muted_statement, orm=lambda r: {}))


async def test_message_committed_fires_on_every_writer_with_the_hooks_registered() -> None:
    """``message_committed`` does not depend on which written hooks are registered: the push
    outbox hook is (notifications), and every writer still announces every message."""
    assert registry.hooks  # the push outbox
    seen: list[tuple[int, list[int]]] = []

    def receiver(*, message_id: int, recipient_ids: list[int], **_: Any) -> None:
        seen.append((message_id, sorted(recipient_ids)))

    services.message_committed.connect(receiver, dispatch_uid="tests.committed")
    try:
        patient, doctor, first = await sync_to_async(pair)()
        loop_results, batcher = await on_the_loop([send_item(patient, first.pk, "a")])
        assert batcher.loop_writer.batches == 1
        for _ in range(100):  # the loop writer announces from a worker thread
            if seen:
                break
            await asyncio.sleep(0.05)
        thread_results = await sync_to_async(services.message_send_many)(
            requests=[send_item(doctor, first.pk, "b")]
        )
        single = await sync_to_async(services.send)(
            services.SendRequest(sender=patient, conversation_id=first.pk, client_id=uuid.uuid4(), body="c")
        )
    finally:
        services.message_committed.disconnect(dispatch_uid="tests.committed")
    results = [loop_results[0], thread_results[0], single]
    ids = [r.data["id"] for r in results if isinstance(r, services.SendResult)]
    assert seen == [(ids[0], [doctor.pk]), (ids[1], [patient.pk]), (ids[2], [doctor.pk])]


# --- Messaging's own checks: registered like any rule, the same outcome on every writer -----
def _case(name: str) -> tuple[services.SendRequest, Any]:
    """A send that ``name``'s check refuses (or, for the client_id, answers with the
    original), and the outcome every writer must give it."""
    from accounts.tests.factories import PatientFactory
    from messaging.models import Block, Conversation

    patient, doctor, conversation = pair()
    request = send_item(patient, conversation.pk, "x")
    if name == "messaging.member":
        return send_item(PatientFactory.create(), conversation.pk, "x"), "conversation_not_found"
    if name == "messaging.e2ee":
        Conversation.objects.filter(pk=conversation.pk).update(e2ee=True)
        return request, "e2ee_required"
    if name == "messaging.not_blocked":
        Block.objects.create(blocker=doctor, blocked=patient)
        return request, "blocked"
    if name == "messaging.reply_to":
        _p, _d, elsewhere = pair()
        other = services.send(send_item(_p, elsewhere.pk, "elsewhere"))
        return services.SendRequest(
            sender=patient,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4(),
            body="x",
            reply_to=other.data["id"],
        ), "invalid_reply_to"
    assert name == "messaging.client_id_first_use"
    services.send(request)
    return request, 1  # the original (seq 1), not a new message


@pytest.mark.parametrize("check", [c.name for c in services.SEND_CHECKS])
async def test_each_of_messagings_own_checks_gives_the_same_outcome_on_every_writer(check: str) -> None:
    from django.db import transaction

    assert [c.name for c in registry.checks][: len(services.SEND_CHECKS)] == [
        c.name for c in services.SEND_CHECKS
    ]  # registered in the one registry (MessagingConfig.ready), first
    outcomes = {}
    request, expected = await sync_to_async(_case)(check)
    loop_results, _batcher = await on_the_loop([request])
    outcomes["loop"] = outcome(loop_results)
    request, _ = await sync_to_async(_case)(check)
    outcomes["thread"] = outcome(await sync_to_async(services.message_send_many)(requests=[request]))
    request, _ = await sync_to_async(_case)(check)
    try:
        outcomes["single"] = outcome([await sync_to_async(services.send)(request)])
    except ApplicationError as exc:
        outcomes["single"] = [exc.code]

    def orm_writer() -> list[Any]:  # the ORM forms (other databases), run here on PostgreSQL
        request, _ = _case(check)
        try:
            with transaction.atomic():
                services.write_message_orm(
                    sender=request.sender,
                    conversation_id=request.conversation_id,
                    cid=uuid.UUID(str(request.client_id)),
                    text="x",
                    reply_to=request.reply_to,
                )
        except services.DuplicateSend:
            return [1]  # the caller returns the original: seq 1
        except ApplicationError as exc:
            return [exc.code]
        return ["written"]

    outcomes["orm"] = await sync_to_async(orm_writer)()
    assert outcomes == {key: [expected] for key in ["loop", "thread", "single", "orm"]}


async def test_the_encrypted_send_runs_the_same_checks() -> None:
    """A send with ciphertexts to a plaintext conversation: the e2ee check's refusal, from the
    same statement (its ``enc`` input)."""
    patient, _doctor, conversation = await sync_to_async(pair)()
    with pytest.raises(ApplicationError) as refused:
        await sync_to_async(services.send)(
            services.SendRequest(
                sender=patient,
                conversation_id=conversation.pk,
                client_id=uuid.uuid4(),
                ciphertexts={"1": "AAAA"},
                sender_device_id=1,
            )
        )
    assert refused.value.code == "e2ee_not_enabled"


# --- Every rule in the registry, whoever registered it (payments' consultation rule too) ------
def _registered_rule_cases() -> list[tuple[str, str]]:
    """(rule, case) for every rule registered at start-up (not the test module's own rule): the
    cases are the registering app's (``<app>.tests.send_rule_cases.CASES``); a rule with none
    is a case of its own, which fails (a new rule must say what it refuses)."""
    params = []
    for rule in registry.rules:
        cases = _cases_of(rule.name)
        params += [(rule.name, label) for label, _build in cases] or [(rule.name, "(no case)")]
    return params


def _cases_of(rule_name: str) -> list[tuple[str, Any]]:
    app = rule_name.split(".", 1)[0]
    try:
        module = importlib.import_module(f"{app}.tests.send_rule_cases")
    except ModuleNotFoundError:
        return []
    cases: list[tuple[str, Any]] = module.CASES.get(rule_name, [])
    return cases


REGISTERED_RULE_CASES = _registered_rule_cases()


def test_the_loop_covers_the_rules_other_apps_register() -> None:
    covered = {rule for rule, _label in REGISTERED_RULE_CASES}
    assert covered == {rule.name for rule in registry.rules} - {MUTED_RULE.name}  # the module's own
    assert "payments.consultation_closed" in covered  # registered by PaymentsConfig.ready


@pytest.mark.parametrize(("rule_name", "label"), REGISTERED_RULE_CASES)
async def test_every_registered_rule_gives_the_same_outcome_on_every_writer(
    rule_name: str, label: str
) -> None:
    """The rule alone in the registry (so its own answer is what is compared): the loop
    writer, the thread writer, the single send, and its ORM form (other databases; run here on
    PostgreSQL beside its statement) give the case's outcome."""
    rule = next(r for r in registry.rules if r.name == rule_name)
    builds = dict(_cases_of(rule_name))
    assert label in builds, f"{rule_name}: add its cases to its app's tests/send_rule_cases.py"
    build = builds[label]
    outcomes: dict[str, list[Any]] = {}
    with registry.replaced(rules=[rule]):
        request, expected = await sync_to_async(build)()
        loop_results, _batcher = await on_the_loop([request])
        outcomes["loop"] = outcome(loop_results)
        request, _ = await sync_to_async(build)()
        outcomes["thread"] = outcome(await sync_to_async(services.message_send_many)(requests=[request]))
        request, _ = await sync_to_async(build)()
        try:
            outcomes["single"] = outcome([await sync_to_async(services.send)(request)])
        except ApplicationError as exc:
            outcomes["single"] = [exc.code]

        def statement_and_orm() -> tuple[list[Any], list[Any]]:
            request, _ = build()
            reaches = [Reach(request.sender, request.conversation_id)]
            stmt = rule.statement(reaches)
            by_statement = {} if stmt is None else refusals_of(stmt)
            by_orm = rule.orm(reaches)

            def as_outcome(refused: dict[int, ApplicationError]) -> list[Any]:
                return [refused[0].code] if 0 in refused else [1]  # allowed: the send's seq 1

            return as_outcome(by_statement), as_outcome(by_orm)

        outcomes["statement"], outcomes["orm"] = await sync_to_async(statement_and_orm)()
    assert outcomes == {key: [expected] for key in ["loop", "thread", "single", "statement", "orm"]}
