"""Extract an engine's real command-line flags from its own source into a flag table (JSON).

The tables in deployments/renderers/flags/ were made with this script; it reads source, it
never runs an engine and never imports one (vLLM's parser needs torch and a GPU platform).

    # vLLM: the argparse calls in the wheel
    pip download --no-deps vllm==0.8.5 -d /tmp/vllm && cd /tmp/vllm && unzip -q vllm-*.whl
    python scripts/engine_flags.py vllm /tmp/vllm 0.8.5 > deployments/renderers/flags/vllm-0.8.5.json

    # TGI / TEI: the clap `struct Args` of the launcher / router at the pinned tag
    git -C tgi show v3.0.1:launcher/src/main.rs > /tmp/main.rs
    python scripts/engine_flags.py clap /tmp/main.rs tgi 3.0.1 "<where it came from>"
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

# Kinds of flag, as the renderer and the test understand them:
#   value        --flag VALUE (or --flag=VALUE)
#   store_true   bare --flag; there is no --no-flag
#   negatable    --flag / --no-flag (argparse.BooleanOptionalAction)
#   positional   not a flag (vLLM's model_tag)


def _const(node: ast.AST) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _bool_fields(config_py: Path) -> dict[str, set[str]]:
    """Dataclass name -> its fields whose annotation mentions bool (get_kwargs() gives those
    argparse.BooleanOptionalAction)."""
    tree = ast.parse(config_py.read_text())
    out: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = set()
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if re.search(r"\bbool\b", ast.unparse(stmt.annotation)):
                        names.add(stmt.target.id)
            out[node.name] = names
    return out


def vllm_table(root: Path, version: str) -> dict[str, Any]:
    bools = _bool_fields(root / "vllm/config.py")
    flags: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    for rel in (
        "vllm/entrypoints/cli/serve.py",
        "vllm/entrypoints/openai/cli_args.py",
        "vllm/engine/arg_utils.py",
    ):
        tree = ast.parse((root / rel).read_text())
        kwargs_of: dict[str, str] = {}  # local name -> config class, from `x = get_kwargs(Cls)`
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "get_kwargs"
            ):
                kwargs_of[node.targets[0].id] = node.value.args[0].id
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"
            ):
                continue
            names = [_const(a) for a in node.args if isinstance(_const(a), str)]
            if not names:
                continue
            kind = "value"
            for kw in node.keywords:
                if kw.arg == "action":
                    text = ast.unparse(kw.value)
                    if "BooleanOptionalAction" in text:
                        kind = "negatable"
                    elif text.strip("'\"") in ("store_true", "store_false"):
                        kind = "store_true"
                elif kw.arg is None:  # **X_kwargs["field"]
                    sub = kw.value
                    if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name):
                        cls = kwargs_of.get(sub.value.id)
                        field = _const(sub.slice)
                        if cls and field in bools.get(cls, set()):
                            kind = "negatable"
            if not names[0].startswith("-"):
                flags[names[0]] = {"kind": "positional"}
                continue
            long = next((n for n in names if n.startswith("--")), names[0])
            flags[long] = {"kind": kind}
            for other in names:
                if other != long:
                    aliases[other] = long
    return {
        "engine": "vllm",
        "version": version,
        "source": (
            f"vllm=={version} wheel from PyPI (pip download --no-deps): argparse calls in "
            "vllm/entrypoints/cli/serve.py, vllm/entrypoints/openai/cli_args.py "
            "(make_arg_parser) and vllm/engine/arg_utils.py (EngineArgs/AsyncEngineArgs."
            "add_cli_args); booleans from get_kwargs() are argparse.BooleanOptionalAction "
            "(field annotations in vllm/config.py). Extracted by scripts/engine_flags.py."
        ),
        # FlexibleArgumentParser turns --max_model_len into --max-model-len.
        "underscores_allowed": True,
        "flags": dict(sorted(flags.items())),
        "aliases": dict(sorted(aliases.items())),
    }


_FIELD = re.compile(r"^\s*(?:pub\s+)?([a-z_][a-z0-9_]*)\s*:\s*([^,]+),\s*$")
_ATTR = re.compile(r"^\s*#\[(?:clap|arg)\((.*)\)\]\s*$")


def clap_table(main_rs: Path, engine: str, version: str, source: str) -> dict[str, Any]:
    """The fields of clap's derive `struct Args`: `bool` is a bare flag (ArgAction::SetTrue),
    everything else takes a value; `long` is the kebab-cased field name unless renamed."""
    text = main_rs.read_text()
    body = text[text.index("struct Args {") :]
    body = body[: body.index("\n}")]
    flags: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    attrs: list[str] = []
    for line in body.splitlines()[1:]:
        m = _ATTR.match(line)
        if m:
            attrs.append(m.group(1))
            continue
        m = _FIELD.match(line)
        if not m:
            continue
        name, rust_type = m.group(1), m.group(2).strip()
        attr = ", ".join(attrs)
        attrs = []
        if not re.search(r"\blong\b", attr):
            continue
        renamed = re.search(r'\blong\s*=\s*"([^"]+)"', attr)
        long = "--" + (renamed.group(1) if renamed else name.replace("_", "-"))
        kind = "store_true" if rust_type == "bool" else "value"
        entry: dict[str, Any] = {"kind": kind}
        if re.search(r"\benv\b", attr):
            entry["env"] = name.upper()
        flags[long] = entry
        if re.search(r"\bshort\b(?!\s*=)", attr):
            aliases["-" + name[0]] = long
    return {
        "engine": engine,
        "version": version,
        "source": source,
        "underscores_allowed": False,
        "flags": dict(sorted(flags.items())),
        "aliases": dict(sorted(aliases.items())),
    }


def main(argv: list[str]) -> None:
    if argv[1] == "vllm":
        table = vllm_table(Path(argv[2]), argv[3])
    elif argv[1] == "clap":
        table = clap_table(Path(argv[2]), argv[3], argv[4], argv[5])
    else:
        raise SystemExit(__doc__)
    json.dump(table, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
