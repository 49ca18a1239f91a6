"""The one YAML loader for text a tenant sends (apply files, YAML/JSON form fields, kubeconfigs).

`yaml.safe_load` still expands anchors and aliases: a few hundred bytes of "billion laughs"
become a structure that every later walk (diff, normalize, str, JSON) pays for exponentially,
in a request and, on SQLite, under the write lock. This loader refuses anchors and aliases from
the parser's events, before anything is composed or built; it bounds the text's size, the
nesting depth (a composer recursing that deep would be a RecursionError, a 500) and the number
of documents; it refuses a NUL character (a "\\0" escape, which PostgreSQL can't store); and it
says where in words, "line N, column M", never PyYAML's "<unicode string>".
"""

from __future__ import annotations

from typing import Any

import yaml

ALIASES_REFUSED = "YAML anchors and aliases (&name / *name) aren't accepted; write the values out."
NUL_REFUSED = "A NUL character (\\0) can't be stored; remove it."
MAX_CHARS = 1_000_000
MAX_DOCUMENTS = 1000
MAX_DEPTH = 64


class YamlRefused(ValueError):
    """Why a text was not loaded, in words; `line` and `column` (1-based) say where when known.

    `syntax` is True when the text is not YAML at all (as opposed to YAML this loader refuses).
    """

    def __init__(self, problem: str, *, line: int | None = None, column: int | None = None,
                 syntax: bool = False) -> None:  # fmt: skip
        super().__init__(problem)
        self.problem, self.line, self.column, self.syntax = problem, line, column, syntax

    @property
    def where(self) -> str:
        return f"line {self.line}, column {self.column}" if self.line is not None else ""

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}" if self.where else self.problem


class _Refused(yaml.MarkedYAMLError):
    pass


# libyaml when PyYAML has it (three times faster on a large file); the same rules either way.
_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """Only what JSON has: strings, numbers, booleans, null, lists and mappings. A date or a
    time stays the text it was typed as (an impossible one, 2001-02-30, raised ValueError, a 500),
    and bytes (!!binary), sets, ordered pairs are refused in words."""


def _as_text(loader, node):
    return loader.construct_scalar(node)


def _not_json(loader, node):
    raise _Refused(problem=f"YAML type {node.tag.rsplit(':', 1)[-1]} isn't accepted; use strings, numbers, "
                   "true/false, null, lists and mappings.", problem_mark=node.start_mark)  # fmt: skip


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_text)
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _not_json)


def _check_events(text: str, max_documents: int) -> None:
    """One pass over the parser's events, before anything is composed or built."""
    depth = documents = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(problem=ALIASES_REFUSED, problem_mark=event.start_mark)
        if isinstance(event, yaml.ScalarEvent) and "\x00" in event.value:
            # A "\0" escape: PostgreSQL can store no NUL (a DataError, a 500 on a form).
            raise _Refused(problem=NUL_REFUSED, problem_mark=event.start_mark)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(problem=f"The YAML nests deeper than {MAX_DEPTH} levels.",
                               problem_mark=event.start_mark)  # fmt: skip
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > max_documents:
                many = f"{max_documents:,} document" + ("s" if max_documents != 1 else "")
                raise _Refused(problem=f"The text has more than {many}; send at most {many}.",
                               problem_mark=event.start_mark)  # fmt: skip


def _at(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _refused(exc: yaml.YAMLError | UnicodeError, text: str) -> YamlRefused:
    if isinstance(exc, UnicodeError):  # a lone surrogate: not text that can be encoded at all
        line, column = _at(text, getattr(exc, "start", 0))
        return YamlRefused("This is not valid text (a lone surrogate character).", line=line, column=column,
                           syntax=True)  # fmt: skip
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = _at(text, exc.position) if isinstance(exc.character, str) else (None, None)
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        return YamlRefused(f"YAML does not allow the control character #x{code:04x}.", line=line, column=column,
                           syntax=True)  # fmt: skip
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    if isinstance(exc, _Refused):
        return YamlRefused(str(exc.problem), line=line, column=column)
    # The problem only ("mapping values are not allowed here"): the marks' own text would name
    # "<unicode string>" and quote the line back.
    problem = str(getattr(exc, "problem", None) or getattr(exc, "context", None) or "not valid YAML")
    return YamlRefused(problem, line=line, column=column, syntax=True)


def _unreadable(exc: Exception) -> YamlRefused:
    if "integer string conversion" in str(exc):
        return YamlRefused("A number has more than 4,300 digits.")
    return YamlRefused(f"A value can't be read: {str(exc)[:120]}")


def _check_size(text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise YamlRefused(f"The text is {len(text):,} characters; at most {max_chars:,} are accepted.")


def load_all(text: str, *, max_chars: int = MAX_CHARS, max_documents: int = MAX_DOCUMENTS) -> list[Any]:
    """Every document of `text` (empty ones as None); raises YamlRefused."""
    _check_size(text, max_chars)
    try:
        _check_events(text, max_documents)
        return list(yaml.load_all(text, Loader=_Loader))
    except (yaml.YAMLError, UnicodeError) as exc:
        raise _refused(exc, text) from None
    except (ValueError, OverflowError) as exc:  # a scalar its constructor can't build (an int of 5,000 digits)
        raise _unreadable(exc) from None


def load(text: str, *, max_chars: int = MAX_CHARS) -> Any:
    """The one document of `text` (None when empty); raises YamlRefused."""
    _check_size(text, max_chars)
    try:
        _check_events(text, 1)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)
    except (yaml.YAMLError, UnicodeError) as exc:
        raise _refused(exc, text) from None
    except (ValueError, OverflowError) as exc:  # a scalar its constructor can't build (an int of 5,000 digits)
        raise _unreadable(exc) from None
