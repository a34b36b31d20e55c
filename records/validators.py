"""Validation rules of the clinical record, shared by serializers, services and models.

Every refusal is an ``ApplicationError`` with a stable code (docs/record.md lists them).
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

from core.errors import ApplicationError

NOTE_STATES = ("draft", "signed")
NOTE_TEXT_FIELDS = ("reason", "findings", "assessment", "plan", "follow_up")
NOTE_TEXT_MAX = 10_000
NOTE_CODES_MAX = 50
CODE_SYSTEM_MAX = 100
CODE_VALUE_MAX = 64
CODE_DISPLAY_MAX = 255
AMENDMENT_REASON_MAX = 1000

PRESCRIPTION_STATUSES = ("issued", "cancelled")
MEDICATION_NAME_MAX = 200
SHORT_FIELD_MAX = 100
INSTRUCTIONS_MAX = 2000
CANCEL_REASON_MAX = 1000
# The verification code: Crockford base32 (no I, L, O, U), 16 characters (80 random bits).
VERIFICATION_CODE_LENGTH = 16
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VERIFICATION_CODE_PATTERN = rf"^[{CODE_ALPHABET}]{{{VERIFICATION_CODE_LENGTH}}}$"

# Consultation states a note may be written in: the doctor took it (captured), it may since
# have been completed or refunded.
NOTE_CONSULTATION_STATES = ("accepted", "in_progress", "completed", "refunded")
# Consultation states a prescription may be issued in; "completed" only within the window.
PRESCRIPTION_OPEN_STATES = ("accepted", "in_progress")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CODE_RE = re.compile(VERIFICATION_CODE_PATTERN)


def text(value: Any, *, field: str, max_length: int) -> str:
    """A stripped text field (None: blank): ``field_too_long`` past ``max_length``,
    ``invalid_characters`` with control characters (``fields`` names the field)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApplicationError("invalid", f"{field} must be text.", fields={field: ["wrong_type"]})
    out = value.strip()
    if len(out) > max_length:
        raise ApplicationError(
            "field_too_long",
            f"{field} must be at most {max_length} characters.",
            fields={field: ["too_long"]},
        )
    if _CONTROL.search(out):
        raise ApplicationError(
            "invalid_characters", f"{field} must not contain control characters.", fields={field: ["invalid"]}
        )
    return out


def required_missing(value: str, field: str) -> dict[str, list[str]] | None:
    """The ``fields`` of a refusal when a required text is blank, else None."""
    return None if value else {field: ["required"]}


def note_codes(value: Any) -> list[dict[str, str]]:
    """At most 50 ``{system, code, display?}`` entries (``invalid_codes`` otherwise)."""
    if value is None:
        return []
    problem = ApplicationError(
        "invalid_codes",
        f"codes must be a list of at most {NOTE_CODES_MAX} objects with a system and a code "
        "(and an optional display).",
        fields={"codes": ["invalid"]},
    )
    if not isinstance(value, list) or len(value) > NOTE_CODES_MAX:
        raise problem
    out: list[dict[str, str]] = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"system", "code", "display"}:
            raise problem
        system, code, display = item.get("system"), item.get("code"), item.get("display", "")
        if not (isinstance(system, str) and isinstance(code, str) and isinstance(display, str)):
            raise problem
        system, code, display = system.strip(), code.strip(), display.strip()
        if (
            not system
            or not code
            or len(system) > CODE_SYSTEM_MAX
            or len(code) > CODE_VALUE_MAX
            or len(display) > CODE_DISPLAY_MAX
            or _CONTROL.search(system + code + display)
        ):
            raise problem
        out.append({"system": system, "code": code, "display": display})
    return out


def quantity(value: Any) -> int:
    """1..HEALTHCHAT_PRESCRIPTION_MAX_QUANTITY (``quantity_required``, ``quantity_out_of_range``)."""
    if value is None or value == "":
        raise ApplicationError(
            "quantity_required", "quantity is required.", fields={"quantity": ["required"]}
        )
    limit = settings.HEALTHCHAT_PRESCRIPTION_MAX_QUANTITY
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ApplicationError(
            "quantity_out_of_range",
            f"quantity must be a whole number from 1 to {limit}.",
            fields={"quantity": ["out_of_range"]},
        )
    return value


def repeats(value: Any) -> int:
    """0..HEALTHCHAT_PRESCRIPTION_MAX_REPEATS (``repeats_out_of_range``)."""
    if value is None:
        return 0
    limit = settings.HEALTHCHAT_PRESCRIPTION_MAX_REPEATS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ApplicationError(
            "repeats_out_of_range",
            f"repeats must be a whole number from 0 to {limit}.",
            fields={"repeats": ["out_of_range"]},
        )
    return value


def normalise_verification_code(value: str) -> str | None:
    """The code as stored (upper case, dashes and spaces dropped, O→0, I/L→1 as Crockford
    reads them), or None when it cannot be one."""
    cleaned = value.replace("-", "").replace(" ", "").upper()
    cleaned = cleaned.replace("O", "0").replace("I", "1").replace("L", "1")
    return cleaned if _CODE_RE.match(cleaned) else None
