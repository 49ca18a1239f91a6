"""Request parsers of the REST API (a module of its own: DRF reads them while it imports)."""

from __future__ import annotations

import codecs
import json

from rest_framework import exceptions, serializers
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils.json import strict_constant

# No body of this API nests deeper than a spec's mappings (about 6 levels); 32 leaves room and
# keeps every later walk of the data (merging, validating, copying) far from Python's recursion
# limit, which a 900-level body would reach in some view's recursion even after parsing.
MAX_JSON_DEPTH = 32
TOO_DEEP = f"The JSON body is nested too deeply (more than {MAX_JSON_DEPTH} levels)."
VALUE_TOO_DEEP = f"The value is nested too deeply (more than {MAX_JSON_DEPTH} levels)."


class RepeatedKey(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def repeated_key_text(name: str, where: str = "The JSON body") -> str:
    return (
        f"{where} names “{name[:60]}” twice in one object; each key may appear once "
        "(with a key written twice, which value counts is not defined)."
    )


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object whose keys are all different: json.loads keeps the last of a repeated key, and a
    client that meant the first (or a proxy that read the first) would see another change made."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise RepeatedKey(next(name for name, _ in pairs if name in seen or seen.add(name)))
    return obj


def json_loads_unique(text: str | bytes) -> object:
    """json.loads as DRF calls it (NaN and Infinity refused), with a repeated key a RepeatedKey."""
    return json.loads(text, parse_constant=strict_constant, object_pairs_hook=_unique_keys)


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
    and so is a body nested too deeply (Python's parser raises RecursionError near 1,000) or one
    that names a key twice in an object, at any depth (as the gateway refuses it)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        try:
            data = json_loads_unique(codecs.getreader(encoding)(stream).read())
        except RecursionError:
            raise exceptions.ParseError(TOO_DEEP) from None
        except RepeatedKey as exc:
            raise exceptions.ParseError(repeated_key_text(exc.name)) from None
        except ValueError as exc:  # as DRF's JSONParser words it
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        if not isinstance(data, dict):
            raise exceptions.ParseError(
                f"The JSON body must be an object, not {type(data).__name__ if data is not None else 'null'}."
            )
        if json_depth_exceeds(data):
            raise exceptions.ParseError(TOO_DEEP)
        return data


class BoundedJSONField(serializers.JSONField):
    """A JSON value in a field: in a form or multipart body DRF parses its text with json.loads,
    past the body parser's depth check, where "[[[…" raised RecursionError (a 500); a key named
    twice in that text is refused as the body parser refuses it."""

    def to_internal_value(self, data):
        try:
            if getattr(data, "is_json_string", False):  # a form field's text (DRF's JSONString)
                value = json_loads_unique(data)
            else:
                value = super().to_internal_value(data)
        except RecursionError:
            raise serializers.ValidationError(VALUE_TOO_DEEP) from None
        except RepeatedKey as exc:
            raise serializers.ValidationError(repeated_key_text(exc.name, "The value")) from None
        except ValueError:
            self.fail("invalid")
        if json_depth_exceeds(value):
            raise serializers.ValidationError(VALUE_TOO_DEEP)
        return value
