"""An evaluation as a catalog entry: the ref the ``evaluate`` flow returns.

One dataset version of kind ``evaluation`` per distinct outcome: one row per
checkpoint and benchmark of the run, with accuracy, 95% intervals and the
paired tests against the baseline (the rows of ``mmr1 eval compare --json``);
the checkpoints and the catalog benchmarks are its parents, so lineage runs
from a benchmark number back to the data and models behind it. The metadata
keeps what the flow reports (accuracies and the leaderboard text), so a
pipeline that reuses an evaluation reports the same numbers without rerunning it.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from mmr1.data.io import write_rows
from mmr1.eval.benchmarks import get_adapter
from mmr1.eval.leaderboard import comparison
from schemas.eval import EvaluateConfig
from tasks.context import catalog
from tasks.datasets import register_dataset_files
from tasks.evaluate import resolve_source

#: ``kind`` of the catalog datasets that hold evaluations.
EVALUATION_KIND = "evaluation"


@task(name="record-evaluation")
def record_evaluation(
    config: EvaluateConfig,
    results: dict[str, dict[str, float]],
    leaderboard: str,
    mlflow_run_id: str,
) -> str:
    """Register the evaluation of ``config`` (checkpoints and baseline pinned) and return its ref.

    ``results`` maps each checkpoint ref to benchmark -> accuracy, as the flow
    computed them; ``leaderboard`` is the text it printed.
    """
    cat = catalog()
    benchmarks = {spec.name: spec for spec in config.benchmarks}
    tests, baseline = comparison(cat, config.checkpoints, config.baseline)
    rows = [
        row
        for row in tests
        if row["benchmark"] in benchmarks
        and row["split"] == (benchmarks[row["benchmark"]].split or _default_split(row))
    ]
    parents = [f"checkpoint:{ref}" for ref in config.checkpoints]
    for spec in config.benchmarks:
        entry = resolve_source(cat, spec)[1]
        if entry is not None:
            parents.append(f"dataset:{entry.ref}")
    return register_dataset_files(
        config.output_name,
        EVALUATION_KIND,
        lambda out: write_rows(rows, out),
        mlflow_run_id,
        {
            "results": results,
            "leaderboard": leaderboard,
            "baseline": baseline,
            "checkpoints": list(config.checkpoints),
            "benchmarks": list(benchmarks),
        },
        context="evaluation",
        parents=list(dict.fromkeys(parents)),
    )


def _default_split(row: dict[str, Any]) -> str:
    return get_adapter(row["benchmark"]).default_split


def read_evaluation(ref: str) -> dict[str, Any]:
    """What the ``evaluate`` flow reported for the evaluation ``ref`` (``dataset:NAME@V``).

    ``{"results": checkpoint ref -> benchmark -> accuracy (in the order evaluated),
    "leaderboard": text, "baseline": the paired tests' baseline ref}``.
    """
    entry = catalog().get_dataset(ref)
    if entry.kind != EVALUATION_KIND:
        raise ValueError(f"{ref} is a dataset of kind {entry.kind!r}, not an evaluation")
    meta = entry.metadata
    results = {ref: meta["results"][ref] for ref in meta["checkpoints"] if ref in meta["results"]}
    return {"results": results, "leaderboard": meta["leaderboard"], "baseline": meta["baseline"]}
