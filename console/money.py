"""Amounts of money as people read them: 2 to 4 decimal places (the budgets' and prices' precision)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

QUANTUM = Decimal("0.0001")


def money_text(value) -> str:
    """25 → "25.00", 0.0005 → "0.0005", Decimal("0.0100000000000000") → "0.01"; "" for None."""
    if value is None or value == "":
        return ""
    try:
        amount = Decimal(str(value)).quantize(QUANTUM)
    except (InvalidOperation, ValueError):
        return str(value)
    whole, _, frac = f"{amount:f}".partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"
