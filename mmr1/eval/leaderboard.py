"""The leaderboard: one row per checkpoint, one column per benchmark, the paper's average.

Rows are built from the catalog's eval results (:class:`EvalResultEntry`, which
stores the ``split`` and ``n_items`` of every run, but not a ``limit``). The
paper's numbers (Table 2) are on fixed splits (:data:`PAPER_SPLITS`), so a
result is *comparable* only when it is on that split and covers all of it
(``n_items`` equals the split's size; a ``limit=`` run does not).

For every (checkpoint, benchmark) the cell is the most recent comparable
result; only when there is none does the most recent other result (another
split, or part of a split) fill the cell, marked ``*`` and explained in the
row's ``notes`` and in a footnote under the table. A MathVision ``testmini`` or a
``limit=100`` run therefore never replaces a full ``test`` result. Benchmarks
outside the paper (``synthetic``) have no reference split: their latest result
counts. ``avg5`` is the headline number of MMR1 (paper Table 2)::

    avg5 = mean(MathVerse, MathVista, MathVision, LogicVista, ChartQA)

and is only given when all five cells are comparable: an average over fewer
benchmarks, other splits or partial runs would not be comparable with the
paper's. The paper's published numbers can be added as reference rows
(:data:`PAPER_REFERENCE`, docs/METHOD.md section 9), including the averages of its
3B ablation (Table 3), which has no per-benchmark numbers.

A cell whose result includes rows that could not be read (``n_invalid`` in its
metrics: e.g. LogicVista's row with an empty gold answer) is marked ``†`` and
footnoted with the count. Such rows are scored wrong, as the official scripts
score them, so the cell stays comparable and counts in ``avg5``
(docs/BENCHMARKS.md, "Bad rows").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mmr1.catalog import Catalog
from mmr1.eval.significance import comparison_rows, render_comparison
from schemas.catalog import EvalResultEntry


class PaperSplit(NamedTuple):
    """The split a paper number is on, and its size in items."""

    split: str
    n_items: int


#: The five benchmarks of the paper's average, in its table order, with the split
#: and size each is reported on (docs/BENCHMARKS.md; docs/METHOD.md section 9).
PAPER_SPLITS: dict[str, PaperSplit] = {
    "mathverse": PaperSplit("testmini", 3940),
    "mathvista": PaperSplit("testmini", 1000),
    "mathvision": PaperSplit("test", 3040),
    "logicvista": PaperSplit("test", 448),
    "chartqa": PaperSplit("test", 2500),
}
PAPER_BENCHMARKS: tuple[str, ...] = tuple(PAPER_SPLITS)
#: Keys of a leaderboard row that are not benchmark columns.
ROW_FIELDS: tuple[str, ...] = ("checkpoint", "source", "avg5", "notes", "invalid")
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
#: Marks a cell that is not comparable with the paper (see ``notes``).
MARK = "*"
FOOTNOTE_TITLE = f"{MARK} not comparable with the paper (other split or partial run); not in Avg-5:"
#: Marks a cell whose result has rows that could not be read (see ``invalid``).
INVALID_MARK = "\u2020"
INVALID_TITLE = (
    f"{INVALID_MARK} rows that could not be read, scored wrong as the official scripts do "
    "(still comparable):"
)

#: Published accuracies (%) of MMR1 (Table 2): MathVerse and MathVista testmini,
#: MathVision test, LogicVista, ChartQA test. Qwen2.5-VL-7B: only its average is
#: given, as for the 3B ablation (Table 3: each row adds one stage to the one above).
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
    {"checkpoint": "3B base (paper ablation)", "avg5": 48.7},
    {"checkpoint": "3B + cold-start (paper ablation)", "avg5": 48.7},
    {"checkpoint": "3B + GRPO (paper ablation)", "avg5": 51.8},
    {"checkpoint": "3B + VAS (paper ablation)", "avg5": 52.9},
)


def comparability_note(result: EvalResultEntry) -> str | None:
    """Why ``result`` is not comparable with the paper's number, or None when it is.

    None also for a benchmark outside the paper (nothing to compare with).
    """
    paper = PAPER_SPLITS.get(result.benchmark)
    if paper is None or (result.split, result.n_items) == tuple(paper):
        return None
    if result.split != paper.split:
        return f"split {result.split}, {result.n_items} items (paper: {paper.split})"
    return f"{paper.split}, {result.n_items} of {paper.n_items} items"


def average5(scores: Mapping[str, float | None]) -> float | None:
    """Mean of the five paper benchmarks, or None unless all five have a number."""
    values = [scores.get(name) for name in PAPER_BENCHMARKS]
    if any(value is None for value in values):
        return None
    return sum(float(v) for v in values if v is not None) / len(values)


def benchmark_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Benchmark columns of ``rows``: the paper's five first, then the others sorted."""
    seen = {key for row in rows for key in row if key not in ROW_FIELDS}
    others = sorted(seen - set(PAPER_BENCHMARKS))
    return [name for name in PAPER_BENCHMARKS if name in seen] + others


def _cell_result(results: Sequence[EvalResultEntry]) -> EvalResultEntry:
    """The result a cell shows: the latest comparable one, else the latest of all.

    ``results`` are one checkpoint's results on one benchmark, oldest first.
    """
    comparable = [result for result in results if comparability_note(result) is None]
    return (comparable or list(results))[-1]


def cell_results(results: Sequence[EvalResultEntry]) -> dict[tuple[str, str], EvalResultEntry]:
    """(checkpoint ref, benchmark) -> the result its leaderboard cell shows (:func:`_cell_result`).

    Keys in first-seen order of checkpoints, then benchmarks; results without
    an ``accuracy`` metric are ignored.
    """
    grouped: dict[tuple[str, str], list[EvalResultEntry]] = {}
    for result in sorted(results, key=lambda r: r.created_at):  # stable: ties keep input order
        if "accuracy" in result.metrics:
            grouped.setdefault((result.checkpoint_ref, result.benchmark), []).append(result)
    order = list(dict.fromkeys(result.checkpoint_ref for result in results))
    keys = sorted(grouped, key=lambda key: order.index(key[0]))
    return {key: _cell_result(grouped[key]) for key in keys}


def build_leaderboard(
    results: Sequence[EvalResultEntry], include_reference: bool = True
) -> list[dict[str, Any]]:
    """One row per checkpoint (first-seen order) with one accuracy (%) per benchmark.

    Each row has ``checkpoint`` (``name@version``), ``source`` (``catalog`` or
    ``paper``), one key per benchmark that any row has (None where this row
    has no result), ``avg5`` (:func:`average5` over the comparable cells),
    ``notes``: benchmark -> why that cell is not comparable with the paper
    (:func:`comparability_note`; empty when all are) and ``invalid``:
    benchmark -> how many of its rows could not be read (:func:`invalid_note`;
    empty when none). Which result fills a cell is in the module doc.
    Reference rows, when included, come after the checkpoints.
    """
    order = list(dict.fromkeys(result.checkpoint_ref for result in results))
    cells = cell_results(results)
    rows: list[dict[str, Any]] = []
    for checkpoint in order:
        row: dict[str, Any] = {
            "checkpoint": checkpoint,
            "source": "catalog",
            "notes": {},
            "invalid": {},
        }
        for (ref, benchmark), chosen in cells.items():
            if ref != checkpoint:
                continue
            row[benchmark] = 100.0 * chosen.metrics["accuracy"]
            note = comparability_note(chosen)
            if note is not None:
                row["notes"][benchmark] = note
            unreadable = invalid_note(chosen)
            if unreadable is not None:
                row["invalid"][benchmark] = unreadable
        rows.append(row)
    if include_reference:
        rows.extend(
            {**ref, "source": "paper", "notes": {}, "invalid": {}} for ref in PAPER_REFERENCE
        )
    columns = benchmark_columns(rows)
    table = []
    for row in rows:
        scores = {name: row.get(name) for name in columns}
        if row["source"] == "paper":
            avg = row["avg5"]
        else:
            avg = average5({k: v for k, v in scores.items() if k not in row["notes"]})
        table.append(
            {
                "checkpoint": row["checkpoint"],
                "source": row["source"],
                **scores,
                "avg5": avg,
                "notes": dict(row["notes"]),
                "invalid": dict(row["invalid"]),
            }
        )
    return table


def invalid_note(result: EvalResultEntry) -> str | None:
    """``"1 of 448 rows"`` when the result has rows that could not be read, else None."""
    count = int(result.metrics.get("n_invalid", 0))
    if count <= 0:
        return None
    return f"{count} of {result.n_items} row{'s' if result.n_items != 1 else ''}"


def _cell(value: Any, marked: bool = False, invalid: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    return text + (MARK if marked else "") + (INVALID_MARK if invalid else "")


def _grid(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    columns = ["checkpoint", *benchmark_columns(rows), "avg5"]
    header = [TITLES.get(name, name) if name != "checkpoint" else "Checkpoint" for name in columns]
    body = [
        [
            _cell(
                row.get(name),
                name in (row.get("notes") or {}),
                name in (row.get("invalid") or {}),
            )
            for name in columns
        ]
        for row in rows
    ]
    return header, body


def footnotes(rows: Sequence[Mapping[str, Any]], key: str = "notes") -> list[str]:
    """One line per cell marked for ``key`` (``notes`` or ``invalid``): whose, which, why."""
    return [
        f"{row['checkpoint']} {TITLES.get(benchmark, benchmark)}: {note}"
        for row in rows
        for benchmark, note in (row.get(key) or {}).items()
    ]


def render_leaderboard(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table: accuracies in % with one decimal, ``-`` where missing.

    A cell marked ``*`` is not comparable with the paper; the footnotes under
    the table say why.
    """
    if not rows:
        return "no evaluation results"
    header, body = _grid(rows)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [line(header), rule, *(line(cells) for cells in body)]
    notes = footnotes(rows)
    if notes:
        lines += ["", FOOTNOTE_TITLE, *(f"  {note}" for note in notes)]
    unreadable = footnotes(rows, "invalid")
    if unreadable:
        lines += ["", INVALID_TITLE, *(f"  {note}" for note in unreadable)]
    return "\n".join(lines)


def render_leaderboard_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The same table in GitHub markdown (for Prefect artifacts and MLflow), footnotes below."""
    if not rows:
        return "_no evaluation results_"
    header, body = _grid(rows)
    align = [":--"] + ["--:"] * (len(header) - 1)
    escaped = [[cell.replace(MARK, "\\" + MARK) for cell in cells] for cells in body]
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, align, *escaped]]
    notes = footnotes(rows)
    if notes:
        lines += ["", "\\" + FOOTNOTE_TITLE, "", *(f"- {note}" for note in notes)]
    unreadable = footnotes(rows, "invalid")
    if unreadable:
        lines += ["", INVALID_TITLE, "", *(f"- {note}" for note in unreadable)]
    return "\n".join(lines)


def _results(
    catalog: Catalog, checkpoint_refs: Sequence[str], baseline: str | None
) -> tuple[list[EvalResultEntry], list[str], str | None]:
    """The results of the refs (all evaluated checkpoints when none), the pinned
    checkpoint order (baseline first when it is not among the refs) and the pinned baseline."""
    refs = [catalog.get_checkpoint(ref).ref for ref in checkpoint_refs]
    pinned_baseline = catalog.get_checkpoint(baseline).ref if baseline else None
    if pinned_baseline and refs and pinned_baseline not in refs:
        refs.insert(0, pinned_baseline)
    if refs:
        refs = list(dict.fromkeys(refs))
        results = [r for ref in refs for r in catalog.eval_results(checkpoint_ref=ref)]
    else:
        results = catalog.eval_results()
        refs = list(dict.fromkeys(result.checkpoint_ref for result in results))
    return results, refs, pinned_baseline or (refs[0] if refs else None)


def comparison(
    catalog: Catalog, checkpoint_refs: Sequence[str], baseline: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of ``mmr1 eval compare --json`` (:func:`mmr1.eval.significance.comparison_rows`)
    and the pinned baseline ref.

    Bare refs mean the latest version. ``baseline`` (default: the first
    checkpoint) is added in front when it is not among ``checkpoint_refs``.
    """
    results, refs, pinned = _results(catalog, checkpoint_refs, baseline)
    return comparison_rows(cell_results(results), refs, pinned), pinned


def compare(
    catalog: Catalog,
    checkpoint_refs: Sequence[str],
    include_reference: bool = True,
    baseline: str | None = None,
) -> str:
    """The leaderboard of ``checkpoint_refs`` (bare name: latest version) as a text table,
    followed by the per-result intervals and paired tests against ``baseline``
    (default: the first checkpoint; :func:`comparison`).

    With no refs, every checkpoint that has an eval result is shown. Unknown
    refs raise ``CatalogNotFoundError``.
    """
    results, refs, pinned = _results(catalog, checkpoint_refs, baseline)
    table = render_leaderboard(build_leaderboard(results, include_reference))
    if not results:
        return table
    rows = comparison_rows(cell_results(results), refs, pinned)
    return table + "\n\n" + render_comparison(rows, pinned)
