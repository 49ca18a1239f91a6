"""Request parsers of the REST API (a module of its own: DRF reads them while it imports)."""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.parsers import JSONParser


class JSONObjectParser(JSONParser):
    """JSON bodies of this API are objects; `0`, `[]` or `"x"` is a 400 before any view reads it."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        if not isinstance(data, dict):
            raise exceptions.ParseError(
                f"The JSON body must be an object, not {type(data).__name__ if data is not None else 'null'}."
            )
        return data
