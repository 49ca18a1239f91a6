"""Amounts of money as people read them: 2 to 4 decimal places (the budgets' and prices' precision)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

QUANTUM = Decimal("0.0001")
FINEST_PLACES = 8  # a usage record's cost (UsageRecord.cost)


def money_text(value) -> str:
    """25 → "25.00", 0.0005 → "0.0005", Decimal("0.0100000000000000") → "0.01"; "" for None.
    An amount too small for 4 places keeps its first two significant digits, to 8 places
    (0.0000052 → "0.0000052"): a request that cost something never reads as "0.00"."""
    if value is None or value == "":
        return ""
    try:
        amount = Decimal(str(value))
        if amount and abs(amount) < QUANTUM:
            places = min(FINEST_PLACES, 1 - amount.adjusted())
            amount = amount.quantize(Decimal(1).scaleb(-places))
        else:
            amount = amount.quantize(QUANTUM)
    except (InvalidOperation, ValueError):
        return str(value)
    whole, _, frac = f"{amount:f}".partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"
