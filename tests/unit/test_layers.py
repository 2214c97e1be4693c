"""The library's shape, checked from the code: each layer folder imports only the layers below it,
the runtime library never imports the development tooling, nobody imports another module's private
names, and no module or function grows past what a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "include" / "mlops"

#: What each part of the library may import from the project (besides itself).
ALLOWED: dict[str, set[str]] = {
    "settings": set(),
    "domain": set(),
    "catalog": {"domain", "settings"},
    "adapters": {"catalog", "domain", "settings"},
    "runtime": {"adapters", "catalog", "domain", "settings"},
    "steps": {"runtime", "adapters", "catalog", "domain", "settings"},
    "serving": {"adapters", "catalog", "domain", "settings"},
    "ui": {"runtime", "steps", "adapters", "catalog", "domain", "settings"},
}

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _part(path: Path) -> str:
    rel = path.relative_to(LIBRARY)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def _library_modules() -> list[Path]:
    return sorted(p for p in LIBRARY.rglob("*.py") if p.name != "__init__.py" or p.parent != LIBRARY)


def test_every_library_module_belongs_to_a_known_layer():
    assert sorted({_part(p) for p in _library_modules()} - set(ALLOWED)) == []


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_layer_imports_only_the_layers_below_it(path: Path):
    part = _part(path)
    wrong = []
    for module, _ in _imports(ast.parse(path.read_text())):
        if module.split(".")[0] == "tooling":
            wrong.append(f"{module} (development tooling)")
        elif module.startswith("include.mlops."):
            target = module.split(".")[2]
            if target != part and target not in ALLOWED[part]:
                wrong.append(module)
    assert wrong == [], f"{part} may import {sorted(ALLOWED[part])}"


def _project_files() -> list[Path]:
    folders = [ROOT / "include", ROOT / "tooling", ROOT / "dags", ROOT / "plugins"]
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def test_nobody_imports_another_modules_private_names():
    wrong = []
    for path in _project_files():
        for module, names in _imports(ast.parse(path.read_text())):
            if module.split(".")[0] in {"include", "tooling"}:
                wrong += [f"{path.relative_to(ROOT)}: {module}.{n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert wrong == []


def test_no_library_module_or_function_is_too_long():
    long_modules, long_functions = [], []
    for path in sorted(LIBRARY.rglob("*.py")):
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{rel} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name} ({length} lines)")
    assert long_modules == [], f"modules over {MAX_MODULE_LINES} lines"
    assert long_functions == [], f"functions over {MAX_FUNCTION_LINES} lines"
