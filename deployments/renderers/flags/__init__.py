"""Engines' real command lines: one recorded flag table per engine version, and what they allow.

Each `<engine>-<version>.json` says where it came from (`source`); scripts/engine_flags.py
extracts the vLLM, TGI and TEI tables from the engines' own argument parsers. The renderers use
a table to render booleans the way the flag really works (a store_true flag has no `--no-`
form; `argparse.BooleanOptionalAction` has both) and to refuse, at save time, a flag the pinned
engine version does not have — which would otherwise exit 2 and crash-loop on the cluster.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DIR = Path(__file__).resolve().parent

# Flag kinds (see scripts/engine_flags.py).
VALUE = "value"
STORE_TRUE = "store_true"
NEGATABLE = "negatable"
POSITIONAL = "positional"

# TEI publishes one image per GPU architecture: `86-1.5`, `turing-1.5`, `cpu-1.5` run the same
# router as `1.5`.
_ARCH_PREFIX = re.compile(r"^(cpu|turing|hopper|ampere|\d{2})-")


@dataclass(frozen=True)
class FlagTable:
    engine: str
    version: str
    tags: tuple[str, ...]
    source: str
    flags: dict[str, dict[str, Any]]
    aliases: dict[str, str] = field(default_factory=dict)
    env: dict[str, dict[str, Any]] = field(default_factory=dict)
    underscores_allowed: bool = False

    def canonical(self, flag: str) -> str:
        """`-tp` -> `--tensor-parallel-size`; `--max_model_len` -> `--max-model-len` where the
        parser accepts underscores."""
        if flag in self.aliases:
            return self.aliases[flag]
        if self.underscores_allowed and flag.startswith("--"):
            return "--" + flag[2:].replace("_", "-")
        return flag

    def kind(self, flag: str) -> str | None:
        """The kind of `--flag` (without `--no-`), or None when this version has no such flag."""
        entry = self.flags.get(self.canonical(flag))
        return entry["kind"] if entry else None

    def problems(self, args: Sequence[str]) -> list[str]:
        """What in `args` this engine version would refuse (argparse/clap exit 2), in words."""
        found: list[str] = []
        i = 0
        positionals = [name for name, e in self.flags.items() if e["kind"] == POSITIONAL]
        while i < len(args):
            token = args[i]
            if not _is_flag(token):
                if i == 0 and positionals:
                    i += 1
                    continue
                found.append(f"{token!r} is not a flag or the value of one")
                i += 1
                continue
            name, eq, _ = token.partition("=")
            kind = self.kind(name)
            if kind is None and name.startswith("--no-"):
                positive = "--" + name[len("--no-") :]
                if self.kind(positive) == NEGATABLE and not eq:
                    i += 1
                    continue
                if self.kind(positive) == STORE_TRUE:
                    found.append(f"{name}: {positive} is an on/off switch without a --no- form")
                    i += 1
                    continue
            if kind is None or kind == POSITIONAL:
                found.append(f"{name} is not a {self.engine} {self.version} flag")
                i += 1
            elif kind in (STORE_TRUE, NEGATABLE):
                if eq:
                    found.append(f"{name} takes no value")
                i += 1
            else:  # VALUE
                if eq:
                    i += 1
                elif i + 1 >= len(args) or _is_flag(args[i + 1]):
                    found.append(f"{name} needs a value")
                    i += 1
                else:
                    i += 2
        return found


def _is_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not (token[1].isdigit() or token[1] == ".")


@functools.cache
def tables() -> tuple[FlagTable, ...]:
    out = []
    for path in sorted(_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        out.append(
            FlagTable(
                engine=data["engine"],
                version=data["version"],
                tags=tuple(data["tags"]),
                source=data["source"],
                flags=data.get("flags") or {},
                aliases=data.get("aliases") or {},
                env=data.get("env") or {},
                underscores_allowed=bool(data.get("underscores_allowed")),
            )
        )
    return tuple(out)


def image_version(image: str) -> str:
    """`vllm/vllm-openai:v0.8.5` -> `0.8.5`; `...text-embeddings-inference:86-1.5` -> `1.5`."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    tag = _ARCH_PREFIX.sub("", tag)
    return tag[1:] if tag[:1] == "v" and tag[1:2].isdigit() else tag


def table_for(engine: str, image: str) -> FlagTable | None:
    """The recorded table of the engine version an image pins, or None if none is recorded."""
    version = image_version(image)
    for table in tables():
        if table.engine == engine and version in table.tags:
            return table
    return None


def best_table(engine: str, image: str) -> FlagTable | None:
    """The image's own table, else the newest recorded one of the engine: an unknown version
    is not refused, but its booleans still render the way this engine's flags work."""
    exact = table_for(engine, image)
    if exact is not None:
        return exact
    known = [t for t in tables() if t.engine == engine]
    return max(known, key=lambda t: _version_key(t.version)) if known else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))
