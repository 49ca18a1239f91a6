"""Puts the user's current organization on the request (chosen in the switcher, kept in the
session); serves static files to ASGI servers without Django's sync-iterator warning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

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


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, with the file handed to an ASGI server as an async iterator: Django would
    otherwise read the sync one whole and warn once per static file ("StreamingHttpResponse must
    consume synchronous iterators") — five times on the first page of `make run`."""

    @staticmethod
    def serve(static_file, request):
        response = WhiteNoiseMiddleware.serve(static_file, request)
        if isinstance(request, ASGIRequest) and getattr(response, "streaming", False) and not response.is_async:
            response.streaming_content = _file_chunks(iter(response.streaming_content))
        return response


async def _file_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Read a local file's chunks in a worker thread, so the event loop never waits on the disk."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk
