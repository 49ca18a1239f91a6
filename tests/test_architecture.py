"""Imports flow down the layers: models/permissions/audit → services/selectors → tasks → views/API.

A small check over ``ast`` (no Django needed): it reads every product module, sorts it into a
layer by its name, and refuses
- an import of a higher layer by a lower one (module-level or inside a function),
- any import of the simulators (``sandbox``) by product code,
- a module-level import cycle,
- a function-level import of the project's own module with no comment saying why,
- ``except ImportError`` around an import of the project's own module (it would hide real errors).
The tests at the bottom feed it synthetic modules to prove each rule can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_APPS = ("console", "projects", "catalog", "deployments", "gateway", "sharing")
SIMULATORS = "sandbox"

BOTTOM, DOMAIN, TASKS, ENTRY = 0, 1, 2, 3
LAYER_NAMES = {BOTTOM: "models/permissions/audit", DOMAIN: "services/selectors", TASKS: "tasks",
               ENTRY: "views/API/gateway"}  # fmt: skip
# Bottom-layer modules besides models: the permission rule, the audit trail and pure helpers.
BOTTOM_MODULES = {"console.permissions", "sharing.audit", "console.diff", "console.crypto", "console.env"}
# Entry points and wiring: what Django, Celery or the ASGI server load, and nothing imports back.
ENTRY_MODULES = {
    "console", "console.settings", "console.asgi", "console.wsgi", "console.celery", "console.urls",
    "console.api", "console.api_root", "console.middleware", "console.context_processors",
    "console.navigation", "console.health", "console.edit", "gateway.app",
}  # fmt: skip
ENTRY_PARTS = {"views", "forms", "admin", "urls", "api", "management", "templatetags", "demo", "apps"}


def layer(module: str) -> int:
    parts = module.split(".")
    if module in ENTRY_MODULES or (len(parts) > 1 and parts[1] in ENTRY_PARTS):
        return ENTRY
    if len(parts) == 1 or module in BOTTOM_MODULES or parts[1] == "models":
        return BOTTOM
    if parts[1] == "tasks":
        return TASKS
    return DOMAIN


def read_tree(root: Path = ROOT) -> dict[str, str]:
    """Module name → source, for every product module and the simulators (migrations aside)."""
    sources = {}
    for top in (*PRODUCT_APPS, SIMULATORS):
        for path in (root / top).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            sources[".".join(parts)] = path.read_text()
    return sources


def _imports(module: str, source: str, is_package: bool):
    """(target name, line, inside a function?, under TYPE_CHECKING?, inside try/except ImportError?)."""
    found = []

    def absolute(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(node, in_function: bool, type_checking: bool, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            tc = type_checking or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            guard = guarded or (
                isinstance(child, ast.Try)
                and any("ImportError" in ast.unparse(h.type or ast.Constant("")) for h in child.handlers)
            )
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function, type_checking, guarded) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = absolute(child)
                found.extend(
                    (f"{base}.{a.name}", child.lineno, in_function, type_checking, guarded)
                    for a in child.names
                )
            visit(child, func, tc, guard)

    visit(ast.parse(source), False, False, False)
    return found


def _resolve(name: str, modules: dict[str, str]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _has_reason(lines: list[str], lineno: int) -> bool:
    line, above = lines[lineno - 1], lines[lineno - 2].strip() if lineno > 1 else ""
    return "#" in line or above.startswith("#")


def violations(modules: dict[str, str], packages: set[str] | None = None) -> list[str]:
    """Every broken rule in ``modules`` (name → source); ``packages`` names the ``__init__`` ones."""
    packages = packages if packages is not None else {m for m in modules if "." not in m}
    found: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, source in sorted(modules.items()):
        if module.split(".")[0] == SIMULATORS:
            continue
        lines = source.splitlines()
        for name, lineno, in_function, type_checking, guarded in _imports(
            module, source, module in packages
        ):
            target = _resolve(name, modules)
            if target is None or target == module:
                continue
            where = f"{module}:{lineno} imports {target}"
            if guarded:
                found.append(f"{where} inside try/except ImportError")
            if target.split(".")[0] == SIMULATORS:
                found.append(f"{where}: product code never imports the simulators")
                continue
            if type_checking:
                continue
            if layer(target) > layer(module):
                found.append(
                    f"{where}: {LAYER_NAMES[layer(module)]} must not import "
                    f"{LAYER_NAMES[layer(target)]}"
                )
            if in_function:
                if not _has_reason(lines, lineno):
                    found.append(f"{where} inside a function with no comment saying why")
            else:
                graph[module].add(target)
    found += [f"module-level import cycle: {' → '.join(c)}" for c in _cycles(graph)]
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


# --------------------------------------------------------------------------- the real tree


def test_product_imports_flow_down_the_layers():
    modules = read_tree()
    packages = {m for m in modules if (ROOT / m.replace(".", "/") / "__init__.py").exists()}
    assert len(modules) > 100  # it really read the tree
    assert violations(modules, packages) == []


# --------------------------------------------------------------------------- the checker can fail


def test_a_model_importing_a_service_is_refused():
    found = violations({
        "shop.models": "from shop.services import buy\n",
        "shop.services": "X = 1\n",
    })  # fmt: skip
    assert found == ["shop.models:1 imports shop.services: models/permissions/audit must not import services/selectors"]


def test_a_service_importing_a_task_even_inside_a_function_is_refused():
    found = violations({
        "shop.services": "def buy():\n    # queue it\n    from shop.tasks import ship\n",
        "shop.tasks": "X = 1\n",
    })  # fmt: skip
    assert found == ["shop.services:3 imports shop.tasks: services/selectors must not import tasks"]


def test_a_task_importing_a_view_is_refused():
    found = violations({"shop.tasks": "import shop.views\n", "shop.views": "X = 1\n"})
    assert found == ["shop.tasks:1 imports shop.views: tasks must not import views/API/gateway"]


def test_product_code_importing_the_simulators_is_refused():
    found = violations({
        "shop.views": "from sandbox.kubelet import SandboxCluster\n",
        "sandbox.kubelet": "from shop.models import Order\n",  # the simulators may import product code
        "shop.models": "X = 1\n",
    })  # fmt: skip
    assert found == ["shop.views:1 imports sandbox.kubelet: product code never imports the simulators"]


def test_a_module_level_cycle_is_refused_but_a_reasoned_function_level_import_is_not():
    cycle = violations({
        "shop.services": "from shop.selectors import find\n",
        "shop.selectors": "from shop.services import buy\n",
    })  # fmt: skip
    assert cycle == ["module-level import cycle: shop.selectors → shop.services"]
    broken = violations({
        "shop.services": "from shop.selectors import find\n",
        "shop.selectors": "def f():\n    from shop.services import buy  # cycle: services read selectors\n",
    })  # fmt: skip
    assert broken == []


def test_a_function_level_import_needs_a_reason():
    found = violations({
        "shop.views": "def page():\n    from shop.services import buy\n",
        "shop.services": "X = 1\n",
    })  # fmt: skip
    assert found == ["shop.views:2 imports shop.services inside a function with no comment saying why"]


def test_except_import_error_around_the_projects_own_module_is_refused():
    found = violations({
        "shop.views": "try:\n    from shop.services import buy\nexcept ImportError:\n    buy = None\n",
        "shop.services": "X = 1\n",
    })  # fmt: skip
    assert found == ["shop.views:2 imports shop.services inside try/except ImportError"]


def test_type_checking_imports_do_not_count_as_layers_or_cycles():
    found = violations({
        "shop.models": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shop.services import buy\n",
        "shop.services": "from shop.models import Order\n",
    })  # fmt: skip
    assert found == []
