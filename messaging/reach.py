"""Who may put content in front of whom: ``Reach``, and the one check that every path
delivering a user's content calls (the rules: ``messaging.send_rules``).

A path "reaches" others when what a user writes or does is put in front of them: a message
(with or without attachments, plaintext or encrypted), an edit, a typing indicator, a call, a
group created with them or they are added to, a group's new name. Each such path builds a
``Reach`` and asks ``check`` (or ``refusals`` for a batch) before it writes. Higher apps plug
their rules in at start-up (``AppConfig.ready``, through the typed registry of
``messaging.send_rules``: one statement each, run by every writer), so messaging never imports
them: payments' rule makes a conversation read-only for a patient once their consultation with the doctor has
closed. The paths and their decisions are listed (and tested) in
``payments/tests/test_closed_rule_coverage.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from accounts.models import User
from core.errors import ApplicationError

from .send_rules import registry


@dataclass(frozen=True)
class Reach:
    """``sender``'s content about to reach the other active members of ``conversation_id``
    (when given) and the users ``recipient_ids`` (a new group's members, an added member)."""

    sender: User
    conversation_id: int | None = None
    recipient_ids: tuple[int, ...] = ()


def refusals(reaches: Sequence[Reach]) -> dict[int, ApplicationError]:
    """Every registered rule's refusals (``messaging.send_rules``), by index in ``reaches``
    (the first rule's error wins), asked on Django's connection."""
    return registry.refusals(reaches)


def check(*, sender: User, conversation_id: int | None = None, recipient_ids: tuple[int, ...] = ()) -> None:
    """Raise the rules' error when ``sender`` may not reach these people."""
    if not registry.rules:
        return
    error = refusals([Reach(sender, conversation_id, tuple(recipient_ids))]).get(0)
    if error is not None:
        raise error
