"""GRPO-with-VAS as a Prefect task: train (in process or ``accelerate launch``), register, report.

The job itself is library code (``mmr1.rl.grpo``); launched, it runs
``python -m mmr1.rl.grpo_main`` in the trainer environment, logs metrics to
the flow's MLflow run by id and registers its saved checkpoints in the
catalog itself, so the trainer needs no Prefect.
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
from mmr1.rl.grpo import run_grpo
from mmr1.rl.snapshot import CatalogHooks, checkpoint_metrics, snapshot
from mmr1.train.launch import check_tracking_store, launch_command, launch_options
from mmr1.train.nodes import leading
from schemas.catalog import CheckpointEntry, DatasetEntry, VPSTableEntry
from schemas.grpo import GRPOResult, GRPOStageConfig
from tasks.context import catalog, flow_run_id, home, tracked_run
from tasks.jobs import run_job
from tasks.observe import Progress


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


def _launch(
    config: GRPOStageConfig,
    init: CheckpointEntry,
    dataset: DatasetEntry,
    vps: VPSTableEntry | None,
    work: Path,
    mlflow_run_id: str,
) -> GRPOResult:
    config_path = work / "grpo_config.json"
    config_path.write_text(config.train.model_dump_json(indent=2))
    extra = [
        "--catalog",
        str(home().catalog),
        "--checkpoints-root",
        str(home().checkpoints),
        "--dataset-ref",
        dataset.ref,
        "--init-ref",
        init.ref,
    ]
    if config.register_every_save:
        extra += ["--register-name", config.output_name]
    if vps is not None:
        extra += ["--vps-table", vps.ref, str(Path(vps.uri))]
    if flow_run_id():
        extra += ["--prefect-flow-run-id", str(flow_run_id())]
    check_tracking_store(home().tracking_uri, config.launch.python)
    command = launch_command(
        config_path,
        model_path=Path(init.uri),
        dataset_path=Path(dataset.uri),
        output_dir=work,
        mlflow_run_id=mlflow_run_id,
        mlflow_tracking_uri=home().tracking_uri,
        module="mmr1.rl.grpo_main",
        extra_args=extra,
        **launch_options(config.launch),
    )
    with leading(home().runs, command, config.launch):  # other machines join (train.nodes)
        run_job(command, work / "train.log", config.launch.timeout_s, "GRPO")
    return GRPOResult.model_validate_json((work / "result.json").read_text())


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
    hooks = CatalogHooks(
        catalog_path=home().catalog,
        checkpoints_root=home().checkpoints,
        name=config.output_name,
        dataset_ref=dataset.ref,
        init_ref=init.ref,
        mlflow_run_id=mlflow_run_id,
        prefect_flow_run_id=flow_run_id(),
        sampling_mode=config.train.sampling_mode,
    )
    if config.launch.kind == "inprocess":
        progress = Progress(config.train.steps)

        def log_step(metrics: dict[str, float], step: int) -> None:
            run.log_metrics(metrics, step=step)
            progress(step)

        result = run_grpo(
            config.train,
            model_path=Path(init.uri),
            dataset_path=Path(dataset.uri),
            output_dir=work,
            vps_table=(vps.ref, Path(vps.uri)) if vps else None,
            vps_lookup=hooks.latest_vps_table,
            metrics_callback=log_step,
            checkpoint_callback=hooks.register if config.register_every_save else None,
        )
    else:
        result = _launch(config, init, dataset, vps, work, mlflow_run_id)

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
        prefect_flow_run_id=flow_run_id(),
        mlflow_run_id=mlflow_run_id,
    )
    ref = f"checkpoint:{entry.ref}"
    run.record_writes([ref])
    run.set_tags(
        {"mmr1.rl_checkpoint": entry.ref, "mmr1.sampling_mode": config.train.sampling_mode}
    )
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
