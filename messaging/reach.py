"""Who may put content in front of whom: the registry of reach rules, and the one check that
every path delivering a user's content calls.

A path "reaches" others when what a user writes or does is put in front of them: a message
(with or without attachments, plaintext or encrypted), an edit, a typing indicator, a call, a
group created with them or they are added to, a group's new name. Each such path builds a
``Reach`` and asks ``check`` (or ``refusals`` for a batch) before it writes. Higher apps plug
their rules in at start-up (``AppConfig.ready``), so messaging never imports them: payments'
rule makes a conversation read-only for a patient once their consultation with the doctor has
closed. The paths and their decisions are listed (and tested) in
``payments/tests/test_closed_rule_coverage.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accounts.models import User
from core.errors import ApplicationError

if TYPE_CHECKING:
    from .services import BatchStatement


@dataclass(frozen=True)
class Reach:
    """``sender``'s content about to reach the other active members of ``conversation_id``
    (when given) and the users ``recipient_ids`` (a new group's members, an added member)."""

    sender: User
    conversation_id: int | None = None
    recipient_ids: tuple[int, ...] = ()


# ``rule([reach, ...])`` returns ``{index: ApplicationError}`` for the reaches it refuses (one
# query for a whole batch: a group commit asks once for all its sends). A rule with a
# ``statement`` attribute (``statement(reaches) -> BatchStatement | None``, PostgreSQL) can also
# be asked by the event loop's batch writer (``messaging.loop_writer``), in the batch's round trip.
ReachRule = Callable[[list[Reach]], dict[int, ApplicationError]]
reach_rules: list[ReachRule] = []


def refusals(reaches: list[Reach]) -> dict[int, ApplicationError]:
    """Every registered rule's refusals, by index in ``reaches`` (the first rule's error wins)."""
    refused: dict[int, ApplicationError] = {}
    if not reaches:
        return refused
    for rule in reach_rules:
        for index, error in rule(reaches).items():
            refused.setdefault(index, error)
    return refused


def check(*, sender: User, conversation_id: int | None = None, recipient_ids: tuple[int, ...] = ()) -> None:
    """Raise the rules' error when ``sender`` may not reach these people."""
    if not reach_rules:
        return
    error = refusals([Reach(sender, conversation_id, tuple(recipient_ids))]).get(0)
    if error is not None:
        raise error


def statements(reaches: list[Reach]) -> list[BatchStatement] | None:
    """The rules' statements for ``reaches`` (for the loop writer), or None when a rule has no
    statement form (the batch then takes the worker thread's writer)."""
    out: list[BatchStatement] = []
    for rule in reach_rules:
        build: Any = getattr(rule, "statement", None)
        if build is None:
            return None
        stmt = build(reaches)
        if stmt is not None:
            out.append(stmt)
    return out


def statements_available() -> bool:
    return all(hasattr(rule, "statement") for rule in reach_rules)
