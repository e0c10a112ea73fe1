"""Evaluation as Prefect tasks: one (checkpoint, benchmark) per task run, then the leaderboard.

Every result is recorded in the catalog against the pinned checkpoint version,
with its predictions in a content-addressed parquet file; MLflow gets the
metrics and the predictions, Prefect a summary artifact per result and the
leaderboard as a table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from mmr1.catalog import Catalog, CatalogNotFoundError, parse_ref
from mmr1.data.requests import TRANSPORT_FIELDS
from mmr1.eval.benchmarks import BenchmarkAdapter, get_adapter
from mmr1.eval.leaderboard import (
    build_leaderboard,
    comparison,
    render_leaderboard,
    render_leaderboard_markdown,
)
from mmr1.eval.run import PREDICTIONS_FILE, BenchmarkRun, evaluate_benchmark, write_predictions
from mmr1.eval.significance import (
    outcomes_from_predictions,
    render_comparison,
    render_comparison_markdown,
    summarize,
)
from mmr1.hashing import hash_bytes
from mmr1.models.registry import resolve_checkpoint
from mmr1.storage import content_addressed
from mmr1.tracking import TrackedRun
from schemas.catalog import CheckpointEntry, DatasetEntry
from schemas.eval import BenchmarkScore, BenchmarkSpec, EvalItem, EvaluateConfig
from schemas.generation import BackendConfig, HFBackendConfig
from tasks.context import catalog, flow_run_id, home, tracked_run
from tasks.generation import build_backend
from tasks.versions import code_version


def slug(text: str) -> str:
    """Lower-case letters, digits and dashes: safe for directory names and artifact keys."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def metric_prefix(checkpoint_ref: str, all_refs: Sequence[str]) -> str:
    """``eval`` for a single checkpoint; ``eval/<name>`` (``eval/<name>-v<N>`` when two
    refs share a name) when a run evaluates several."""
    if len(all_refs) <= 1:
        return "eval"
    parsed = parse_ref(checkpoint_ref)
    names = [parse_ref(ref).name for ref in all_refs]
    if len(set(names)) == len(names):
        return f"eval/{parsed.name}"
    return f"eval/{parsed.name}-v{parsed.version}"


def eval_backend_config(config: EvaluateConfig, model_uri: str) -> BackendConfig:
    """The configured backend pointed at the checkpoint, or the local hf backend."""
    if config.backend is None:
        return HFBackendConfig(model=model_uri, batch_size=config.batch_size, device=config.device)
    return config.backend.model_copy(update={"model": model_uri})


def resolve_source(cat: Catalog, spec: BenchmarkSpec) -> tuple[str, DatasetEntry | None]:
    """Where the benchmark's data is, and its catalog entry when it came from the catalog.

    ``dataset:NAME[@V]`` is a catalog ref for any benchmark. A synthetic source
    is looked up in the catalog first (``synthetic-bench``), then read as a
    path. Anything else (a local path, a hub id) goes to the adapter as is.
    """
    source = spec.source
    entry: DatasetEntry | None = None
    if source.startswith("dataset:"):
        entry = cat.get_dataset(source)
    elif spec.name == "synthetic":
        try:
            entry = cat.get_dataset(source)
        except (CatalogNotFoundError, ValueError):
            if not Path(source).expanduser().exists():
                raise ValueError(
                    f"synthetic benchmark source {source!r} is neither a catalog dataset nor "
                    "an existing path"
                ) from None
    if entry is None:
        return source, None
    if entry.kind != "benchmark":
        get_run_logger().warning(
            "benchmark %s reads dataset %s of kind %r, not 'benchmark'",
            spec.name,
            entry.ref,
            entry.kind,
        )
    return entry.uri, entry


def _work_dir(
    checkpoint: CheckpointEntry,
    spec: BenchmarkSpec,
    source_id: str,
    config: EvaluateConfig,
    backend: BackendConfig,
) -> Path:
    # Keyed by what determines the generations, so a rerun resumes the same shards. The
    # content hash stands for the model, not the directory it lies in (a moved home resumes).
    samples = config.sampled_params()
    key = json.dumps(
        {
            "checkpoint": checkpoint.ref,
            "content_hash": checkpoint.content_hash,
            "benchmark": spec.model_dump(
                mode="json", include={"name", "split", "subset", "limit", "prompt_style"}
            ),
            "source": source_id,
            "sampling": config.sampling.model_dump(mode="json"),
            "samples": samples.model_dump(mode="json") if samples else None,
            "backend": backend.model_dump(mode="json", exclude=set(TRANSPORT_FIELDS) | {"model"}),
            "seed": config.seed,
            "shard_size": config.shard_size,
        },
        sort_keys=True,
    )
    name = f"{slug(checkpoint.name)}-v{checkpoint.version}-{spec.name}"
    return home().runs / "eval" / f"{name}-{hash_bytes(key.encode())[:16]}"


def _result_key(work: Path, spec: BenchmarkSpec) -> str:
    """What produced a result: its generations (the work dir is keyed by them), its scorer
    and the code. A resumed evaluation has the same key and is recorded once; a scorer or
    code change gives a new result."""
    payload = {
        "generations": work.name,
        "scorer": spec.model_dump(mode="json", include={"scorer", "judge"}),
        "code": code_version(),
    }
    return hash_bytes(json.dumps(payload, sort_keys=True).encode())


@task(name="pin-checkpoints")
def pin_checkpoints(refs: Sequence[str]) -> list[str]:
    """Resolve bare checkpoint refs to ``name@version`` now, for the whole run (no repeats)."""
    cat = catalog()
    return list(dict.fromkeys(resolve_checkpoint(cat, ref).ref for ref in refs))


@task(
    name="evaluate-benchmark",
    task_run_name="eval-{checkpoint_ref}-{spec.name}",
    retries=1,
    retry_delay_seconds=5,
)
def evaluate_checkpoint_on_benchmark(
    checkpoint_ref: str, spec: BenchmarkSpec, config: EvaluateConfig, mlflow_run_id: str
) -> dict[str, Any]:
    """Evaluate one checkpoint on one benchmark, record the result; return its summary.

    A retry (or a rerun with the same settings) reuses the finished generation
    shards under ``runs/eval``; scoring is always redone, and a result is recorded
    once per generations, scorer and code (``_result_key``). The summary holds
    ``checkpoint`` (pinned ref), ``benchmark``, ``split``, ``scorer``,
    ``accuracy`` (in [0, 1]), ``n_items``, ``n_correct``, ``accuracy_ci95``,
    ``sampled_accuracy``, ``sampled_k``, ``predictions_uri`` and ``result_id``.
    MLflow metrics are ``eval/<benchmark>/accuracy`` (and friends), prefixed by
    the checkpoint name when ``config.checkpoints`` (the flow passes them pinned)
    names several.
    """
    cat = catalog()
    job = _prepare(cat, cat.get_checkpoint(checkpoint_ref), spec, config)
    outcome = _generate_and_score(job, spec, config)
    score = job.adapter.aggregate(job.items, outcome.scores, job.split)
    predictions_uri = _save_predictions(job, spec, outcome)
    metrics = _result_metrics(score, outcome, config)
    result = cat.record_eval_result(
        checkpoint_ref=job.checkpoint.ref,
        benchmark=spec.name,
        split=job.split,
        scorer=score.scorer,
        n_items=score.n_items,
        metrics=metrics,
        breakdown=score.breakdown,
        predictions_uri=predictions_uri,
        prefect_flow_run_id=flow_run_id(),
        mlflow_run_id=mlflow_run_id,
        result_key=_result_key(job.work, spec),
    )
    _log_result(tracked_run(mlflow_run_id), job, spec, config, score, metrics, outcome)
    tracked_run(mlflow_run_id).log_artifact(predictions_uri, artifact_path=_artifacts(job, spec))
    _publish_result(job.checkpoint.ref, score, metrics, outcome.stats, predictions_uri)
    return {
        "checkpoint": job.checkpoint.ref,
        "benchmark": spec.name,
        "split": job.split,
        "scorer": score.scorer,
        "accuracy": score.accuracy,
        "n_items": score.n_items,
        "n_correct": score.n_correct,
        "accuracy_ci95": [metrics["accuracy_ci95_lo"], metrics["accuracy_ci95_hi"]],
        "sampled_accuracy": metrics.get("sampled_accuracy"),
        "sampled_k": config.sampled_k,
        "predictions_uri": predictions_uri,
        "result_id": result.id,
    }


@dataclass(frozen=True)
class _Job:
    """One (checkpoint, benchmark) evaluation: what it reads, where it works."""

    checkpoint: CheckpointEntry
    dataset: DatasetEntry | None
    source_id: str
    adapter: BenchmarkAdapter
    split: str
    items: list[EvalItem]
    backend: BackendConfig
    work: Path


def _prepare(
    cat: Catalog, checkpoint: CheckpointEntry, spec: BenchmarkSpec, config: EvaluateConfig
) -> _Job:
    """Load the benchmark's items, choose the backend and the (resumable) work directory."""
    source, dataset = resolve_source(cat, spec)
    source_id = f"dataset:{dataset.ref}:{dataset.content_hash}" if dataset else source
    adapter = get_adapter(spec.name)
    split = spec.split or adapter.default_split
    items = adapter.load(spec.model_copy(update={"source": source}))
    if not items:
        raise ValueError(f"benchmark {spec.name} ({source}, split {split}) has no items")
    backend = eval_backend_config(config, checkpoint.uri)
    work = _work_dir(checkpoint, spec, source_id, config, backend)
    get_run_logger().info(
        "evaluating %s on %s/%s: %d items (work dir %s)",
        checkpoint.ref,
        spec.name,
        split,
        len(items),
        work,
    )
    return _Job(checkpoint, dataset, source_id, adapter, split, items, backend, work)


def _generate_and_score(job: _Job, spec: BenchmarkSpec, config: EvaluateConfig) -> BenchmarkRun:
    """Greedy (and sampled) answers in resumable shards, each scored by the benchmark's rule."""
    backend = build_backend(job.backend)
    judge = build_backend(spec.judge) if spec.scorer == "llm_judge" and spec.judge else None
    try:
        return evaluate_benchmark(
            job.items,
            job.adapter,
            backend,
            config.sampling,
            job.work,
            prompt_style=spec.prompt_style,
            shard_size=config.shard_size,
            seed=config.seed,
            restart=config.restart,
            fingerprint_extras={"checkpoint": job.checkpoint.ref, "source": job.source_id},
            checkpoint_hash=job.checkpoint.content_hash,
            score_workers=config.score_workers,
            score_timeout_s=config.score_timeout_s,
            judge=judge,
            samples=config.sampled_params(),
        )
    finally:
        backend.close()
        if judge is not None:
            judge.close()


def _save_predictions(job: _Job, spec: BenchmarkSpec, outcome: BenchmarkRun) -> str:
    """The per-item predictions, content-addressed under the home; their file's path."""
    checkpoint = job.checkpoint
    name = f"{slug(checkpoint.name)}-v{checkpoint.version}-{spec.name}-{slug(job.split)}"
    folder, _, _ = content_addressed(
        home().datasets / "eval-predictions",
        name,
        lambda out: write_predictions(outcome.predictions, out),
    )
    return str(folder / PREDICTIONS_FILE)


def _result_metrics(
    score: BenchmarkScore, outcome: BenchmarkRun, config: EvaluateConfig
) -> dict[str, float]:
    """The catalog metrics of a result: accuracy, counts, lengths, intervals, sampled accuracy."""
    metrics = {
        "accuracy": score.accuracy,
        "n_correct": float(score.n_correct),
        # Rows that could not be read: in n_items, scored wrong (docs/BENCHMARKS.md, "Bad rows").
        "n_invalid": float(score.n_invalid),
        "mean_tokens": outcome.stats["mean_tokens"],
        "truncated_frac": outcome.stats["truncated_frac"],
        # Intervals (Wilson; t over items for sampled accuracy), sampled_k, sampled_accuracy.
        **summarize(outcomes_from_predictions(outcome.predictions)),
    }
    if config.sampled_k:
        metrics["sampled_temperature"] = config.sampled_temperature
    return metrics


def _artifacts(job: _Job, spec: BenchmarkSpec) -> str:
    return f"eval/{slug(job.checkpoint.name)}-v{job.checkpoint.version}/{spec.name}"


def _log_result(
    run: TrackedRun,
    job: _Job,
    spec: BenchmarkSpec,
    config: EvaluateConfig,
    score: BenchmarkScore,
    metrics: dict[str, float],
    outcome: BenchmarkRun,
) -> None:
    """Metrics, the score and the inputs read to the flow's MLflow run; a summary line."""
    checkpoint, dataset = job.checkpoint, job.dataset
    prefix = f"{metric_prefix(checkpoint.ref, config.checkpoints)}/{spec.name}"
    run.log_metrics(
        {f"{prefix}/{key}": value for key, value in metrics.items()}
        | {
            f"{prefix}/n_items": float(score.n_items),
            f"{prefix}/generate_s": outcome.stats["generate_s"],
            f"{prefix}/score_s": outcome.stats["score_s"],
        }
    )
    run.log_dict(
        score.model_dump(mode="json") | {"checkpoint": checkpoint.ref, "source": job.source_id},
        f"{_artifacts(job, spec)}/score.json",
    )
    run.record_reads(
        [f"checkpoint:{checkpoint.ref}"] + ([f"dataset:{dataset.ref}"] if dataset else [])
    )
    if dataset is not None:
        run.log_dataset_input(
            name=dataset.ref,
            digest=dataset.content_hash,
            uri=dataset.uri,
            context="evaluation",
            columns=dataset.columns,
        )
    get_run_logger().info(
        "%s on %s/%s: accuracy %.1f%% [%.1f, %.1f] (%d/%d, scorer %s; %d generated, %d reused)%s",
        checkpoint.ref,
        spec.name,
        job.split,
        100 * score.accuracy,
        100 * metrics["accuracy_ci95_lo"],
        100 * metrics["accuracy_ci95_hi"],
        score.n_correct,
        score.n_items,
        score.scorer,
        int(outcome.stats["generated"]),
        int(outcome.stats["reused"]),
        f"; sampled@{config.sampled_k} {100 * metrics['sampled_accuracy']:.1f}%"
        if "sampled_accuracy" in metrics
        else "",
    )


def _publish_result(
    checkpoint_ref: str,
    score: BenchmarkScore,
    metrics: dict[str, float],
    stats: dict[str, float],
    predictions_uri: str,
) -> None:
    """A markdown artifact: the headline number, its interval, sampled accuracy, breakdowns."""
    lines = [
        f"# `{checkpoint_ref}` on {score.benchmark} ({score.split})",
        f"Accuracy **{100 * score.accuracy:.1f}%** ({score.n_correct}/{score.n_items} items, "
        f"scorer `{score.scorer}`"
        + (f", mean over {score.macro_over}" if score.macro_over else "")
        + f"; 95% Wilson interval of the item accuracy {100 * metrics['accuracy_ci95_lo']:.1f}"
        f"-{100 * metrics['accuracy_ci95_hi']:.1f}%); mean answer {stats['mean_tokens']:.0f} "
        f"tokens, {100 * stats['truncated_frac']:.0f}% truncated.",
    ]
    if "sampled_accuracy" in metrics:
        interval = (
            f" (95% t interval over items {100 * metrics['sampled_accuracy_ci95_lo']:.1f}"
            f"-{100 * metrics['sampled_accuracy_ci95_hi']:.1f}%)"
            if "sampled_accuracy_ci95_lo" in metrics
            else ""
        )
        lines.append(
            f"Sampled accuracy **{100 * metrics['sampled_accuracy']:.1f}%**{interval}: mean over "
            f"items of the fraction of {int(metrics['sampled_k'])} samples at temperature "
            f"{metrics.get('sampled_temperature', 1.0):g} that are right."
        )
    if score.n_invalid:
        lines.append(
            f"{score.n_invalid} rows could not be read and are scored wrong: "
            + "; ".join(f"`{item}`: {why}" for item, why in list(score.invalid.items())[:10])
        )
    lines.append(f"Predictions: `{predictions_uri}`")
    for key, groups in score.breakdown.items():
        lines += ["", f"## By {key}", "| group | items | accuracy |", "| :-- | --: | --: |"]
        counts = score.counts.get(key, {})
        lines += [
            f"| {group} | {counts.get(group, 0)} | {100 * acc:.1f}% |"
            for group, acc in groups.items()
        ]
    create_markdown_artifact(
        key=f"eval-{slug(checkpoint_ref)}-{slug(score.benchmark)}",
        markdown="\n".join(lines),
        description=f"{checkpoint_ref} on {score.benchmark}",
    )


@task(name="publish-leaderboard")
def publish_leaderboard(
    checkpoint_refs: Sequence[str],
    mlflow_run_id: str,
    include_reference: bool = True,
    baseline: str | None = None,
) -> str:
    """Leaderboard of ``checkpoint_refs`` from the catalog, to MLflow and Prefect; return its text.

    Every recorded result of these checkpoint versions counts (the latest per
    benchmark), including those of earlier runs. Under the table: each
    result's 95% intervals and paired tests against ``baseline`` (default: the
    first checkpoint), also logged as ``comparison.json``.
    """
    cat = catalog()
    results = [r for ref in checkpoint_refs for r in cat.eval_results(checkpoint_ref=ref)]
    rows = build_leaderboard(results, include_reference)
    tests, baseline_ref = comparison(cat, checkpoint_refs, baseline)
    text = render_leaderboard(rows) + "\n\n" + render_comparison(tests, baseline_ref)
    markdown = (
        render_leaderboard_markdown(rows) + "\n\n" + render_comparison_markdown(tests, baseline_ref)
    )

    run = tracked_run(mlflow_run_id)
    run.log_text(markdown + "\n", "leaderboard.md")
    run.log_dict({"rows": rows}, "leaderboard.json")
    run.log_dict({"baseline": baseline_ref, "rows": tests}, "comparison.json")
    pinned = [cat.get_checkpoint(ref).ref for ref in checkpoint_refs]
    run.log_metrics(
        {
            f"{metric_prefix(row['checkpoint'], pinned)}/avg5": row["avg5"]
            for row in rows
            if row["source"] == "catalog" and row["avg5"] is not None
        }
    )
    create_table_artifact(
        key="leaderboard",
        table=[_table_row(row) for row in rows],
        description="Accuracy (%) per benchmark; avg5 = mean of the paper's five",
    )
    create_markdown_artifact(
        key="leaderboard-summary",
        markdown="# Leaderboard\nAccuracy in %; Avg-5 = mean of the paper's five benchmarks "
        "(only when all five are complete runs on the paper's splits; `*` cells are not "
        "comparable with the paper). Below it: 95% intervals and paired tests against the "
        "baseline.\n\n" + markdown,
        description="Leaderboard (markdown)",
    )
    return text


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    """A leaderboard row as flat cells: rounded scores, notes (and invalid rows) as strings."""
    cells = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}
    cells["notes"] = "; ".join(f"{name}: {why}" for name, why in (row.get("notes") or {}).items())
    # Rows that could not be read (scored wrong, still comparable): "logicvista: 1 of 448 rows".
    cells["invalid"] = "; ".join(f"{name}: {n}" for name, n in (row.get("invalid") or {}).items())
    return cells
