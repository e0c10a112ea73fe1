"""GRPO-with-VAS as a Prefect task: train (in process or ``accelerate launch``), register, report.

The job is library code (``mmr1.rl.grpo``) run from a job spec
(``tasks.jobs.train``); launched, it runs ``python -m mmr1.jobs`` in
the trainer environment, logs metrics to the flow's MLflow run by id and
registers its saved checkpoints in the catalog itself (``spec.catalog``), so
the trainer needs no Prefect.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from mmr1.hashing import hash_bytes
from mmr1.models.registry import resolve_checkpoint
from mmr1.rl.snapshot import checkpoint_metrics, snapshot
from schemas.catalog import CheckpointEntry, DatasetEntry, VPSTableEntry
from schemas.grpo import GRPOResult, GRPOStageConfig
from schemas.jobs import CatalogSpec, GRPOJob
from tasks.context import catalog, flow_run_id, home, tracked_run
from tasks.jobs import tracking_spec, train
from tasks.outputs import provenance, record_output


def _work_dir(config: GRPOStageConfig, dataset: str, model: str, vps: str | None) -> Path:
    # Keyed by what determines the result, so a restarted flow resumes the same run.
    key = json.dumps(
        {
            "train": config.train.model_dump(mode="json"),
            "data": dataset,
            "model": model,
            "vps": vps,
        },
        sort_keys=True,
    )
    path = home().runs / "grpo" / f"{config.output_name}-{hash_bytes(key.encode())[:16]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _initial_vps(config: GRPOStageConfig, dataset: DatasetEntry) -> VPSTableEntry | None:
    cat = catalog()
    entry = (
        cat.get_vps_table(config.vps_table)
        if config.vps_table
        else cat.latest_vps_table(dataset.ref)
    )
    if entry is not None and entry.dataset_ref != dataset.ref:
        raise ValueError(
            f"VPS table {entry.ref} was estimated on {entry.dataset_ref}, not on {dataset.ref}; "
            "its prompt ids would not match"
        )
    return entry


def _curves(result: GRPOResult, title: str) -> Figure:
    figure = Figure(figsize=(9, 3.2))
    left, right = figure.subplots(1, 2)
    steps = [h["step"] for h in result.history]
    left.plot(steps, [h["reward/mean"] for h in result.history], label="reward")
    left.plot(steps, [h["reward/accuracy"] for h in result.history], label="accuracy")
    left.set_xlabel("step")
    left.legend()
    right.plot(
        steps, [h["zero_variance_frac"] for h in result.history], color="tab:red", label="reward"
    )
    right.plot(
        steps,
        [h["zero_accuracy_variance_frac"] for h in result.history],
        color="tab:purple",
        label="accuracy",
    )
    right.set_xlabel("step")
    right.set_ylabel("zero-variance groups")
    right.legend()
    right.set_ylim(0, 1)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


@task(name="train-grpo")
def train_grpo(config: GRPOStageConfig, mlflow_run_id: str) -> str:
    """Train GRPO-with-VAS from the init checkpoint on the RL pool; register the result."""
    logger = get_run_logger()
    cat = catalog()
    dataset = cat.get_dataset(config.dataset)
    init = resolve_checkpoint(cat, config.init_model)
    vps = _initial_vps(config, dataset)
    run = tracked_run(mlflow_run_id)
    reads = [f"dataset:{dataset.ref}", f"checkpoint:{init.ref}"]
    run.record_reads(reads + ([f"vps:{vps.ref}"] if vps else []))
    run.log_dataset_input(
        name=dataset.ref,
        digest=dataset.content_hash,
        uri=dataset.uri,
        context="training",
        columns=dataset.columns,
    )
    work = _work_dir(config, dataset.ref, init.ref, vps.ref if vps else None)
    logger.info(
        "GRPO (%s sampling) on %s from %s, initial VPS %s; run dir %s",
        config.train.sampling_mode,
        dataset.ref,
        init.ref,
        vps.ref if vps else "none (prior)",
        work,
    )
    spec = GRPOJob(
        config=config.train,
        model_path=Path(init.uri),
        dataset_path=Path(dataset.uri),
        output_dir=work,
        vps_table=(vps.ref, Path(vps.uri)) if vps else None,
        catalog=CatalogSpec(
            catalog_path=home().catalog,
            checkpoints_root=home().checkpoints,
            name=config.output_name if config.register_every_save else None,
            dataset_ref=dataset.ref,
            init_ref=init.ref,
            prefect_flow_run_id=flow_run_id(),
        ),
        tracking=tracking_spec(run),
    )
    result = train(spec, config.launch, run, total_steps=config.train.steps)
    assert isinstance(result, GRPOResult)

    path, digest = snapshot(Path(result.final_checkpoint), home().checkpoints, config.output_name)
    vps_parents = [f"vps:{ref}" for ref in result.vps_tables if "@step-" not in ref]
    # Already registered when the last save was (register_every_save): then that entry,
    # with the same run summary, is returned as is.
    entry = cat.register_checkpoint(
        name=config.output_name,
        stage="rl",
        uri=str(path),
        content_hash=digest,
        step=result.steps,
        metrics=checkpoint_metrics(result.history),
        config=config.model_dump(mode="json") | {"sampling_mode": config.train.sampling_mode},
        parents=[*reads, *dict.fromkeys(vps_parents)],
        **provenance(run),
    )
    ref = record_output(run, "checkpoint", entry, tag="rl_checkpoint")
    run.set_tags({"mmr1.sampling_mode": config.train.sampling_mode})
    if result.history:
        run.log_figure(
            _curves(result, f"{entry.ref} ({config.train.sampling_mode})"), "plots/grpo_curves.png"
        )
    run.log_dict(result.model_dump(mode="json"), "grpo_result.json")
    if (work / "samples").is_dir():
        run.log_artifact(work / "samples", artifact_path="samples")
    _publish(entry, result, config)
    return ref


def _publish(entry: CheckpointEntry, result: GRPOResult, config: GRPOStageConfig) -> None:
    history = result.history
    first, last = (history[0], history[-1]) if history else ({}, {})

    def row(name: str) -> str:
        return (
            f"| {name} | {first.get(name, float('nan')):.3f} | {last.get(name, float('nan')):.3f} |"
        )

    mean_zero_var = (
        sum(h["zero_variance_frac"] for h in history) / len(history) if history else float("nan")
    )
    markdown = "\n".join(
        [
            f"# GRPO ({config.train.sampling_mode}) -> `{entry.ref}`",
            f"{result.steps} steps, {result.refreshes} VPS refreshes, "
            f"{result.skipped_updates} skipped updates; mean zero-variance fraction "
            f"{mean_zero_var:.3f}.",
            "",
            "| metric | first step | last step |",
            "|---|---|---|",
            row("reward/mean"),
            row("reward/accuracy"),
            row("reward/format"),
            row("zero_variance_frac"),
            row("zero_accuracy_variance_frac"),
            row("loss/kl"),
            row("grad_norm"),
            row("response/length_mean"),
        ]
    )
    create_markdown_artifact(
        key=f"grpo-{entry.name.lower().replace('_', '-').replace('.', '-')}",
        markdown=markdown,
        description=f"GRPO training summary for {entry.ref}",
    )
