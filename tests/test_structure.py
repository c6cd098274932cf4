"""Package structure: stable public names, lazy CLI start-up, no import cycles."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lightsr
from lightsr.cli import build_parser

PACKAGE = Path(lightsr.__file__).resolve().parent
HEAVY = ("torch", "numpy", "cv2")


def _run_python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_public_names_survive_importing_every_submodule():
    code = """
import importlib, pkgutil, types, lightsr
before = {name: getattr(lightsr, name) for name in lightsr.__all__}
for info in pkgutil.walk_packages(lightsr.__path__, "lightsr."):
    if not info.name.endswith(("__main__", ".worker")):
        importlib.import_module(info.name)
import lightsr.imresize as m
changed = [n for n in lightsr.__all__ if getattr(lightsr, n) is not before[n]]
modules = [n for n in lightsr.__all__ if isinstance(getattr(lightsr, n), types.ModuleType)]
print(changed, modules, type(lightsr.imresize).__name__)
"""
    assert _run_python(code).split() == ["[]", "[]", "function"]


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("command", ["", *_subcommands()])
def test_help_imports_no_heavy_module(command):
    argv = [command, "--help"] if command else ["--help"]
    code = f"""
import contextlib, io, json, sys
from lightsr.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main({argv!r})
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""
    assert json.loads(_run_python(code)) == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.AST) -> set[ast.AST]:
    """The nodes under ``if TYPE_CHECKING:`` (imports for annotations, never run)."""
    return {
        child
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for statement in node.body
        for child in ast.walk(statement)
    }


def _imports(path: Path, modules: set[str]) -> set[str]:
    """lightsr modules that ``path`` imports when run (lazy imports inside functions too,
    not the annotation-only ones under ``if TYPE_CHECKING:``)."""
    found = set()
    tree = ast.parse(path.read_text())
    type_only = _type_only(tree)
    for node in ast.walk(tree):
        if node in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    """Module → the lightsr modules it imports, without edges to its own parent packages
    (Python imports those first anyway, so they add no dependency)."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        ancestors = {name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1)}
        graph[name] = _imports(path, set(paths)) - ancestors - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*stack[stack.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert "lightsr.ort" in graph["lightsr.export.verify"]  # the graph sees lazy imports
    assert find_cycle(graph) is None
