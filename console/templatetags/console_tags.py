"""Template helpers shared by every app's pages."""

from __future__ import annotations

import re

from django import template
from django.utils import timezone

from console.money import money_text
from gateway.models import status_words as usage_status_words

register = template.Library()


@register.inclusion_tag("console/htmx/field.html", takes_context=True)
def form_field(context, field, wide: bool = False):
    return {"field": field, "validate_url": context.get("validate_url", ""), "wide": wide}


@register.inclusion_tag("console/quota_bar.html")
def quota_bar(used: int, quota: int):
    percent = 100 if quota == 0 and used else (0 if quota == 0 else min(100, round(100 * used / quota)))
    level = "bad" if percent >= 100 else "warn" if percent >= 80 else ""
    return {"used": used, "quota": quota, "percent": percent, "level": level}


# A refusal that already names someone to turn to ("ask one…", "Only organization admins…",
# "Platform operators manage…") needs no generic "an admin can give you another role" after it.
WHOM_TO_ASK = re.compile(r"\b(ask|admins?|operators?|owner)\b", re.IGNORECASE)


@register.filter
def names_whom_to_ask(reason) -> bool:
    return bool(WHOM_TO_ASK.search(str(reason or "")))


@register.filter
def gib(value) -> str:
    """A memory size given in GiB, as people read it: "8.0 GiB"; under 0.1 GiB in MiB ("48 MiB"),
    where one decimal of GiB said "0.0" (a small model's KV cache)."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return ""
    if size >= 0.1 or size <= 0:
        return f"{size:.1f} GiB" if size > 0 else "0 GiB"
    mib = size * 1024
    return f"{mib:.0f} MiB" if mib >= 1 else "< 1 MiB"


@register.filter
def money(value) -> str:
    """An amount with 2 to 4 decimal places (console.money): "0.02 / 0.025 USD", not "0.0200"."""
    return money_text(value)


@register.filter
def status_words(status) -> str:
    """409 → "deactivated": a usage row's status in words (gateway.models.status_words)."""
    return usage_status_words(status)


@register.filter
def get_item(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.inclusion_tag("console/htmx/sort_th.html")
def sort_th(listing, key: str, label: str, css: str = ""):
    """A table header that sorts the server-side list by `key` (console.paging), keeping filters."""
    return {"url": listing.sort_url(key), "state": listing.sort_state(key), "label": label, "css": css}


@register.filter
def seconds_since(when) -> int:
    return max(0, int((timezone.now() - when).total_seconds())) if when else 0


@register.filter
def ago(when) -> str:
    """How long ago, to the second under a minute ("10 s ago"). On a page, a `<time data-ago="<seconds
    since>">` keeps counting the same way (static/modeldeck/app.js)."""
    if not when:
        return ""
    seconds = seconds_since(when)
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"
