"""The package's floors hold: each sub-package of ``shared`` imports only from the floors below it, at module
level or inside a function (so no import inside a function dodges a circle), and says what it owns."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parent.parent / "shared"
GROUND = {"domain", "errors", "redact"}
# What each sub-package may import (besides itself). Read it bottom up: catalog is the lowest floor above the
# ground, app the top one.
MAY_IMPORT = {
    "domain": set(),
    "errors": set(),
    "redact": set(),
    "catalog": GROUND,
    "config": GROUND | {"catalog"},
    "storage": GROUND | {"config"},
    "partners": GROUND | {"catalog", "config"},
    "runs": GROUND | {"catalog", "storage"},
    "imaging": GROUND | {"catalog", "config", "storage", "runs"},
    "engine": GROUND | {"catalog", "imaging", "partners", "runs"},
    "coordination": GROUND | {"catalog", "engine", "runs", "storage"},
    "app": GROUND | {"catalog", "config", "storage", "partners", "runs", "imaging", "engine", "coordination"},
    "__main__": {"app"},
    "__init__": set(),
}


def modules():
    for path in sorted(SHARED.rglob("*.py")):
        yield path, path.relative_to(SHARED).with_suffix("").parts


def imports_of(path, parts):
    """(floor imported, line) of every import of ours in a module, module level and inside functions."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[:-1])[:len(parts) - node.level]
            target = base + (node.module.split(".") if node.module else [])
            names = [target[0]] if target else [alias.name for alias in node.names]
            yield from ((name, node.lineno) for name in names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("shared"):
            yield (node.module.split(".")[1] if "." in node.module else node.names[0].name), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("shared."):
                    yield alias.name.split(".")[1], node.lineno
        if isinstance(node, ast.ImportFrom) and node.module == "azure.functions":
            yield "azure.functions", node.lineno


def test_every_sub_package_imports_only_the_floors_below_it():
    wrong = []
    for path, parts in modules():
        floor = parts[0]
        assert floor in MAY_IMPORT, f"{path}: a floor the architecture does not know; add it to MAY_IMPORT"
        for target, line in imports_of(path, parts):
            if target != floor and target not in MAY_IMPORT[floor]:
                wrong.append(f"{path.relative_to(SHARED.parent)}:{line}: {floor} imports {target}")
    assert wrong == []


def test_the_floors_have_no_circle():
    seen: dict[str, int] = {}

    def depth(floor: str, path: tuple[str, ...] = ()) -> int:
        assert floor not in path, f"circle: {' -> '.join((*path, floor))}"
        if floor not in seen:
            seen[floor] = 1 + max((depth(t, (*path, floor)) for t in MAY_IMPORT[floor]), default=0)
        return seen[floor]

    for floor in MAY_IMPORT:
        depth(floor)
    assert seen["app"] > seen["coordination"] > seen["engine"] > seen["runs"] > seen["catalog"] > seen["domain"]


@pytest.mark.parametrize("package", sorted(p.name for p in SHARED.iterdir() if (p / "__init__.py").exists()))
def test_each_sub_package_says_what_it_owns_and_what_it_may_import(package):
    doc = importlib.import_module(f"shared.{package}").__doc__ or ""
    assert len(doc) > 100, f"shared/{package}/__init__.py: say what it owns"
    assert "May import" in doc, f"shared/{package}/__init__.py: say which floors it may import"


def test_nothing_in_shared_imports_azure_functions():
    for path, parts in modules():
        assert "azure.functions" not in {t for t, _ in imports_of(path, parts)}, path


def test_the_package_ships_every_sub_package():
    """pyproject.toml's package discovery finds every sub-package (``pip install .`` would leave out one it
    does not name)."""
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((SHARED.parent / "pyproject.toml").read_text())
    assert config["project"]["requires-python"] == ">=3.11"
    find = config["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(where=str(SHARED.parent), include=find["include"]))
    packages = {".".join(p.relative_to(SHARED.parent).parts) for p in [SHARED, *SHARED.rglob("*")]
                if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == shipped and len(packages) > 8
