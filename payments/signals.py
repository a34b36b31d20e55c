"""Signals other apps listen to (inside the transaction that caused them)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by ``services.transition`` after a consultation moved, in the same transaction, with
# ``consultation``, ``from_state``, ``to_state`` and ``source``. Appointments confirm a held slot
# when its consultation becomes ``paid`` and release it when the consultation ends unpaid.
consultation_transitioned = Signal()

# Sent by ``services._post`` right after a ledger entry was appended, in the same transaction,
# with ``entry``. Documents makes a receipt for every charge and refund.
ledger_entry_posted = Signal()
