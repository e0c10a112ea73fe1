"""Benchmark adapters: one module per benchmark, looked up by name.

>>> adapter = get_adapter("mathvista")
>>> adapter.default_split
'testmini'

Each adapter implements :class:`BenchmarkAdapter` (``load``, ``build_request``,
``score``, ``aggregate``); docs/BENCHMARKS.md describes the data and the official rules.
"""

from __future__ import annotations

from collections.abc import Callable

from mmr1.eval.benchmarks.base import Benchmark, BenchmarkAdapter, RowBenchmark, summarize
from mmr1.eval.benchmarks.chartqa import ChartQAAdapter
from mmr1.eval.benchmarks.logicvista import LogicVistaAdapter
from mmr1.eval.benchmarks.mathverse import MathVerseAdapter
from mmr1.eval.benchmarks.mathvision import MathVisionAdapter
from mmr1.eval.benchmarks.mathvista import MathVistaAdapter
from mmr1.eval.benchmarks.rows import BenchmarkDataError, SourceRow, iter_rows
from mmr1.eval.benchmarks.synthetic import SyntheticAdapter
from schemas.registry import BENCHMARKS as BENCHMARK_ADAPTERS

# Adapter factories by name, in the paper's table order, then the synthetic benchmark
# (``schemas.registry.BENCHMARKS``: a BenchmarkSpec's name validates against them).
for _name, _factory in (
    ("mathvista", MathVistaAdapter),
    ("mathverse", MathVerseAdapter),
    ("mathvision", MathVisionAdapter),
    ("logicvista", LogicVistaAdapter),
    ("chartqa", ChartQAAdapter),
    ("synthetic", SyntheticAdapter),
):
    BENCHMARK_ADAPTERS.register(_name)(_factory)
#: Adapter names, in registration order.
BENCHMARKS: tuple[str, ...] = tuple(BENCHMARK_ADAPTERS)


def get_adapter(name: str) -> BenchmarkAdapter:
    """A new adapter for benchmark ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        factory: Callable[[], BenchmarkAdapter] = BENCHMARK_ADAPTERS[name]
    except (KeyError, ValueError):
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None
    return factory()


__all__ = [
    "BENCHMARKS",
    "BenchmarkAdapter",
    "BenchmarkDataError",
    "ChartQAAdapter",
    "LogicVistaAdapter",
    "MathVerseAdapter",
    "MathVisionAdapter",
    "MathVistaAdapter",
    "Benchmark",
    "RowBenchmark",
    "SourceRow",
    "SyntheticAdapter",
    "get_adapter",
    "iter_rows",
    "summarize",
]
