"""The send pipeline's extension points, in one typed registry: reach rules (may this content
reach these people?) and written hooks (what else a batch of new messages writes in its own
transaction: the push outbox).

Each rule and hook is ONE PostgreSQL statement and the reading of its answer
(``BatchStatement``), which every writer executes: the worker thread's batch writer and the
single send through Django's connection (``registry.refusals``, ``registry.run_hook``), the
event loop's batch writer (``messaging.loop_writer``) through its own pipelined connection,
in the batch's round trips. ``orm`` is the same decision through Django's queries, for the
other databases (the embedded SQLite run). A rule or hook without both forms cannot be built
(``ReachRule`` and ``WrittenHook`` take both, typed) nor registered (``ImproperlyConfigured`` at
start-up): there is no silent fallback to a slower writer.

Apps register in their ``AppConfig.ready`` (messaging never imports them)::

    registry.register_rule(ReachRule(name="payments.consultation_closed", statement=..., orm=...))
    registry.register_hook(WrittenHook(name="notifications.push_outbox", statement=..., orm=...))
    registry.register_deferred(DeferredRule(name="consultation", bind=..., refusal=...))

Deferred rules are for content written now and sent later as its author (scheduled messages):
``bind`` is asked when it is written (what it was written in: the consultation in progress),
``refusal`` when it is sent (that is over: refused), before the send's own checks and rules.

How to add a rule: docs/architecture.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from core.errors import ApplicationError

if TYPE_CHECKING:
    from .reach import Reach

logger = logging.getLogger("healthchat.messaging")

# A message a batch wrote: (message_id, conversation_id, sender_id).
Written = tuple[int, int, int]


@dataclass(frozen=True)
class BatchStatement:
    """One PostgreSQL statement and what its answer means. For a rule, ``answer(rows)`` is
    ``{index in the reaches: error}`` (read before the COMMIT); for a hook, it is called after
    the COMMIT with the statement's rows (only when there are rows) and may block (the loop
    writer runs it in a worker thread)."""

    sql: str
    params: Any
    answer: Callable[[list[tuple[Any, ...]]], Any]


@dataclass(frozen=True)
class SendContext:
    """What a send check's ORM form decides on (other databases): the send, its conversation
    (``None``: there is none) and the sender's membership in it (``None``: never a member)."""

    sender_id: int
    conversation_id: int
    client_id: Any
    reply_to: int | None
    encrypted: bool
    conversation: Any
    membership: Any
    # The send's mention entities (``messaging.services.mentions``), ``None`` without.
    mentions: Any = None


@dataclass(frozen=True)
class SendCheck:
    """One of the checks of a new message, defined once for every writer: ``passes_sql`` is a
    boolean SQL expression, TRUE when the send passes, evaluated per send inside the send
    statement (``messaging.services.send_batch.send_statement``: over ``i``, the send's input
    row — ``ord, conv, sender, cid, body, reply, enc, ment`` —, ``c``, its conversation, and ``m``,
    the sender's membership row, NULL when there is none); ``orm(context)`` is the same
    decision through Django's queries; ``refusal(encrypted)`` the send's error (``None``: not
    an error, the send was made before: its original is returned). Every writer runs them in
    registration order (the first failing check answers): the loop writer's and the thread's
    batch statement, the single send, the encrypted send and the sends with attachments."""

    name: str
    passes_sql: str
    orm: Callable[[SendContext], bool]
    refusal: Callable[[bool], ApplicationError | None]
    # A check about the sender alone (its SQL reads only ``i.sender``; its ORM form only
    # ``sender_id``): the edit path asks it too (``SendRegistry.sender_refusal``), e.g.
    # moderation's mute: a muted user neither sends nor edits.
    sender_only: bool = False


def first_refusal(
    checks: Sequence[SendCheck], passes: Sequence[Any], encrypted: bool
) -> tuple[bool, ApplicationError | None]:
    """The send statement's (or the ORM's) answers of ``checks`` for one send: whether one
    failed, and the first failing check's refusal (``None``: an earlier use of the client_id)."""
    for check, passed in zip(checks, passes, strict=True):
        if not passed:
            return True, check.refusal(encrypted)
    return False, None


@dataclass(frozen=True)
class ReachRule:
    """Who may put content in front of whom (``messaging.reach``): ``statement(reaches)`` is
    the rule's statement for a batch of reaches (``None``: nothing to ask, e.g. no patient
    among the senders); ``orm(reaches)`` the same decision on other databases. Both answer
    ``{index: ApplicationError}`` for the reaches refused."""

    name: str
    statement: Callable[[Sequence[Reach]], BatchStatement | None]
    orm: Callable[[Sequence[Reach]], dict[int, ApplicationError]]


@dataclass(frozen=True)
class WrittenHook:
    """Written in the transaction of the messages it is about (``[(message_id,
    conversation_id, sender_id)]``): ``statement(written)`` (its ``answer`` runs after the
    COMMIT), ``orm(written)`` on other databases."""

    name: str
    statement: Callable[[Sequence[Written]], BatchStatement | None]
    orm: Callable[[Sequence[Written]], None]


@dataclass(frozen=True)
class DeferredRule:
    """A rule for content written now and sent later as its author (a scheduled message):
    ``bind(sender, conversation_id)`` says, when it is written, what it is written in (an id;
    ``None``: nothing to bind it to); ``refusal(bound_id, now)``, when it is sent, whether that
    is over (the send's error; ``None``: it may go). The send's checks and reach rules still run
    after it, as for any send."""

    name: str
    bind: Callable[[Any, int], int | None]
    refusal: Callable[[int, datetime], ApplicationError | None]


class SendRegistry:
    """The registered rules and hooks, in registration order (the first rule's refusal wins)."""

    def __init__(self) -> None:
        self._rules: dict[str, ReachRule] = {}
        self._hooks: dict[str, WrittenHook] = {}
        self._checks: dict[str, SendCheck] = {}
        self._deferred: dict[str, DeferredRule] = {}

    @property
    def checks(self) -> tuple[SendCheck, ...]:
        return tuple(self._checks.values())

    def register_check(self, check: SendCheck) -> None:
        if not isinstance(check, SendCheck):
            raise ImproperlyConfigured(f"{check!r} is not a SendCheck (an SQL and an ORM form)")
        _register(self._checks, check.name, check)

    @property
    def deferred(self) -> tuple[DeferredRule, ...]:
        return tuple(self._deferred.values())

    def register_deferred(self, rule: DeferredRule) -> None:
        if not isinstance(rule, DeferredRule):
            raise ImproperlyConfigured(f"{rule!r} is not a DeferredRule (a bind and a refusal)")
        _register(self._deferred, rule.name, rule)

    def deferred_bindings(self, *, sender: Any, conversation_id: int) -> dict[str, int]:
        """What content ``sender`` writes now in ``conversation_id`` for later is bound to:
        ``{rule name: id}`` for each deferred rule that binds it (store it with the content)."""
        bound = {rule.name: rule.bind(sender, conversation_id) for rule in self._deferred.values()}
        return {name: int(value) for name, value in bound.items() if value is not None}

    def deferred_refusal(
        self, bindings: Mapping[str, Any], *, now: datetime | None = None
    ) -> ApplicationError | None:
        """At send time: the first deferred rule's refusal of what the content was bound to
        (``deferred_bindings``), ``None`` when every rule lets it go. A binding whose rule is
        no longer registered is ignored."""
        moment = now or timezone.now()
        for rule in self._deferred.values():
            bound = bindings.get(rule.name)
            if bound is not None and (error := rule.refusal(int(bound), moment)) is not None:
                return error
        return None

    @property
    def rules(self) -> tuple[ReachRule, ...]:
        return tuple(self._rules.values())

    @property
    def hooks(self) -> tuple[WrittenHook, ...]:
        return tuple(self._hooks.values())

    def register_rule(self, rule: ReachRule) -> None:
        if not isinstance(rule, ReachRule):
            raise ImproperlyConfigured(f"{rule!r} is not a ReachRule (a statement and an ORM form)")
        _register(self._rules, rule.name, rule)

    def register_hook(self, hook: WrittenHook) -> None:
        if not isinstance(hook, WrittenHook):
            raise ImproperlyConfigured(f"{hook!r} is not a WrittenHook (a statement and an ORM form)")
        _register(self._hooks, hook.name, hook)

    @contextmanager
    def replaced(
        self,
        *,
        rules: Sequence[ReachRule] | None = None,
        hooks: Sequence[WrittenHook] | None = None,
        checks: Sequence[SendCheck] | None = None,
        deferred: Sequence[DeferredRule] | None = None,
    ) -> Iterator[None]:
        """Within the block, these rules (and/or hooks, checks, deferred rules) instead of the
        registered ones (tests)."""
        saved = dict(self._rules), dict(self._hooks), dict(self._checks), dict(self._deferred)
        try:
            if deferred is not None:
                self._deferred = {}
                for later in deferred:
                    self.register_deferred(later)
            if checks is not None:
                self._checks = {}
                for check in checks:
                    self.register_check(check)
            if rules is not None:
                self._rules = {}
                for rule in rules:
                    self.register_rule(rule)
            if hooks is not None:
                self._hooks = {}
                for hook in hooks:
                    self.register_hook(hook)
            yield
        finally:
            self._rules, self._hooks, self._checks, self._deferred = saved

    def sender_refusal(self, sender_id: int) -> ApplicationError | None:
        """The first refusal of the sender-only checks (``SendCheck.sender_only``) for
        ``sender_id``, outside the send statement: the edit path's question (one SELECT; none
        without such checks)."""
        checks = [c for c in self._checks.values() if c.sender_only]
        if not checks:
            return None
        if connection.vendor == "postgresql":
            # The checks' own SQL (code, registered at start-up), never a request's text.
            sql = "SELECT " + ", ".join(f"({c.passes_sql})" for c in checks)
            sql += " FROM (SELECT %s::bigint AS sender) i"
            with connection.cursor() as cursor:
                cursor.execute(sql, [sender_id])
                row = cursor.fetchone()
            passes: Sequence[Any] = row if row is not None else [True] * len(checks)
        else:
            context = SendContext(
                sender_id=sender_id,
                conversation_id=0,
                client_id=None,
                reply_to=None,
                encrypted=False,
                conversation=None,
                membership=None,
            )
            passes = [c.orm(context) for c in checks]
        return first_refusal(checks, passes, False)[1]

    # --- The statements, for any writer --------------------------------------------------
    def rule_statements(self, reaches: Sequence[Reach]) -> list[BatchStatement]:
        return [stmt for rule in self._rules.values() if (stmt := rule.statement(reaches)) is not None]

    def hook_statements(self, written: Sequence[Written]) -> list[BatchStatement]:
        return [stmt for hook in self._hooks.values() if (stmt := hook.statement(written)) is not None]

    # --- Executed on Django's connection (the thread's writer, the single send, every path) --
    def refusals(self, reaches: Sequence[Reach]) -> dict[int, ApplicationError]:
        """Every rule's refusals for ``reaches``, by index (the first rule's error wins)."""
        refused: dict[int, ApplicationError] = {}
        if not reaches or not self._rules:
            return refused
        if connection.vendor == "postgresql":
            answers = [refusals_of(stmt) for stmt in self.rule_statements(reaches)]
        else:
            answers = [rule.orm(reaches) for rule in self._rules.values()]
        for answer in answers:
            for index, error in answer.items():
                refused.setdefault(index, error)
        return refused

    def run_hook(self, hook: WrittenHook, written: Sequence[Written]) -> None:
        """``hook`` for ``written``, in the caller's transaction: its statement now and its
        answer after the COMMIT (psycopg's pipeline mode lets the statement share the COMMIT's
        round trip: the rows are fetched only then)."""
        if not written:
            return
        if connection.vendor != "postgresql":
            hook.orm(written)
            return
        stmt = hook.statement(written)
        if stmt is None:
            return
        cursor = connection.cursor()  # closed after the commit, once its answer is read
        cursor.execute(stmt.sql, stmt.params)

        def answer_after_commit() -> None:
            try:
                rows = cursor.fetchall()
            finally:
                cursor.close()
            if rows:
                stmt.answer(rows)

        transaction.on_commit(answer_after_commit)

    def run_hooks(self, written: Sequence[Written], *, guarded: bool = True) -> None:
        """Every registered hook for ``written``, in the caller's transaction, for every writer
        on Django's connection (the batch, the single send, the encrypted send, a call's
        system message). ``guarded``: each in a savepoint, a failure is logged and never undoes
        the messages; unguarded (the fast path, two statements fewer), a failure raises
        ``HookFailed`` for the caller to redo its writes guarded."""
        if not written:
            return
        for hook in self.hooks:
            if not guarded:
                try:
                    self.run_hook(hook, written)
                except Exception as exc:
                    logger.exception("batch hook failed: %s", hook.name)
                    raise HookFailed(hook.name) from exc
                continue
            try:
                with transaction.atomic():
                    self.run_hook(hook, written)
            except Exception:  # a hook never undoes the messages
                logger.exception("batch hook failed: %s", hook.name)


class HookFailed(Exception):
    """A written hook failed unguarded (``run_hooks(guarded=False)``): the caller undoes its
    transaction and writes again with the hooks guarded (a hook never loses a message)."""


def refusals_of(stmt: BatchStatement) -> dict[int, ApplicationError]:
    """A rule's statement run on Django's connection, and its answer."""
    with connection.cursor() as cursor:
        cursor.execute(stmt.sql, stmt.params)
        answer: dict[int, ApplicationError] = stmt.answer(cursor.fetchall())
    return answer


def _register(into: dict[str, Any], name: str, item: Any) -> None:
    existing = into.get(name)
    if existing is not None and existing != item:
        raise ImproperlyConfigured(f"two send rules or hooks are named {name!r}")
    into[name] = item


registry = SendRegistry()
