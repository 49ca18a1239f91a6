"""Field-level differences between two nested dicts (specs, audit snapshots), with dotted names."""

from __future__ import annotations

from typing import Any


def flatten(data: dict | None, prefix: str = "") -> dict[str, Any]:
    """{"resources": {"gpus": 1}} → {"resources.gpus": 1}; lists and empty dicts stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in (data or {}).items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def changes(before: dict | None, after: dict | None) -> list[dict[str, Any]]:
    """[{field, old, new}] for every dotted field that differs, sorted; a missing side is None."""
    old, new = flatten(before), flatten(after)
    return [
        {"field": key, "old": old.get(key), "new": new.get(key)}
        for key in sorted(old.keys() | new.keys(), key=str)
        if old.get(key) != new.get(key)
    ]
