"""Template helpers shared by every app's pages."""

from __future__ import annotations

from django import template

register = template.Library()


@register.inclusion_tag("console/htmx/field.html", takes_context=True)
def form_field(context, field, wide: bool = False):
    return {"field": field, "validate_url": context.get("validate_url", ""), "wide": wide}


@register.inclusion_tag("console/quota_bar.html")
def quota_bar(used: int, quota: int):
    percent = 100 if quota == 0 and used else (0 if quota == 0 else min(100, round(100 * used / quota)))
    level = "bad" if percent >= 100 else "warn" if percent >= 80 else ""
    return {"used": used, "quota": quota, "percent": percent, "level": level}


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
