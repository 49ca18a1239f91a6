"""Request parsers of the REST API (a module of its own: DRF reads them while it imports)."""

from __future__ import annotations

from rest_framework import exceptions, serializers
from rest_framework.parsers import JSONParser

# No body of this API nests deeper than a spec's mappings (about 6 levels); 32 leaves room and
# keeps every later walk of the data (merging, validating, copying) far from Python's recursion
# limit, which a 900-level body would reach in some view's recursion even after parsing.
MAX_JSON_DEPTH = 32
TOO_DEEP = f"The JSON body is nested too deeply (more than {MAX_JSON_DEPTH} levels)."
VALUE_TOO_DEEP = f"The value is nested too deeply (more than {MAX_JSON_DEPTH} levels)."


def json_depth_exceeds(data: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether lists/objects nest more than `limit` levels (iterative: no recursion of its own)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


class JSONObjectParser(JSONParser):
    """JSON bodies of this API are objects; `0`, `[]` or `"x"` is a 400 before any view reads it,
    and so is a body nested too deeply (Python's parser raises RecursionError near 1,000)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(TOO_DEEP) from None
        if not isinstance(data, dict):
            raise exceptions.ParseError(
                f"The JSON body must be an object, not {type(data).__name__ if data is not None else 'null'}."
            )
        if json_depth_exceeds(data):
            raise exceptions.ParseError(TOO_DEEP)
        return data


class BoundedJSONField(serializers.JSONField):
    """A JSON value in a field: in a form or multipart body DRF parses its text with json.loads,
    past the body parser's depth check, where "[[[…" raised RecursionError (a 500)."""

    def to_internal_value(self, data):
        try:
            value = super().to_internal_value(data)
        except RecursionError:
            raise serializers.ValidationError(VALUE_TOO_DEEP) from None
        if json_depth_exceeds(value):
            raise serializers.ValidationError(VALUE_TOO_DEEP)
        return value
