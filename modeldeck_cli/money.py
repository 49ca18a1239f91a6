"""Amounts of money as the console shows them (console/money.py `money_text`): 2 to 4 decimal
places, and an amount too small for 4 keeps its first two significant digits. A copy, because the
CLI imports nothing of the server; tests/cli/test_money.py holds the two to the same table."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

QUANTUM = Decimal("0.0001")
FINEST_PLACES = 8  # a usage record's cost has 8 decimal places


def money_text(value: Any) -> str:
    """25 → "25.00", 0.0125 → "0.0125", 0.0000052 → "0.0000052"; "" for None."""
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
