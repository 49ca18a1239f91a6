"""Template context every console page needs: navigation, organizations, role."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from console import navigation
from projects.selectors import organizations_for_user


def console(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"embedded": settings.EMBEDDED, "demo_password_hint": "admin" if settings.EMBEDDED else ""}
    return {
        "nav_sections": navigation.build(request.path),
        "user_organizations": organizations_for_user(user),
        "current_organization": getattr(request, "organization", None),
        "current_role": getattr(request, "role", None),
        "embedded": settings.EMBEDDED,
    }
