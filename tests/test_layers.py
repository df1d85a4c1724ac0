"""The wings of the package and the arrows between them: every import (at module level or inside a function)
goes to the importer's own wing or to a wing its wing's docstring names under "May import:", and no set of
modules imports itself round in a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "jitckpt"
FACES = {"jitckpt", "jitckpt.__main__"}  # the package's own face: the top-level names it lazily re-exports


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def wing_of(module: str) -> str:
    return module.split(".")[1]


def wing_doc(wing: str) -> str:
    path = PACKAGE / wing / "__init__.py"
    return ast.get_docstring(ast.parse((path if path.exists() else PACKAGE / f"{wing}.py").read_text())) or ""


WINGS = sorted({wing_of(m) for m in MODULES if m not in FACES})


def allowed(wing: str) -> set[str]:
    found = re.search(r"^May import: (.*)$", wing_doc(wing), re.MULTILINE)
    assert found, f"jitckpt.{wing}'s docstring says nothing under 'May import:'"
    rule = found.group(1).rstrip(".")
    if rule == "every other wing":
        return set(WINGS) - {wing}
    if rule == "nothing":
        return set()
    return {name.strip() for name in rule.split(",")}


def _root_faces() -> dict[str, str]:
    """The names the root package re-exports lazily (``from jitckpt import convert`` is an import of the api)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    lazy = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_LAZY")
    return {name: f"jitckpt.{module}" for name, module in ast.literal_eval(lazy.value).items()}


ROOT_FACES = _root_faces()
DYNAMIC_IMPORTS = {"import_module", "__import__", "resolve_name", "run_module"}


def imports_of(module: str) -> set[str]:
    """The jitckpt modules ``module`` imports, anywhere in its body (a package import counts as its ``__init__``;
    a lazy name of the root package as the module it comes from; ``importlib.import_module("jitckpt.x")`` and
    the like as ``jitckpt.x``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES
                     else ROOT_FACES.get(alias.name, base) if base == "jitckpt" else base for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in DYNAMIC_IMPORTS:
            names = [arg.value.split(":")[0] for arg in node.args[:1]
                     if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
            assert all(n.startswith("jitckpt") or not n.startswith(".") for n in names), \
                f"{module}: a relative import by name ({names}): write it as an import statement"
        else:
            continue
        found.update(name for name in names if name in MODULES and name != module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_wing_says_what_it_may_import_and_the_rule_has_no_circle():
    rules = {wing: allowed(wing) for wing in WINGS}
    for wing, names in rules.items():
        assert names <= set(WINGS), f"jitckpt.{wing} names unknown wings: {sorted(names - set(WINGS))}"
    order: list[str] = []
    while len(order) < len(rules):
        ready = [w for w in rules if w not in order and rules[w] <= set(order)]
        assert ready, f"the wings' rules run in a circle among {sorted(set(rules) - set(order))}"
        order.extend(sorted(ready))


@pytest.mark.parametrize("module", sorted(set(MODULES) - FACES))
def test_no_import_runs_up_a_layer(module):
    wing = wing_of(module)
    ok = allowed(wing) | {wing}
    wrong = sorted(m for m in GRAPH[module] if m not in FACES and wing_of(m) not in ok)
    assert not wrong, f"{module} (wing {wing}, may import {sorted(allowed(wing))}) imports {wrong}"


def test_no_circle_of_modules():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(GRAPH[module]):
            if dep in FACES:
                continue
            if state.get(dep) == 1:
                raise AssertionError("circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state and module not in FACES:
            visit(module)


def test_the_walk_sees_lazy_imports():
    """A function-level import counts: the walk is not fooled by moving an import into a function."""
    assert "jitckpt.model.loading" in GRAPH["jitckpt.model"]


def test_the_walk_sees_imports_in_disguise(tmp_path, monkeypatch):
    """The root's lazy names, importlib and __import__ are imports too."""
    probe = PACKAGE / "storage" / "crc32.py"
    for disguise in ("from .. import convert", "from jitckpt import load as _l",
                     "import importlib; importlib.import_module('jitckpt.cli.console')", "__import__('jitckpt.api')"):
        monkeypatch.setitem(MODULES, "jitckpt.storage.crc32", tmp_path / "crc32.py")
        (tmp_path / "crc32.py").write_text(probe.read_text() + "\n" + disguise + "\n")
        assert imports_of("jitckpt.storage.crc32") - {"jitckpt.errors"}, disguise


def test_every_module_is_small():
    """One job per module: none over 400 lines."""
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
