"""Puts the user's current organization on the request (chosen in the switcher, kept in the session)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from projects.models import Membership

SESSION_KEY = "modeldeck_organization"


class CurrentOrganizationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.organization = None
        request.role = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            memberships = Membership.objects.filter(user=user).select_related("organization")
            wanted = request.session.get(SESSION_KEY)
            chosen = None
            for membership in memberships:
                if chosen is None or membership.organization_id == wanted:
                    chosen = membership
            if chosen is not None:
                request.organization = chosen.organization
                request.role = chosen.role
        return self.get_response(request)
