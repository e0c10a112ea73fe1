"""The leaderboard: one row per checkpoint, one column per benchmark, the paper's average.

Rows are built from the catalog's eval results (:class:`EvalResultEntry`):
for every (checkpoint, benchmark) the most recent result counts, its accuracy
shown in percent. ``avg5`` is the headline number of MMR1 (paper Table 2)::

    avg5 = mean(MathVerse, MathVista, MathVision, LogicVista, ChartQA)

and is only given when all five are present: an average over fewer benchmarks
would not be comparable. The paper's published numbers can be added as
reference rows (:data:`PAPER_REFERENCE`, METHOD.md section 9). A result
computed on part of a split (``limit``) is shown like any other; its
``n_items`` is in the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmr1.catalog import Catalog
from schemas.catalog import EvalResultEntry

#: The five benchmarks of the paper's average, in its table order.
PAPER_BENCHMARKS: tuple[str, ...] = (
    "mathverse",
    "mathvista",
    "mathvision",
    "logicvista",
    "chartqa",
)
#: Column titles for the terminal and markdown tables.
TITLES: dict[str, str] = {
    "mathverse": "MathVerse",
    "mathvista": "MathVista",
    "mathvision": "MathVision",
    "logicvista": "LogicVista",
    "chartqa": "ChartQA",
    "synthetic": "Synthetic",
    "avg5": "Avg-5",
}

#: Published accuracies (%) of MMR1 (Table 2): MathVerse and MathVista testmini,
#: MathVision test, LogicVista, ChartQA test. Qwen2.5-VL-7B: only its average is given.
PAPER_REFERENCE: tuple[dict[str, Any], ...] = (
    {
        "checkpoint": "MMR1-7B-RL (paper)",
        "mathverse": 55.4,
        "mathvista": 72.0,
        "mathvision": 31.8,
        "logicvista": 48.9,
        "chartqa": 83.7,
        "avg5": 58.4,
    },
    {
        "checkpoint": "MMR1-3B-RL (paper)",
        "mathverse": 47.9,
        "mathvista": 67.1,
        "mathvision": 25.4,
        "logicvista": 42.0,
        "chartqa": 81.2,
        "avg5": 52.7,
    },
    {"checkpoint": "Qwen2.5-VL-7B (paper)", "avg5": 55.0},
)


def average5(scores: Mapping[str, float | None]) -> float | None:
    """Mean of the five paper benchmarks, or None unless all five have a number."""
    values = [scores.get(name) for name in PAPER_BENCHMARKS]
    if any(value is None for value in values):
        return None
    return sum(float(v) for v in values if v is not None) / len(values)


def benchmark_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Benchmark columns of ``rows``: the paper's five first, then the others sorted."""
    seen = {key for row in rows for key in row if key not in ("checkpoint", "source", "avg5")}
    others = sorted(seen - set(PAPER_BENCHMARKS))
    return [name for name in PAPER_BENCHMARKS if name in seen] + others


def build_leaderboard(
    results: Sequence[EvalResultEntry], include_reference: bool = True
) -> list[dict[str, Any]]:
    """One row per checkpoint (first-seen order) with its latest accuracy (%) per benchmark.

    Each row has ``checkpoint`` (``name@version``), ``source`` (``catalog`` or
    ``paper``), one key per benchmark that any row has (None where this row
    has no result) and ``avg5`` (:func:`average5`). Reference rows, when
    included, come after the checkpoints.
    """
    order = list(dict.fromkeys(result.checkpoint_ref for result in results))
    latest: dict[tuple[str, str], EvalResultEntry] = {}
    for result in sorted(results, key=lambda r: r.created_at):  # stable: ties keep input order
        latest[(result.checkpoint_ref, result.benchmark)] = result
    rows: list[dict[str, Any]] = []
    for checkpoint in order:
        row: dict[str, Any] = {"checkpoint": checkpoint, "source": "catalog"}
        for (ref, benchmark), result in latest.items():
            if ref == checkpoint and "accuracy" in result.metrics:
                row[benchmark] = 100.0 * result.metrics["accuracy"]
        rows.append(row)
    if include_reference:
        rows.extend({**ref, "source": "paper"} for ref in PAPER_REFERENCE)
    columns = benchmark_columns(rows)
    table = []
    for row in rows:
        scores = {name: row.get(name) for name in columns}
        avg = row["avg5"] if row["source"] == "paper" else average5(scores)
        table.append(
            {"checkpoint": row["checkpoint"], "source": row["source"], **scores, "avg5": avg}
        )
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _grid(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    columns = ["checkpoint", *benchmark_columns(rows), "avg5"]
    header = [TITLES.get(name, name) if name != "checkpoint" else "Checkpoint" for name in columns]
    body = [[_cell(row.get(name)) for name in columns] for row in rows]
    return header, body


def render_leaderboard(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table: accuracies in % with one decimal, ``-`` where missing."""
    if not rows:
        return "no evaluation results"
    header, body = _grid(rows)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def render_leaderboard_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The same table in GitHub markdown (for Prefect artifacts and MLflow)."""
    if not rows:
        return "_no evaluation results_"
    header, body = _grid(rows)
    align = [":--"] + ["--:"] * (len(header) - 1)
    lines = [header, align, *body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def compare(
    catalog: Catalog, checkpoint_refs: Sequence[str], include_reference: bool = True
) -> str:
    """The leaderboard of ``checkpoint_refs`` (bare name: latest version) as a text table.

    With no refs, every checkpoint that has an eval result is shown. Unknown
    refs raise ``CatalogNotFoundError``.
    """
    if checkpoint_refs:
        results = [r for ref in checkpoint_refs for r in catalog.eval_results(checkpoint_ref=ref)]
    else:
        results = catalog.eval_results()
    return render_leaderboard(build_leaderboard(results, include_reference))
