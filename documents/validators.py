"""The documents' vocabulary (kinds, statuses) and the rules shared by serializers, services and
models."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from core.errors import ApplicationError

RECEIPT = "receipt"
CONSULTATION_SUMMARY = "consultation_summary"
PRESCRIPTION = "prescription"
KINDS = (CONSULTATION_SUMMARY, PRESCRIPTION, RECEIPT)

PENDING = "pending"
READY = "ready"
FAILED = "failed"
STATUSES = (FAILED, PENDING, READY)

# Ledger entries that get a receipt: what the patient paid and what they were given back.
RECEIPT_ENTRY_KINDS = ("charge", "refund")

# Messages a summary with the chat carries at most (the newest are dropped past it, and the
# document says so).
SUMMARY_CHAT_MAX_MESSAGES = 2000

# ISO 4217 currencies whose minor unit is not a hundredth (the rest have two decimals).
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV"), 0
    ),
    **dict.fromkeys(("XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def document_key(
    *,
    kind: str,
    consultation_id: int | None = None,
    payment_id: int | None = None,
    prescription_id: int | None = None,
    include_chat: bool = False,
) -> str:
    """The one document of a record: a receipt per payment or refund, a summary per consultation
    (with or without the chat), a document per prescription."""
    if kind == RECEIPT:
        return f"receipt:{payment_id}"
    if kind == PRESCRIPTION:
        return f"prescription:{prescription_id}"
    return f"consultation_summary:{consultation_id}{':chat' if include_chat else ''}"


def validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ApplicationError(
            "invalid_kind", f"kind must be one of {', '.join(KINDS)}.", fields={"kind": ["invalid_kind"]}
        )
    return kind


def money(amount: int, currency: str) -> Decimal:
    """``amount`` minor units of ``currency`` as a decimal of its major unit."""
    exponent = CURRENCY_EXPONENTS.get(currency.upper(), 2)
    return (Decimal(amount) / (Decimal(10) ** exponent)).quantize(Decimal(1).scaleb(-exponent))


def format_money(amount: int, currency: str) -> str:
    """``1234, "GBP"`` -> ``"12.34 GBP"`` (no locale: the same text on every server)."""
    return f"{money(amount, currency):,} {currency.upper()}"


def tax_included(amount: int, rate_percent: Decimal) -> int:
    """The tax inside a tax-inclusive ``amount`` (minor units, half-even rounding)."""
    if rate_percent <= 0:
        return 0
    tax = Decimal(amount) * rate_percent / (Decimal(100) + rate_percent)
    return int(tax.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
