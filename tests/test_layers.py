"""Dependencies point one way: the interchangeable backends never import the module
that chooses between them, so adding a backend touches only the chooser."""

from __future__ import annotations

import ast
from pathlib import Path

import syncline

PACKAGE = Path(syncline.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """The syncline modules a file imports, resolved to dotted names."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            if node.level == 0:
                base = []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_backplane_backend_imports_the_chooser() -> None:
    for backend in ("backplane", "memory", "redis", "postgres"):
        imports = imported_modules(PACKAGE / "fanout" / f"{backend}.py")
        assert "syncline.fanout.select" not in imports, backend
        assert "syncline.fanout" not in imports, backend


def test_the_checker_sees_relative_imports() -> None:
    assert "syncline.fanout.backplane" in imported_modules(PACKAGE / "fanout" / "memory.py")
    assert "syncline.fanout.memory" in imported_modules(PACKAGE / "fanout" / "select.py")
