"""Validation rules for accounts, shared by serializers, socket frames and services.

Each function returns the normalised value or raises ``ApplicationError`` with a stable code.
The database constraints in ``models.py`` enforce the same rules as a last line of defence.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date

import phonenumbers

from core.errors import ApplicationError

E164_REGEX = r"^\+[1-9][0-9]{6,14}$"
CURRENCY_REGEX = r"^[A-Z]{3}$"
DISPLAY_NAME_MAX = 100
ROLES = ("patient", "doctor")
SEXES = ("female", "male", "other", "undisclosed")
PLATFORMS = ("android", "ios", "web")
VERIFICATION_STATUSES = ("pending", "verified", "rejected")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _parse_phone_number(value: str, *, field: str) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ApplicationError(
            "invalid_phone_number", "Not a valid international phone number.", fields={field: [str(exc)]}
        ) from exc


def validate_phone_number(value: str, *, field: str = "phone_number") -> str:
    """Parse any reasonable phone number and return it in E.164 form."""
    parsed = _parse_phone_number(value, field=field)
    if not phonenumbers.is_possible_number(parsed) or not phonenumbers.is_valid_number(parsed):
        raise ApplicationError(
            "invalid_phone_number",
            "Not a valid international phone number.",
            fields={field: ["invalid"]},
        )
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if not re.match(E164_REGEX, e164):
        raise ApplicationError("invalid_phone_number", "Not a valid E.164 phone number.")
    return e164


def validate_verified_phone_number(value: str, *, field: str = "phone_number") -> str:
    """A number the identity provider verified (a Firebase ID token's ``phone_number``): E.164
    form when it is a *possible* international number (its length fits its country).

    Not ``is_valid_number``: Firebase has already proven the number by SMS, and libphonenumber's
    metadata lags behind real allocations (and calls test ranges such as +1 555 01xx or
    +44 7700 900xxx invalid); refusing them would lock real users out. Numbers a user types
    (an emergency contact) keep the strict ``validate_phone_number``.
    """
    parsed = _parse_phone_number(value, field=field)
    possible = phonenumbers.is_possible_number_with_reason(parsed)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE or not re.match(E164_REGEX, e164):
        raise ApplicationError(
            "invalid_phone_number",
            "Not a possible international phone number.",
            fields={field: ["invalid"]},
        )
    return e164


def validate_display_name(value: str) -> str:
    name = " ".join(value.split())
    if not name:
        raise ApplicationError(
            "invalid_display_name", "Display name must not be empty.", fields={"display_name": ["blank"]}
        )
    if len(name) > DISPLAY_NAME_MAX or _CONTROL.search(name):
        raise ApplicationError(
            "invalid_display_name",
            f"Display name must be at most {DISPLAY_NAME_MAX} printable characters.",
            fields={"display_name": ["invalid"]},
        )
    return name


def validate_role(value: str) -> str:
    if value not in ROLES:
        raise ApplicationError(
            "invalid_role", "Role must be patient or doctor.", fields={"role": ["invalid_choice"]}
        )
    return value


def validate_currency(value: str) -> str:
    upper = value.upper()
    if not re.match(CURRENCY_REGEX, upper):
        raise ApplicationError(
            "invalid_currency", "Currency must be an ISO 4217 code.", fields={"currency": ["invalid"]}
        )
    return upper


def validate_fee(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 10_000_000:
        raise ApplicationError(
            "invalid_fee",
            "Consultation fee must be a whole number of minor units between 0 and 10,000,000.",
            fields={"consultation_fee": ["invalid"]},
        )
    return value


def validate_date_of_birth(value: date | None) -> date | None:
    if value is None:
        return None
    if value > date.today() or value.year < 1900:
        raise ApplicationError(
            "invalid_date_of_birth",
            "Date of birth must be in the past.",
            fields={"date_of_birth": ["invalid"]},
        )
    return value


def validate_short_text(value: str, *, field: str, max_length: int, required: bool = True) -> str:
    text = value.strip()
    if required and not text:
        raise ApplicationError(f"invalid_{field}", f"{field} must not be empty.", fields={field: ["blank"]})
    if len(text) > max_length or _CONTROL.search(text.replace("\n", "")):
        raise ApplicationError(
            f"invalid_{field}",
            f"{field} must be at most {max_length} printable characters.",
            fields={field: ["invalid"]},
        )
    return text


def validate_platform(value: str) -> str:
    if value not in PLATFORMS:
        raise ApplicationError(
            "invalid_platform",
            "Platform must be android, ios or web.",
            fields={"platform": ["invalid_choice"]},
        )
    return value


def validate_languages(value: list[str]) -> list[str]:
    if not isinstance(value, list) or len(value) > 20:
        raise ApplicationError("invalid_languages", "Languages must be a list of at most 20 codes.")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not re.match(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$", item):
            raise ApplicationError(
                "invalid_languages", "Languages must be BCP 47 codes such as 'en' or 'pt-BR'."
            )
        if item not in out:
            out.append(item)
    return out


# --- End-to-end encryption keys (libsignal's serialised forms, base64 on the wire) ----------
EC_PUBLIC_KEY_LENGTH = 33  # 0x05 + Curve25519 u-coordinate
EC_KEY_TYPE = 0x05
KYBER_PUBLIC_KEY_LENGTH = 1569  # 0x08 + Kyber-1024 public key
KYBER_KEY_TYPE = 0x08
SIGNATURE_LENGTH = 64  # XEdDSA
REGISTRATION_ID_MAX = 16380  # Signal's 14-bit registration ids
PREKEY_ID_MAX = 0xFFFFFF  # Signal's 24-bit prekey ids


def decode_base64(value: object, *, field: str, code: str = "invalid_key") -> bytes:
    """Standard base64 (padding optional; URL-safe alphabet accepted too), strictly checked."""
    if not isinstance(value, str) or not value or len(value) > 8192:
        raise ApplicationError(code, f"{field} must be base64.", status=422, fields={field: ["invalid"]})
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApplicationError(
            code, f"{field} must be base64.", status=422, fields={field: ["invalid"]}
        ) from exc


def validate_ec_public_key(value: object, *, field: str) -> bytes:
    raw = decode_base64(value, field=field)
    if len(raw) != EC_PUBLIC_KEY_LENGTH or raw[0] != EC_KEY_TYPE:
        raise ApplicationError(
            "invalid_key",
            f"{field} must be a serialised Curve25519 public key (33 bytes, type 0x05).",
            status=422,
            fields={field: ["invalid"]},
        )
    return raw


def validate_kyber_public_key(value: object, *, field: str) -> bytes:
    raw = decode_base64(value, field=field)
    if len(raw) != KYBER_PUBLIC_KEY_LENGTH or raw[0] != KYBER_KEY_TYPE:
        raise ApplicationError(
            "invalid_key",
            f"{field} must be a serialised Kyber-1024 public key (1569 bytes, type 0x08).",
            status=422,
            fields={field: ["invalid"]},
        )
    return raw


def validate_signature(value: object, *, field: str) -> bytes:
    raw = decode_base64(value, field=field)
    if len(raw) != SIGNATURE_LENGTH:
        raise ApplicationError(
            "invalid_key", f"{field} must be a 64-byte signature.", status=422, fields={field: ["invalid"]}
        )
    return raw


def validate_key_id(value: object, *, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= PREKEY_ID_MAX:
        raise ApplicationError(
            "invalid_key",
            f"{field} must be an integer from 0 to {PREKEY_ID_MAX}.",
            status=422,
            fields={field: ["invalid"]},
        )
    return value


def validate_registration_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= REGISTRATION_ID_MAX:
        raise ApplicationError(
            "invalid_key",
            f"registration_id must be an integer from 1 to {REGISTRATION_ID_MAX}.",
            status=422,
            fields={"registration_id": ["invalid"]},
        )
    return value
