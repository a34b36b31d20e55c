"""Group commit: the plaintext sends (``SendRequest``) of many sockets in one transaction.

Two executors of the same statements: the worker thread's writer here (Django's connection,
``message_send_many``) and the event loop's (``messaging.loop_writer``, its own pipelined
connection). The statements: ``LOCK_BATCH_SQL`` (the conversations, in id order),
``statements.send_statement`` (the registered checks, the numbering and the writes of the batch), the
registered rules' and hooks' statements (``messaging.send_rules``), and the answer of the send
statement read by one function, ``batch_outcome`` (results, fan-outs, what was written)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from accounts.models import User
from core.errors import ApplicationError, NotFound
from messaging import reach, selectors
from messaging import validators as v
from messaging.reach import Reach
from messaging.send_rules import HookFailed, Written, first_refusal, registry

from .events import Committed, announce_committed, fan_out
from .mentions import mentions_json
from .send import (
    DuplicateSend,
    SendRequest,
    SendResult,
    original_send,
    plain_text,
    send_in_transaction,
)
from .statements import LOCK_BATCH_SQL, send_statement

logger = logging.getLogger("healthchat.messaging")


GENERIC_PLANS_SQL = "SET LOCAL plan_cache_mode = force_generic_plan"

# The kinds of conversations (they never change), without a lock: the loop writer learns a
# conversation's kind before its first batch, so that batch's rules share the first round trip.
KINDS_SQL = "SELECT id, kind, direct_key FROM messaging_conversation WHERE id = ANY(%(ids)s::bigint[])"


class BatchConflict(Exception):
    """The batch's transaction is undone and redone send by send: a concurrent send took a
    client_id between the check and the insert (the seqs already numbered would leave a gap),
    or a batch hook failed (the slow path runs hooks in savepoints, so a failing hook never
    undoes the messages)."""


class Prepared(NamedTuple):
    """A send of the batch, validated: its slot (index) in the batch, the request, its client_id, its
    attachments and its text."""

    slot: int
    request: SendRequest
    cid: uuid.UUID
    attachment_ids: list[int]
    text: str


# An earlier use of a client_id, answered after the batch with the original: (index, request, cid).
Duplicate = tuple[int, SendRequest, uuid.UUID]


Refusals = Callable[[], dict[int, Exception]]


def _drop_refused(
    entries: list[Prepared], results: list[SendResult | Exception | None], refusals: Refusals | None
) -> list[Prepared]:
    """Entries the caller's limit (``refusals``: ``{index in the batch: error}``) lets through;
    the others get their error."""
    refused = refusals() if refusals is not None else {}
    if not refused:
        return entries
    kept: list[Prepared] = []
    for entry in entries:
        error = refused.get(entry.slot)
        if error is None:
            kept.append(entry)
        else:
            results[entry.slot] = error
    return kept


def message_send_many(
    *, requests: Sequence[SendRequest], refusals: Refusals | None = None
) -> list[SendResult | Exception]:
    """Group commit: plaintext sends of many sockets in ONE transaction (one COMMIT, one thread
    hop), each refused send without undoing the others.

    Each request is a plaintext send (``SendRequest``). On PostgreSQL the whole batch is a few
    statements (lock the conversations in ascending id order, so batches cannot deadlock; one
    statement that checks, numbers and writes every send; the batch hooks); sends with
    attachments, and other databases, take one savepoint per send. A socket's own sends keep
    their order. A result is the ``SendResult`` or the exception that refused that send.
    Nothing is acked before the commit. ``refusals`` (the send limit) is asked once the
    transaction has begun and locked, before anything is written: sends it refuses are not
    stored.
    """
    results: list[SendResult | Exception | None] = [None] * len(requests)
    prepared: list[Prepared] = []
    for index, item in enumerate(requests):
        try:
            cid = v.validate_client_id(item.client_id)
            ids = v.validate_attachment_ids(item.attachment_ids)
            prepared.append(Prepared(index, item, cid, ids, plain_text(item.body, ids)))
        except ApplicationError as exc:
            results[index] = exc
    duplicates: list[Duplicate] = []
    if prepared:
        batched = connection.vendor == "postgresql"
        if batched:
            try:
                try:
                    _write_batch(prepared, results, duplicates, refusals)
                except OperationalError:
                    if connection.in_atomic_block or not _retry_on_fresh_connection(
                        prepared, results, duplicates
                    ):
                        raise
                    _write_batch(prepared, results, duplicates, refusals)
            except BatchConflict:
                for index, *_ in prepared:
                    results[index] = None
                duplicates.clear()
                batched = False
        if not batched:
            _write_one_by_one(_drop_refused(prepared, results, refusals), results, duplicates)
    for index, item, cid in duplicates:
        try:
            results[index] = original_send(item.sender, cid, item.conversation_id)
        except ApplicationError as exc:
            results[index] = exc
    return [
        r if r is not None else ApplicationError("internal_error", "Not processed.", status=500)
        for r in results
    ]


def _retry_on_fresh_connection(
    prepared: list[Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[Duplicate],
) -> bool:
    """After the batch's connection failed (closed by the server: a restart, a failover, an
    idle connection terminated while pooled), whether to run the batch once more on a new one:
    nothing of it can have been committed unless the failure hit the COMMIT itself, and even
    then its sends come back as the originals (client_id). Sends refused before the failure
    keep their refusal."""
    if connection.is_usable():
        return False  # not a dead connection: an error the retry would meet again
    connection.close()
    for index, *_ in prepared:
        results[index] = None
    duplicates.clear()
    logger.warning("batch's database connection was closed; retrying the batch on a new one")
    return True


def _run_batch_hooks(written: list[Written], *, guarded: bool = True) -> None:
    """The registered written hooks in the batch's transaction (``registry.run_hooks``: the
    statements the loop writer runs too); unguarded, a failure redoes the batch guarded."""
    try:
        registry.run_hooks(written, guarded=guarded)
    except HookFailed as exc:
        raise BatchConflict from exc


@contextmanager
def _batch_transaction() -> Iterator[None]:
    """``transaction.atomic()`` for a batch of savepoints that raises instead of rolling back
    silently. A savepoint that cannot be rolled back (the connection died inside it) marks the
    whole transaction for rollback, and Django then ends the block with a ROLLBACK and no
    exception: the sends already written in it would be acked without being stored."""
    with transaction.atomic():
        yield
        if transaction.get_rollback():
            raise DatabaseError("the batch's transaction was lost (connection closed)")


def _write_one_by_one(
    prepared: list[Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[Duplicate],
) -> None:
    """The batch in one transaction, one savepoint per send."""
    written: list[Written] = []
    with _batch_transaction():
        for index, item, cid, ids, text in sorted(prepared, key=lambda p: p.request.conversation_id):
            _write_in_savepoint(index, item, cid, ids, text, results, duplicates, written)
        if written:
            _run_batch_hooks(written)


def _write_in_savepoint(
    index: int,
    item: SendRequest,
    cid: uuid.UUID,
    ids: list[int],
    text: str,
    results: list[SendResult | Exception | None],
    duplicates: list[Duplicate],
    written: list[Written],
) -> None:
    try:
        with transaction.atomic():
            result = send_in_transaction(
                sender=item.sender,
                conversation_id=item.conversation_id,
                cid=cid,
                text=text,
                reply_to=item.reply_to,
                attachment_ids=ids,
                origin_channel=item.origin_channel,
                mentions=item.mentions,
            )
            written.append((result.message.pk, item.conversation_id, item.sender.pk))
            results[index] = result
    except (IntegrityError, DuplicateSend):
        duplicates.append((index, item, cid))
    except Exception as exc:  # this send is refused; the savepoint undid it
        results[index] = exc


@contextmanager
def _pipeline() -> Iterator[None]:
    """psycopg's pipeline mode for the statements in the block (sent without waiting for each
    reply; one round trip until a result is fetched)."""
    # The health check (CONN_HEALTH_CHECKS: a SELECT 1 on a reused connection) before the
    # pipeline: inside it, the check's query would still be pending when Django sets autocommit.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if raw is None or not hasattr(raw, "pipeline"):
        yield
        return
    # An error can surface when the pipeline syncs, outside Django's cursor wrappers: wrapped
    # here too, so it becomes Django's exception and a broken connection is marked (closed at
    # the end of the thread hop instead of failing the next batch as well).
    with connection.wrap_database_errors, raw.pipeline():
        yield


# The kind and direct_key of conversations this process has locked before (they never change):
# with them known, a batch's locks, send statement and reach rules share one round trip.
_KINDS_MAX = 100_000
known_kinds: dict[int, tuple[str, str | None]] = {}


def remember_kinds(asked: set[int], locked: dict[int, tuple[str, str | None]]) -> None:
    """What the locks answered: the kinds of the conversations found; the others are gone."""
    for conversation_id in asked - set(locked):
        known_kinds.pop(conversation_id, None)
    if len(known_kinds) + len(locked) > _KINDS_MAX:
        known_kinds.clear()
    known_kinds.update(locked)


def _write_batch(
    prepared: list[Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[Duplicate],
    refusals: Refusals | None = None,
) -> None:
    """PostgreSQL group commit: lock, limit, rules, one statement for the plain sends, hooks,
    commit, pipelined (psycopg's pipeline mode spans the commit, so the hooks' statements and
    the COMMIT share one round trip): two round trips for a batch whose conversations this
    process has seen before, else three or four."""
    written: list[Written] = []
    first_use: set[tuple[int, uuid.UUID]] = set()
    fresh: list[Prepared] = []
    for entry in prepared:
        key = (entry.request.sender.pk, entry.cid)
        if key in first_use:  # the same send twice in one batch: the later one returns the first
            duplicates.append((entry.slot, entry.request, entry.cid))
        else:
            first_use.add(key)
            fresh.append(entry)
    known = not any(e.attachment_ids for e in fresh) and all(
        e.request.conversation_id in known_kinds for e in fresh
    )
    with _pipeline(), _batch_transaction():
        if known:
            written += _write_known_batch(fresh, results, duplicates, refusals)
        else:
            written += _write_locked_batch(fresh, results, duplicates, refusals)
        if written:
            _run_batch_hooks(written, guarded=False)


def _begin_and_lock(cursor: Any, fresh: list[Prepared]) -> None:
    # The batch's statements are prepared after a few uses (DATABASE_PREPARE_THRESHOLD); a
    # generic plan spares planning them again for every batch (the default would re-plan the
    # send statement each time, its array parameters making the generic plan look dearer).
    cursor.execute(GENERIC_PLANS_SQL)
    cursor.execute(LOCK_BATCH_SQL, {"ids": sorted({e.request.conversation_id for e in fresh})})


def _write_known_batch(
    fresh: list[Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[Duplicate],
    refusals: Refusals | None,
) -> list[Written]:
    """One round trip: BEGIN, the locks, the send statement and the reach rules' queries
    (taken when the kinds are remembered from earlier batches), then the answers. A send a rule
    refuses was written already: the batch is undone and redone send by send (rules refuse
    rarely: a patient writing after the consultation closed)."""
    with connection.cursor() as lock_cursor, connection.cursor() as send_cursor:
        _begin_and_lock(lock_cursor, fresh)
        plain = _drop_refused(fresh, results, refusals)
        if not plain:
            lock_cursor.fetchall()
            return []
        now = _execute_plain_batch(send_cursor, plain)
        ruled = reach.refusals(send_reaches(plain))  # its query's answer ends the round trip
        locked = {int(row[0]): (row[1], row[2]) for row in lock_cursor.fetchall()}
        rows = sorted(send_cursor.fetchall())
    remember_kinds({e.request.conversation_id for e in fresh}, locked)
    if ruled:
        raise BatchConflict
    return _plain_batch_results(plain, rows, now, results, duplicates)


def _write_locked_batch(
    fresh: list[Prepared],
    results: list[SendResult | Exception | None],
    duplicates: list[Duplicate],
    refusals: Refusals | None,
) -> list[Written]:
    """BEGIN and the locks first (their answer names each conversation's kind), then the rules,
    the send statement, and the sends with attachments one by one."""
    written: list[Written] = []
    with connection.cursor() as cursor:
        _begin_and_lock(cursor, fresh)
        locked = {int(row[0]): (row[1], row[2]) for row in cursor.fetchall()}
    remember_kinds({e.request.conversation_id for e in fresh}, locked)
    fresh = _drop_refused(fresh, results, refusals)
    one_by_one = {e.request.conversation_id for e in fresh if e.attachment_ids}  # sends with attachments
    plain: list[Prepared] = []
    slow: list[Prepared] = []
    for entry in fresh:
        conversation_id = entry.request.conversation_id
        if conversation_id not in locked:
            results[entry.slot] = NotFound("No such conversation.", code="conversation_not_found")
        elif conversation_id in one_by_one:
            slow.append(entry)
        else:
            plain.append(entry)
    plain = _apply_reach_rules(plain, results)
    if plain:
        with connection.cursor() as cursor:
            now = _execute_plain_batch(cursor, plain)
            rows = sorted(cursor.fetchall())
        written += _plain_batch_results(plain, rows, now, results, duplicates)
    for index, item, cid, ids, text in slow:
        _write_in_savepoint(index, item, cid, ids, text, results, duplicates, written)
    return written


def send_reaches(plain: list[Prepared]) -> list[Reach]:
    """What each send of ``plain`` reaches (the other members of its conversation), by position."""
    return [Reach(entry.request.sender, entry.request.conversation_id) for entry in plain]


def _apply_reach_rules(plain: list[Prepared], results: list[SendResult | Exception | None]) -> list[Prepared]:
    """Ask the reach rules once for every send of the batch; refused sends get the rule's error
    and are left out."""
    refused = reach.refusals(send_reaches(plain))
    if not refused:
        return plain
    for position, error in refused.items():
        results[plain[position].slot] = error
    return [entry for position, entry in enumerate(plain) if position not in refused]


def _execute_plain_batch(cursor: Any, plain: list[Prepared]) -> datetime:
    """Send the batch's one statement (its answer is fetched by the caller); returns its time."""
    now = timezone.now()
    cursor.execute(send_statement(), send_batch_params(plain, now))
    return now


def send_batch_params(plain: list[Prepared], now: datetime) -> dict[str, Any]:
    """The parameters of the batch's send statement (``send_statement``)."""
    return {
        "ord": list(range(len(plain))),
        "conv": [e.request.conversation_id for e in plain],
        "sender": [e.request.sender.pk for e in plain],
        "cid": [e.cid for e in plain],
        "body": [e.text for e in plain],
        "reply": [e.request.reply_to for e in plain],
        "enc": [e.request.ciphertexts is not None for e in plain],
        "ment": [mentions_json(e.request.mentions) for e in plain],
        "now": now,
    }


def _plain_batch_results(
    plain: list[Prepared],
    rows: list[Any],
    now: datetime,
    results: list[SendResult | Exception | None],
    duplicates: list[Duplicate],
) -> list[Written]:
    written, fan_outs, recipients = batch_outcome(plain, rows, now, results, duplicates)
    if written:
        committed = committed_of(written, recipients)

        def after_commit() -> None:
            fan_out_all(fan_outs)
            announce_committed(committed)

        transaction.on_commit(after_commit)
    return written


def committed_of(written: list[Written], recipients: dict[int, list[int]]) -> list[Committed]:
    """What ``message_committed`` tells of the messages a batch wrote."""
    return [(m, c, s, recipients[c]) for m, c, s in written]


FanOut = tuple[list[int], dict[str, Any], str | None]


def batch_outcome(
    plain: list[Prepared],
    rows: list[Any],
    now: datetime,
    results: list[SendResult | Exception | None],
    duplicates: list[Duplicate],
) -> tuple[list[Written], list[FanOut], dict[int, list[int]]]:
    """What the send statement answered, for both batch writers: each send's result (in
    ``results``), earlier uses of a client_id (``duplicates``), and the messages written, their
    ``message.new`` fan-outs (to publish after the commit) and each conversation's members.
    Raises ``BatchConflict`` when a send lost its insert to a concurrent one."""
    answered = {row[0] for row in rows}
    for ord_, entry in enumerate(plain):
        if ord_ not in answered:  # its conversation does not exist (any more)
            results[entry.slot] = NotFound("No such conversation.", code="conversation_not_found")
    recipients: dict[int, list[int]] = {}
    for row in rows:
        if row[4] is not None:
            recipients[plain[row[0]].request.conversation_id] = list(row[4])
    checks = registry.checks
    written: list[Written] = []
    fan_outs: list[FanOut] = []
    for ord_, message_id, seq, number, _users, *passes in rows:
        index, item, cid, _ids, text = plain[ord_]
        conversation_id = item.conversation_id
        sender: User = item.sender
        failed, refusal = first_refusal(checks, passes, item.ciphertexts is not None)
        if failed:
            if refusal is None:  # an earlier use of the client_id: the original answers
                duplicates.append((index, item, cid))
            else:
                results[index] = refusal
        elif message_id is None:
            raise BatchConflict
        else:
            written_message = selectors.WrittenMessage(
                pk=message_id,
                conversation_id=conversation_id,
                seq=seq,
                client_id=cid,
                sender_id=sender.pk,
                created_at=now,
                body=text,
                reply_to_id=item.reply_to,
                mentions=list(item.mentions) if item.mentions else None,
            )
            data = selectors.message_data(written_message, encrypted=False)
            members = recipients[conversation_id]
            frame = {"type": "message.new", "data": {"message": data}, "event": number}
            fan_outs.append((members, frame, item.origin_channel))
            written.append((message_id, conversation_id, sender.pk))
            results[index] = SendResult(None, True, data)
    return written, fan_outs, recipients


def fan_out_all(fan_outs: list[FanOut]) -> None:
    for user_ids, frame, exclude_channel in fan_outs:
        fan_out(user_ids=user_ids, frame=frame, exclude_channel=exclude_channel)
