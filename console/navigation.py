"""The two navigations of the console: Operations Console and Developer Hub."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    icon: str
    # URL prefixes that count as "inside" this item, for the active highlight.
    prefixes: tuple[str, ...] = ()


SECTIONS: list[tuple[str, list[NavItem]]] = [
    (
        "Operations Console",
        [
            NavItem("Dashboard", "dashboard", "◧"),
            NavItem("Catalog", "catalog:index", "▤", ("/catalog/",)),
            NavItem("Model Deployments", "deployments:list", "▶", ("/deployments/",)),
            NavItem("Compute Pools", "deployments:pools", "▦", ("/pools/",)),
            NavItem("Projects", "projects:list", "▣", ("/projects/",)),
            NavItem("Settings", "settings", "⚙", ("/settings/", "/audit/", "/quotas/", "/organization/")),
        ],
    ),
    (
        "Developer Hub",
        [
            NavItem("Models", "devhub:models", "◉", ("/hub/models",)),
            NavItem("API Keys", "devhub:keys", "◈", ("/hub/keys",)),
            NavItem("Usage", "devhub:usage", "▨", ("/hub/usage",)),
            NavItem("Budgets", "devhub:budgets", "◔", ("/hub/budgets",)),
        ],
    ),
]


def build(path: str) -> list[dict]:
    sections = []
    for title, items in SECTIONS:
        rendered = []
        for item in items:
            try:
                url = reverse(item.url_name)
            except NoReverseMatch:
                continue
            active = path == url or any(path.startswith(p) for p in item.prefixes)
            rendered.append({"label": item.label, "url": url, "icon": item.icon, "active": active})
        sections.append({"title": title, "items": rendered})
    return sections
