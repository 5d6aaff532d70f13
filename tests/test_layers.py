"""The house's layering, kept by CI: training and serving never import each other, bundle and
features import neither, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("features", "bundle", "training", "serving", "cli")
FORBIDDEN = {
    "features": {"bundle", "training", "serving", "cli"},
    "bundle": {"training", "serving", "cli"},
    "training": {"serving"},
    "serving": {"training"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (absolute names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import submodule` imports the submodule; `from module import name` the module
            submodules = {f"{node.module}.{alias.name}" for alias in node.names}
            found = {m for m in submodules if (ROOT / Path(*m.split("."))).with_suffix(".py").is_file()}
            names.update(found or {node.module})
    return names


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_no_higher_layer(package):
    offending = []
    for name, path in module_files().items():
        if name.split(".")[0] != package:
            continue
        for imported in imported_modules(path):
            if imported.split(".")[0] in FORBIDDEN[package]:
                offending.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not offending, f"{package}/ must not import {sorted(FORBIDDEN[package])}: {offending}"


def test_no_two_modules_import_each_other():
    files = module_files()
    imports = {name: {m for m in imported_modules(path) if m in files and m != name} for name, path in files.items()}
    cycles = sorted({tuple(sorted((a, b))) for a, targets in imports.items() for b in targets if a in imports.get(b, ())})
    assert not cycles, f"modules importing each other: {cycles}"


def test_the_layer_check_sees_a_violation(tmp_path):
    """The checker itself: an import inside a function is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from training.train import train_models\n")
    assert "training.train" in imported_modules(sample)
