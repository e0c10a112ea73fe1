"""Imports point down only, between the layers and inside the library.

Layers: ``schemas`` <- ``mmr1`` <- ``tasks`` <- ``flows`` <- ``cli`` (with ``ops``,
the local servers and deployments, beside the command line). The library never
imports Prefect; no file is exempt. Inside ``mmr1`` the subpackages form levels
(:data:`LIBRARY_LEVELS`): a module imports its own level or lower ones only, so
e.g. ``models`` never reaches up into ``generation`` or ``data``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "schemas": {"prefect", "mmr1", "tasks", "flows", "ops", "cli"},
    "mmr1": {"prefect", "tasks", "flows", "ops", "cli"},
    "tasks": {"flows", "ops", "cli"},
    "flows": {"ops", "cli"},
    "ops": {"prefect", "tasks", "flows", "cli"},
}

#: The library's subpackages (and top modules), lowest first. A module may import from
#: its own level and below.
LIBRARY_LEVELS: list[set[str]] = [
    {"hashing", "storage", "prompts", "edit_distance", "plan"},
    {"catalog", "tracking", "rewards"},
    {"models"},
    {"generation"},
    {"data", "preflight", "plan_inputs"},
    {"cot", "vas", "eval"},
    {"trainer"},
    {"sft", "rl"},
    {"jobs"},
]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_point_down(package: str) -> None:
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = {name.split(".")[0] for name in _imported_modules(path)} & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def _unit(path: Path) -> str:
    parts = path.relative_to(ROOT / "mmr1").parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def test_library_imports_point_down() -> None:
    level = {unit: i for i, units in enumerate(LIBRARY_LEVELS) for unit in units}
    units = {_unit(p) for p in (ROOT / "mmr1").rglob("*.py")} - {"__init__", "py"}
    assert units <= set(level), f"place new library modules in LIBRARY_LEVELS: {units - set(level)}"
    offenders = {}
    for path in sorted((ROOT / "mmr1").rglob("*.py")):
        unit = _unit(path)
        if unit == "__init__":
            continue
        up = sorted(
            {
                name.split(".")[1]
                for name in _imported_modules(path)
                if name.startswith("mmr1.") and level.get(name.split(".")[1], -1) > level[unit]
            }
        )
        if up:
            offenders[str(path.relative_to(ROOT / "mmr1"))] = up
    assert offenders == {}


def test_the_command_line_imports_flows_only_lazily() -> None:
    tree = ast.parse((ROOT / "cli" / "main.py").read_text())
    top_level = {
        (node.module or "").split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)
    } | {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not top_level & {"prefect", "flows", "tasks"}


def test_a_registry_is_the_one_list_of_its_names() -> None:
    from pydantic import ValidationError

    from schemas.grpo import GRPOConfig
    from schemas.registry import LOSS_AGGREGATIONS, Registry

    assert LOSS_AGGREGATIONS.names() == [
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum-norm",
    ]
    with pytest.raises(ValidationError, match="unknown loss aggregation 'sum'; known: token-mean"):
        GRPOConfig(loss_agg="sum")
    # A new aggregation registered by the library is a valid config value at once.
    LOSS_AGGREGATIONS.register("test-only-sum")(lambda loss, mask, norm_len: loss.sum())
    try:
        assert GRPOConfig(loss_agg="test-only-sum").loss_agg == "test-only-sum"
    finally:
        LOSS_AGGREGATIONS._items.pop("test-only-sum")
    with pytest.raises(ValueError, match="already registered"):
        LOSS_AGGREGATIONS.register("token-mean")(lambda *args: None)
    empty = Registry("thing", "json")  # a provider that registers nothing
    with pytest.raises(ValueError, match="unknown thing 'x'; known: $"):
        empty.check("x")
