"""Imports point down only: the library never imports Prefect or the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "mmr1": {"prefect", "flows", "tasks"},
    "schemas": {"prefect", "flows", "tasks", "mmr1"},
    "tasks": {"flows"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_point_down(package: str) -> None:
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        # The CLI is the entry point: it starts flows, imported lazily inside `mmr1 demo`.
        if path == ROOT / "mmr1" / "cli.py":
            continue
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_cli_imports_flows_only_lazily() -> None:
    tree = ast.parse((ROOT / "mmr1" / "cli.py").read_text())
    top_level = {
        (node.module or "").split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)
    } | {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not top_level & {"prefect", "flows", "tasks"}
