"""Template helpers of the governance pages."""

from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def audit_value(value) -> str:
    """One side of a diff, as a person reads it: lists joined, dicts as JSON, empty marked."""
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ", ".join(audit_value(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else "{}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value) if value != "" else "empty"
