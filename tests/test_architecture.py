"""The import rules of the layout, read from the source with ``ast`` (nothing is imported).

- the core (``profile_engine`` without its shells ``cli`` and ``server``) imports nothing of
  ours outside itself, and no Kafka, DuckDB or Arrow;
- ``projections`` imports the core, never ``consumers`` or a shell;
- ``consumers`` imports the core and ``projections``, never a shell;
- only the CLI imports the server; nothing imports the CLI;
- only ``projections`` speaks to DuckDB (benchmarks and tests aside).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("profile_engine", "consumers", "projections")
SHELLS = ("profile_engine.cli", "profile_engine.server")


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(p for p in parts if p != "__init__"), path


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> str:
    if _within(module, ("profile_engine.cli",)):
        return "cli"
    if _within(module, ("profile_engine.server",)):
        return "server"
    return module.split(".")[0] if not module.startswith("profile_engine") else "core"


FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("consumers", "projections", *SHELLS, "kafka", "duckdb", "pyarrow"),
    "projections": ("consumers", *SHELLS, "kafka"),
    "consumers": (*SHELLS, "duckdb"),
    "server": ("profile_engine.cli",),
    "cli": (),
}

MODULES = list(_modules())


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_each_module_imports_only_what_its_layer_may(module: str, path: Path) -> None:
    layer = _layer(module)
    broken = sorted(name for name in _imports(path) if _within(name, FORBIDDEN[layer]))
    assert not broken, f"{module} ({layer}) imports {broken}"


def test_the_rules_see_every_layer() -> None:
    # A rule that matches no module proves nothing: each layer must hold some modules.
    assert {_layer(m) for m, _ in MODULES} == set(FORBIDDEN)


def test_a_forbidden_import_is_seen(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("import duckdb\nfrom consumers.pipeline import Pipeline\nfrom . import x\n")
    found = _imports(module)
    assert found == {"duckdb", "consumers.pipeline"}  # relative imports stay inside a package
    assert all(_within(name, FORBIDDEN["core"]) for name in found)
