"""Object ids and counts typed by people and programs: ASCII digits only, ids within bigint."""

from __future__ import annotations

MAX_ID = 2**63 - 1  # PostgreSQL's bigint: a longer id names no row, and SQLite can't bind it


def is_digits(text: object) -> bool:
    """ "12" yes; "²", "١٢", "" and " 1" no. str.isdigit() alone accepts "²", which int() refuses
    (a 500), and other scripts' digits, which int() reads as a number nobody typed."""
    return isinstance(text, str) and text.isascii() and text.isdigit()


def parse_id(value: object) -> int | None:
    """An object id from a URL, query, form or JSON (12 or "12"), else None: not a whole number
    in ASCII digits, or past any id a row can have."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value)
    if not is_digits(text):
        return None
    number = int(text)
    return number if number <= MAX_ID else None
