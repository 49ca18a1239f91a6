"""The root of /api/v1/: a list of every collection, so the API can be browsed from one place."""

from __future__ import annotations

from django.urls import get_resolver, resolve, reverse
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response


def _answers_get(path: str) -> bool:
    """A router's list route that only creates (POST /promotions/) has nothing to browse."""
    view = resolve(path).func
    actions = getattr(view, "actions", None)  # a viewset's {"get": "list", "post": "create"}
    if actions is not None:
        return "get" in actions
    view_class = getattr(view, "cls", None) or getattr(view, "view_class", None)
    return view_class is None or hasattr(view_class, "get")


@extend_schema(exclude=True)
@api_view(["GET"])
def api_root(request: Request) -> Response:
    names = sorted(
        {
            name[: -len("-list")]
            for name in get_resolver().reverse_dict.keys()
            if isinstance(name, str) and name.endswith("-list")
        }
    )
    urls = {}
    for name in names:
        path = reverse(f"{name}-list")
        if not _answers_get(path):
            continue
        # Key by the collection's path segment ("projects"), as DRF's own root does.
        urls[path.rstrip("/").rsplit("/", 1)[-1]] = request.build_absolute_uri(path)
    return Response(dict(sorted(urls.items())))
