"""The structure the architecture document promises: floors in one direction (import-linter's contract in
pyproject.toml, run by `make lint`), no import loop between modules, and no project import hidden inside a
function (where it would dodge a loop instead of removing it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("b24portal", "tenants", "oauth", "installs", "messageservice", "records", "placements", "console",
            "cabinet", "signin")


def test_import_contract_holds() -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_import_loop_between_modules() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    loops = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module) or ()
                loops.append(f"{module} -> {' -> '.join(chain)}")
    assert loops == [], "import loops:\n" + "\n".join(loops)


def _hidden_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if path.name == "apps.py" and func.name == "ready":
            continue  # Django's place for registering signals, steps and periodic tasks
        for node in ast.walk(func):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                names = [f".{node.module or ''}"]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith(".") or name.split(".")[0] in PACKAGES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {func.name}() imports {name}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_project_import_inside_a_function(package: str) -> None:
    hidden = [line for path in sorted((ROOT / package).rglob("*.py")) if "migrations" not in path.parts
              for line in _hidden_imports(path)]
    assert hidden == [], "imports inside functions:\n" + "\n".join(hidden)
