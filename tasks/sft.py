"""SFT as a Prefect task: train (in process or as an ``accelerate launch`` job), then register.

The training job is library code (``mmr1.sft``) run from a job spec
(``tasks.jobs.train``): the same spec in the flow's process or, launched, as
``python -m mmr1.jobs`` in the trainer environment, which logs to the
flow's MLflow run by id and needs no Prefect.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from matplotlib.figure import Figure
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from mmr1.hashing import hash_bytes
from mmr1.models.registry import resolve_checkpoint
from mmr1.storage import content_addressed
from schemas.catalog import CheckpointEntry
from schemas.jobs import SFTJob
from schemas.sft import SFTResult
from schemas.sft_flow import SFTStageConfig
from tasks.context import catalog, home, tracked_run
from tasks.jobs import tracking_spec, train
from tasks.outputs import provenance, record_output


def _work_dir(config: SFTStageConfig, dataset_ref: str, model_ref: str) -> Path:
    # Keyed by what determines the result, so a restarted flow resumes the same job.
    key = json.dumps(
        {"train": config.train.model_dump(mode="json"), "data": dataset_ref, "model": model_ref},
        sort_keys=True,
    )
    path = home().runs / "sft" / f"{config.output_name}-{hash_bytes(key.encode())[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _loss_figure(result: SFTResult) -> Figure:
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    steps = [h["step"] for h in result.history if "loss" in h]
    axis.plot(steps, [h["loss"] for h in result.history if "loss" in h], label="train loss")
    evals = [h for h in result.eval_history if "eval_loss" in h]
    if evals:
        axis.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="eval")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (assistant tokens)")
    axis.legend()
    figure.tight_layout()
    return figure


@task(name="train-sft")
def train_sft(config: SFTStageConfig, mlflow_run_id: str) -> str:
    """Fine-tune the base checkpoint on the SFT dataset; register the best checkpoint."""
    cat = catalog()
    dataset = cat.get_dataset(config.dataset)
    base = resolve_checkpoint(cat, config.base_model)
    run = tracked_run(mlflow_run_id)
    run.record_reads([f"dataset:{dataset.ref}", f"checkpoint:{base.ref}"])
    run.log_dataset_input(
        name=dataset.ref,
        digest=dataset.content_hash,
        uri=dataset.uri,
        context="training",
        columns=dataset.columns,
    )
    work = _work_dir(config, dataset.ref, base.ref)
    spec = SFTJob(
        config=config.train,
        model_path=Path(base.uri),
        dataset_path=Path(dataset.uri),
        output_dir=work,
        tracking=tracking_spec(run),
    )
    # max_steps may be unset (epochs decide): the recipe reports its horizon first.
    result = train(spec, config.launch, run, total_steps=config.train.max_steps or 0)
    assert isinstance(result, SFTResult)

    figure = _loss_figure(result)
    run.log_figure(figure, "plots/loss_curve.png")
    run.log_dict(result.model_dump(mode="json"), "sft_result.json")

    def copy_best(out: Path) -> None:
        shutil.copytree(result.best_checkpoint, out, dirs_exist_ok=True)

    path, digest, _ = content_addressed(home().checkpoints, config.output_name, copy_best)
    final_metrics = {k: v for k, v in (result.eval_history or [{}])[-1].items() if k != "step"}
    entry = cat.register_checkpoint(
        name=config.output_name,
        stage="sft",
        uri=str(path),
        content_hash=digest,
        step=result.steps,
        metrics={k: float(v) for k, v in final_metrics.items()}
        | {"best_metric": float(result.best_metric or 0.0)},
        config=config.model_dump(mode="json"),
        parents=[f"dataset:{dataset.ref}", f"checkpoint:{base.ref}"],
        **provenance(run),
    )
    ref = record_output(run, "checkpoint", entry, tag="sft_checkpoint")
    get_run_logger().info(
        "SFT: %d steps, %d samples (%d too long, dropped) -> %s",
        result.steps,
        result.train_samples,
        result.dropped_too_long,
        entry.ref,
    )
    _publish(entry, result, config)
    return ref


def _publish(entry: CheckpointEntry, result: SFTResult, config: SFTStageConfig) -> None:
    """The run's training summary as a Prefect markdown artifact (``sft-<output name>``)."""
    history = result.history
    first, last = (history[0], history[-1]) if history else ({}, {})

    def number(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, int | float) else "-"

    def row(name: str) -> str:
        return f"| {name} | {number(first.get(name))} | {number(last.get(name))} |"

    best = config.train.best_metric
    lines = [
        f"# SFT -> `{entry.ref}`",
        f"{result.steps} steps ({result.skipped_steps} skipped for a non-finite gradient), "
        f"{result.train_samples} train / {result.eval_samples} eval samples "
        f"({result.dropped_too_long} dropped as too long), "
        f"{result.tokens_per_s:.0f} tokens/s; kept the checkpoint with the best {best} "
        f"({number(result.best_metric)}).",
        "",
        "| metric | first log step | last log step |",
        "|---|---|---|",
        row("loss"),
        row("grad_norm"),
        row("lr"),
        row("epoch"),
    ]
    if result.eval_history:
        names = sorted({k for h in result.eval_history for k in h if k != "step"})
        lines += [
            "",
            "| step | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
            *(
                f"| {h['step']} | " + " | ".join(number(h.get(n)) for n in names) + " |"
                for h in result.eval_history
            ),
        ]
    create_markdown_artifact(
        key=f"sft-{entry.name.lower().replace('_', '-').replace('.', '-')}",
        markdown="\n".join(lines),
        description=f"SFT training summary for {entry.ref}",
    )
