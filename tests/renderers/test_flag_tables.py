"""Every built-in bundle and every example renders only flags its engine version really has.

The tables in deployments/renderers/flags/ come from the engines' own parsers (vLLM's argparse
in its wheel, the clap `struct Args` of TGI's launcher and TEI's router at the pinned tag) and
NIM's documented environment variables; each carries its `source`. The checker here reads the
JSON itself, so it does not share a bug with the renderer's own check.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from deployments.renderers import render
from deployments.spec import _render_spec, normalize_spec

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ROOT / "deployments" / "renderers" / "flags"
EXAMPLES = ROOT / "examples"


def _tables() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in FLAGS.glob("*.json"):
        data = json.loads(path.read_text())
        for tag in data["tags"]:
            out[(data["engine"], tag)] = data
    return out


def _version(image: str) -> str:
    tag = image.rsplit(":", 1)[1]
    for prefix in ("cpu-", "turing-", "hopper-", "86-", "89-"):
        tag = tag.removeprefix(prefix)
    return tag.removeprefix("v")


def table_for(engine: str, image: str) -> dict[str, Any]:
    table = _tables().get((engine, _version(image)))
    assert table is not None, f"no recorded flag table for {engine} {image}"
    assert table["source"], "a table says where it came from"
    return table


def arg_problems(table: dict[str, Any], args: list[str]) -> list[str]:
    """What argparse / clap would refuse in `args` (exit 2), by the table."""
    flags, aliases = table["flags"], table.get("aliases", {})

    def kind(name: str) -> str | None:
        name = aliases.get(name, name)
        if table.get("underscores_allowed"):
            name = "--" + name[2:].replace("_", "-")
        return (flags.get(name) or {}).get("kind")

    problems = []
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("-"):
            if i == 0 and any(f["kind"] == "positional" for f in flags.values()):
                i += 1
                continue
            problems.append(f"stray value {token!r}")
            i += 1
            continue
        name, eq, _ = token.partition("=")
        k = kind(name)
        if k is None and name.startswith("--no-"):
            if kind("--" + name[5:]) == "negatable":
                i += 1
                continue
            problems.append(f"{name}: --{name[5:]} has no --no- form")
            i += 1
            continue
        if k is None:
            problems.append(f"{name} is not a flag")
            i += 1
        elif k in ("store_true", "negatable"):
            if eq:
                problems.append(f"{name} takes no value")
            i += 1
        elif eq:
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            i += 2
        else:
            problems.append(f"{name} needs a value")
            i += 1
    return problems


def env_problems(table: dict[str, Any], env: list[dict[str, Any]]) -> list[str]:
    documented = table.get("env", {})
    return [
        f"{e['name']} is not a documented NIM variable"
        for e in env
        if e["name"].startswith(("NIM_", "NGC_")) and e["name"] not in documented
    ]


def _model_for(engine: str, image: str) -> SimpleNamespace:
    if engine == "nim":
        return SimpleNamespace(
            source="ngc", ngc_image=image.rsplit(":", 1)[0], ngc_tag=image.rsplit(":", 1)[1],
            name="llama", repo_id="", revision="", storage_uri="", config={}, files=[],
        )  # fmt: skip
    return SimpleNamespace(
        source="huggingface", repo_id="Qwen/Qwen2.5-0.5B-Instruct", name="qwen",
        revision="a8b602d9dafd3a75d382e62757d83d89fca3be54", ngc_image="", ngc_tag="",
        storage_uri="", config={}, files=[],
    )  # fmt: skip


def rendered_container(bundle: Any, spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    model = _model_for(bundle.engine, bundle.image)
    canonical = normalize_spec(spec, bundle=bundle, model=model)
    rs = _render_spec(canonical, model=model, bundle=bundle, deployment_id=1, name="flags",
                      namespace="flags", revision=1, project=None, secret_env={},
                      image_pull_secrets=None)  # fmt: skip
    deployment = next(o for o in render(rs) if o["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0], rs.image


def check(bundle: Any, spec: dict[str, Any]) -> list[str]:
    container, image = rendered_container(bundle, spec)
    table = table_for(bundle.engine, image)
    return arg_problems(table, container.get("args") or []) + env_problems(
        table, container.get("env") or []
    )


def _gpus(bundle: Any) -> int:
    return 0 if "cpu" in bundle.image.rsplit(":", 1)[1] else 1


@pytest.fixture
def builtin_bundles(db: Any) -> list[Any]:
    from catalog.models import ProfileBundle
    from catalog.services import bundles_builtin_ensure

    bundles_builtin_ensure()
    bundles = list(ProfileBundle.objects.filter(organization=None).order_by("name"))
    assert {b.name for b in bundles} >= {"vllm", "nim-llm", "tgi", "tei", "tei-cpu"}
    return bundles


def test_every_builtin_bundle_renders_only_real_flags(builtin_bundles: list[Any]) -> None:
    failures = {}
    for bundle in builtin_bundles:
        if bundle.engine == "torchserve":
            continue  # no flag table: its command line is ModelDeck's own (renderers/torchserve.py)
        spec = {"resources": {"gpus": _gpus(bundle), "cpu": "2", "memory": "8Gi"}}
        problems = check(bundle, spec)
        if problems:
            failures[bundle.name] = problems
    assert failures == {}


def test_builtin_vllm_bundle_does_not_render_no_enforce_eager(builtin_bundles: list[Any]) -> None:
    vllm = next(b for b in builtin_bundles if b.name == "vllm")
    assert any(v["name"] == "enforce_eager" and v["default"] is False for v in vllm.variables)
    container, _ = rendered_container(vllm, {})
    assert "--no-enforce-eager" not in container["args"]
    assert "--enforce-eager" not in container["args"]  # off: store_true flags are left out


@pytest.mark.parametrize("value,expected", [(True, ["--enforce-eager"]), (False, [])])
def test_store_true_flag_renders_bare_or_not_at_all(
    builtin_bundles: list[Any], value: bool, expected: list[str]
) -> None:
    vllm = next(b for b in builtin_bundles if b.name == "vllm")
    bundle = SimpleNamespace(**{**vars(vllm), "variables": [
        {"name": "enforce_eager", "type": "boolean", "default": value}]})  # fmt: skip
    container, _ = rendered_container(bundle, {})
    assert [a for a in container["args"] if "enforce-eager" in a] == expected


@pytest.mark.parametrize(
    "caching,expected",
    [(True, ["--enable-prefix-caching"]), (False, ["--no-enable-prefix-caching"])],
)
def test_negatable_flag_renders_both_ways(
    builtin_bundles: list[Any], caching: bool, expected: list[str]
) -> None:
    # --enable-prefix-caching is an argparse.BooleanOptionalAction in vLLM 0.8.5.
    vllm = next(b for b in builtin_bundles if b.name == "vllm")
    container, _ = rendered_container(vllm, {"prompt_caching": caching})
    assert [a for a in container["args"] if "prefix-caching" in a] == expected


def test_the_checker_catches_what_today_rendered() -> None:
    table = table_for("vllm", "vllm/vllm-openai:v0.8.5")
    assert arg_problems(table, ["m", "--enforce-eager"]) == []
    assert arg_problems(table, ["m", "--no-enforce-eager"]) != []
    assert arg_problems(table, ["m", "--no-enable-prefix-caching", "-tp", "2"]) == []
    tgi = table_for("tgi", "ghcr.io/huggingface/text-generation-inference:3.0.1")
    assert arg_problems(tgi, ["--trust-remote-code", "--sharded", "true"]) == []
    assert arg_problems(tgi, ["--no-trust-remote-code"]) != []


def _example_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_example_renders_only_real_flags(builtin_bundles: list[Any]) -> None:
    by_name = {b.name: b for b in builtin_bundles}
    checked = 0
    failures = {}
    for filename, doc in _example_documents():
        if doc["kind"] == "ProfileBundle":
            spec = doc["spec"]
            bundle = SimpleNamespace(
                name=doc["metadata"]["name"], engine=spec["engine"], image=spec["image"],
                default_args=spec.get("default_args") or [], variables=spec.get("variables") or [],
            )  # fmt: skip
            problems = check(bundle, {"resources": {"gpus": 1}})
        elif doc["kind"] == "ModelDeployment":
            spec = dict(doc["spec"])
            bundle = by_name[spec.pop("bundle")]
            for key in ("model", "pool", "endpoint"):
                spec.pop(key, None)
            problems = check(bundle, spec)
        else:
            continue
        checked += 1
        if problems:
            failures[f"{filename}:{doc['metadata']['name']}"] = problems
    assert checked >= 2
    assert failures == {}


def test_a_flag_the_pinned_version_lacks_is_refused_at_save(builtin_bundles: list[Any]) -> None:
    from django.core.exceptions import ValidationError

    vllm = next(b for b in builtin_bundles if b.name == "vllm")
    with pytest.raises(ValidationError) as err:
        normalize_spec({"extra_args": ["--no-enforce-eager"]}, bundle=vllm,
                       model=_model_for("vllm", vllm.image))  # fmt: skip
    assert "--no-" in str(err.value)
