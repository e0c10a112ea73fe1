"""Per-item outcomes of evaluations, their intervals, and paired tests against a baseline.

An evaluation's predictions file (``mmr1.eval.run.PREDICTIONS_SCHEMA``) holds,
per item, the greedy answer's ``correct`` and the ``sampled_correct`` list of
its ``k`` sampled answers. From it this module derives:

* a result's intervals (:func:`summarize`): Wilson for greedy accuracy, a t
  interval over items for sampled accuracy (``mmr1.eval.stats``);
* a paired comparison with a baseline checkpoint's result on the same items
  (:func:`paired_test`): exact McNemar on greedy correctness (``p_value``)
  and a paired t-test on per-item sampled accuracy (``sampled_p_value``).

Pairing matches items by ``item_id``; when the two results cover different
items the tests use the common ones and the row's ``note`` says so.
:func:`comparison_rows` builds the rows of ``mmr1 eval compare --json``;
:func:`render_comparison` and :func:`render_comparison_markdown` print them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from mmr1.eval.stats import mcnemar_exact, mean_interval, paired_t_test, wilson_interval
from schemas.catalog import EvalResultEntry


@dataclass(frozen=True)
class ItemOutcomes:
    """Correctness per item of one evaluation, in item order."""

    item_ids: list[str]
    greedy: list[bool]
    """Whether the greedy answer was right."""
    sampled: list[float] | None
    """Fraction of the ``sampled_k`` sampled answers that were right; None when k is 0."""
    sampled_k: int


def outcomes_from_predictions(predictions: pl.DataFrame) -> ItemOutcomes:
    """The outcomes in a predictions frame (files older than sampling have no samples)."""
    greedy = [bool(v) for v in predictions["correct"].to_list()]
    sampled_lists = (
        predictions["sampled_correct"].to_list() if "sampled_correct" in predictions.columns else []
    )
    ks = {len(values or []) for values in sampled_lists}
    if len(ks) > 1:
        raise ValueError(f"predictions have different numbers of samples per item: {sorted(ks)}")
    k = ks.pop() if ks else 0
    sampled = [sum(map(bool, values)) / k for values in sampled_lists] if k else None
    return ItemOutcomes(
        item_ids=[str(v) for v in predictions["item_id"].to_list()],
        greedy=greedy,
        sampled=sampled,
        sampled_k=k,
    )


def read_outcomes(predictions_uri: str) -> ItemOutcomes:
    """:func:`outcomes_from_predictions` of a predictions parquet file."""
    columns = ["item_id", "correct"]
    schema = pl.read_parquet_schema(predictions_uri)
    if "sampled_correct" in schema:
        columns.append("sampled_correct")
    return outcomes_from_predictions(pl.read_parquet(predictions_uri, columns=columns))


def summarize(outcomes: ItemOutcomes) -> dict[str, float]:
    """Item-level figures of one evaluation, as catalog metrics (floats).

    ``item_accuracy`` (greedy, mean over items) and its Wilson 95% interval
    ``accuracy_ci95_lo``/``_hi``; ``sampled_k``; with samples,
    ``sampled_accuracy`` (mean over items of the fraction of k samples right)
    and its t interval over items ``sampled_accuracy_ci95_lo``/``_hi``.
    """
    n = len(outcomes.greedy)
    lo, hi = wilson_interval(sum(outcomes.greedy), n)
    summary = {
        "item_accuracy": sum(outcomes.greedy) / n if n else 0.0,
        "accuracy_ci95_lo": lo,
        "accuracy_ci95_hi": hi,
        "sampled_k": float(outcomes.sampled_k),
    }
    if outcomes.sampled is not None and n:
        summary["sampled_accuracy"] = sum(outcomes.sampled) / n
        interval = mean_interval(outcomes.sampled)
        if interval is not None:
            summary["sampled_accuracy_ci95_lo"], summary["sampled_accuracy_ci95_hi"] = interval
    return summary


@dataclass(frozen=True)
class PairedTest:
    """A result against its baseline on the items both have."""

    n_paired: int
    baseline_only: int
    """Items only the baseline answered right greedily (McNemar's b)."""
    model_only: int
    """Items only this model answered right greedily (McNemar's c)."""
    p_value: float | None
    sampled_p_value: float | None
    note: str | None


def paired_test(model: ItemOutcomes, baseline: ItemOutcomes) -> PairedTest:
    """McNemar (greedy) and paired t (sampled) on the items common to both, by ``item_id``.

    ``sampled_p_value`` is None unless both have samples; both p-values are None
    without common items. ``note`` says when the item sets differ.
    """
    base_index = {item_id: i for i, item_id in enumerate(baseline.item_ids)}
    pairs = [(i, base_index[item]) for i, item in enumerate(model.item_ids) if item in base_index]
    note = None
    if len(pairs) != len(model.item_ids) or len(pairs) != len(baseline.item_ids):
        note = (
            f"items differ: {len(pairs)} in common ({len(model.item_ids)} here, "
            f"{len(baseline.item_ids)} in the baseline); tests use the common items"
        )
    if not pairs:
        return PairedTest(0, 0, 0, None, None, "no items in common with the baseline")
    b = sum(baseline.greedy[j] and not model.greedy[i] for i, j in pairs)
    c = sum(model.greedy[i] and not baseline.greedy[j] for i, j in pairs)
    sampled_p = None
    if model.sampled is not None and baseline.sampled is not None:
        sampled_p = paired_t_test(
            [model.sampled[i] for i, _ in pairs], [baseline.sampled[j] for _, j in pairs]
        )
    return PairedTest(len(pairs), b, c, mcnemar_exact(b, c), sampled_p, note)


def _interval(lo: float | None, hi: float | None) -> list[float] | None:
    return None if lo is None or hi is None else [lo, hi]


def result_row(result: EvalResultEntry, outcomes: ItemOutcomes | None) -> dict[str, Any]:
    """One checkpoint's result as a comparison row, before any pairing.

    Figures come from the predictions when readable, else from the result's
    metrics (``n_correct`` for the interval). ``accuracy`` is the benchmark's
    official number (a macro mean for MathVerse/ChartQA); the interval is the
    item-level proportion's.
    """
    metrics = result.metrics
    if outcomes is not None:
        figures: Mapping[str, float] = summarize(outcomes)
    else:
        n_correct = round(metrics.get("n_correct", metrics.get("accuracy", 0.0) * result.n_items))
        lo, hi = wilson_interval(n_correct, result.n_items)
        figures = {**metrics, "accuracy_ci95_lo": lo, "accuracy_ci95_hi": hi}
    k = int(figures.get("sampled_k", 0))
    return {
        "checkpoint": result.checkpoint_ref,
        "benchmark": result.benchmark,
        "split": result.split,
        "n_items": result.n_items,
        "accuracy": metrics.get("accuracy"),
        "accuracy_ci95": _interval(
            figures.get("accuracy_ci95_lo"), figures.get("accuracy_ci95_hi")
        ),
        "sampled_accuracy": figures.get("sampled_accuracy") if k else None,
        "sampled_accuracy_ci95": _interval(
            figures.get("sampled_accuracy_ci95_lo"), figures.get("sampled_accuracy_ci95_hi")
        )
        if k
        else None,
        "sampled_k": k,
        "baseline": None,
        "n_paired": None,
        "discordant": None,
        "p_value": None,
        "sampled_p_value": None,
        "note": None if outcomes is not None else "predictions not readable: no paired tests",
    }


def _readable(result: EvalResultEntry, load: Callable[[str], ItemOutcomes]) -> ItemOutcomes | None:
    uri = result.predictions_uri
    if not uri or not Path(uri).exists():
        return None
    return load(uri)


def comparison_rows(
    results: Mapping[tuple[str, str], EvalResultEntry],
    checkpoints: Sequence[str],
    baseline: str | None,
    load: Callable[[str], ItemOutcomes] = read_outcomes,
) -> list[dict[str, Any]]:
    """Rows of ``mmr1 eval compare``: per checkpoint (in order) and benchmark, with tests.

    ``results`` maps (checkpoint ref, benchmark) to the result shown for it;
    ``baseline`` is the checkpoint ref every other row is paired with (None:
    no tests). Each row has ``checkpoint``, ``benchmark``, ``split``,
    ``n_items``, ``accuracy`` and ``accuracy_ci95`` ([lo, hi], Wilson),
    ``sampled_accuracy`` and ``sampled_accuracy_ci95`` (t interval over
    items), ``sampled_k``, ``baseline``, ``n_paired``, ``discordant``
    ({``baseline_only``, ``model_only``}), ``p_value`` (exact McNemar),
    ``sampled_p_value`` (paired t) and ``note``. Values not applicable (the
    baseline's own row, no samples, no baseline result) are None.
    """
    cache: dict[str, ItemOutcomes | None] = {}

    def outcomes(result: EvalResultEntry) -> ItemOutcomes | None:
        if result.id not in cache:
            cache[result.id] = _readable(result, load)
        return cache[result.id]

    benchmarks = list(dict.fromkeys(benchmark for _, benchmark in results))
    rows = []
    for checkpoint in checkpoints:
        for benchmark in benchmarks:
            result = results.get((checkpoint, benchmark))
            if result is None:
                continue
            row = result_row(result, outcomes(result))
            if baseline is not None and checkpoint != baseline:
                row |= _paired_fields(result, outcomes(result), baseline, results, outcomes)
            rows.append(row)
    return rows


def _paired_fields(
    result: EvalResultEntry,
    mine: ItemOutcomes | None,
    baseline: str,
    results: Mapping[tuple[str, str], EvalResultEntry],
    outcomes: Callable[[EvalResultEntry], ItemOutcomes | None],
) -> dict[str, Any]:
    base_result = results.get((baseline, result.benchmark))
    fields: dict[str, Any] = {"baseline": baseline}
    if base_result is None:
        return fields | {"note": f"baseline {baseline} has no {result.benchmark} result"}
    theirs = outcomes(base_result)
    if mine is None or theirs is None:
        return fields | {"note": "predictions not readable: no paired tests"}
    test = paired_test(mine, theirs)
    if base_result.split != result.split:
        split_note = f"splits differ ({result.split} vs {base_result.split})"
        test = replace(test, note="; ".join(filter(None, [split_note, test.note])))
    return fields | {
        "n_paired": test.n_paired,
        "discordant": {"baseline_only": test.baseline_only, "model_only": test.model_only},
        "p_value": test.p_value,
        "sampled_p_value": test.sampled_p_value,
        "note": test.note,
    }


# ----------------------------------------------------------------------- rendering


def _percent(value: float | None, interval: Sequence[float] | None) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.1f}"
    if interval is not None:
        text += f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return text


def format_p(value: float | None) -> str:
    """A p-value for a table: three decimals, scientific below 0.001, ``-`` when None."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


TITLE = "Greedy and sampled accuracy (%) with 95% intervals; p-values paired against {baseline}"
EXPLANATION = (
    "greedy: Wilson interval; sampled@k: mean over items of the fraction of k samples "
    "(T>0) right, t interval over items; p: exact McNemar on greedy correctness; "
    "p sampled: paired t-test on per-item sampled accuracy."
)
_HEADER = ["Checkpoint", "Benchmark", "Items", "Greedy [95% CI]", "p", "Sampled@k [95% CI]"]


def _cells(row: Mapping[str, Any], baseline: str | None) -> list[str]:
    is_baseline = row["checkpoint"] == baseline
    sampled = _percent(row["sampled_accuracy"], row["sampled_accuracy_ci95"])
    if row["sampled_k"]:
        sampled = f"{sampled} (k={row['sampled_k']})"
    return [
        row["checkpoint"],
        row["benchmark"],
        str(row["n_items"]),
        _percent(row["accuracy"], row["accuracy_ci95"]),
        "baseline" if is_baseline else format_p(row["p_value"]),
        sampled,
        "baseline" if is_baseline else format_p(row["sampled_p_value"]),
    ]


def _notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{row['checkpoint']} {row['benchmark']}: {row['note']}" for row in rows if row["note"]]


def render_comparison(rows: Sequence[Mapping[str, Any]], baseline: str | None) -> str:
    """A fixed-width table of :func:`comparison_rows`, its legend and notes."""
    if not rows:
        return "no evaluation results"
    header = [*_HEADER, "p sampled"]
    body = [_cells(row, baseline) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines = [
        TITLE.format(baseline=baseline or "(none)"),
        "",
        line(header),
        "  ".join("-" * w for w in widths),
        *(line(cells) for cells in body),
        "",
        EXPLANATION,
    ]
    notes = _notes(rows)
    return "\n".join(lines + (["Notes:", *(f"  {note}" for note in notes)] if notes else []))


def render_comparison_markdown(rows: Sequence[Mapping[str, Any]], baseline: str | None) -> str:
    """The same table in GitHub markdown (Prefect artifacts, MLflow)."""
    if not rows:
        return "_no evaluation results_"
    header = [*_HEADER, "p sampled"]
    align = [":--", ":--"] + ["--:"] * (len(header) - 2)
    body = [_cells(row, baseline) for row in rows]
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, align, *body]]
    notes = [f"- {note}" for note in _notes(rows)]
    return "\n".join(
        [f"**{TITLE.format(baseline=f'`{baseline}`' if baseline else '(none)')}**", "", *lines]
        + ["", EXPLANATION, *([""] + notes if notes else [])]
    )
