"""Request helpers every app's views share: the current organization, redirects after a POST, refusals."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from projects.models import Organization


def current_organization(request: HttpRequest) -> Organization:
    """The organization chosen in the switcher; 404 for a user who belongs to none."""
    if request.organization is None:
        raise Http404("You are not a member of any organization.")
    return request.organization


def redirect_after_post(request: HttpRequest, url: str) -> HttpResponse:
    # htmx follows HX-Redirect with a full page load, so the flash message shows.
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


class RefusedWithWayOn(PermissionDenied):
    """A 403 whose page offers the way that does work (templates/403.html shows it as a button),
    e.g. "Duplicate" for a built-in bundle that can't be edited."""

    def __init__(self, reason: str, *, label: str, url: str) -> None:
        super().__init__(reason)
        self.way_on = {"label": label, "url": url}
