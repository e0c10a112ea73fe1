"""VPS estimation as Prefect tasks: roll out, score, write and register a VPS table version."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from mmr1.catalog import Catalog
from mmr1.hashing import hash_bytes
from mmr1.models.registry import resolve_checkpoint
from mmr1.storage import content_addressed
from mmr1.vas.estimate import (
    VPSEstimate,
    estimate_vps,
    read_pool_frame,
    text_histogram,
    write_vps_table,
)
from schemas.catalog import VPSTableEntry
from schemas.generation import BackendConfig, HFBackendConfig
from schemas.vas import VPSEstimateConfig
from tasks.context import catalog, flow_run_id, home, tracked_run
from tasks.generation import build_backend


def vps_backend_config(config: VPSEstimateConfig, model_uri: str) -> BackendConfig:
    """The configured backend pointed at the checkpoint, or the local hf backend."""
    if config.backend is None:
        return HFBackendConfig(model=model_uri, batch_size=config.batch_size, device=config.device)
    return config.backend.model_copy(update={"model": model_uri})


def output_name(config: VPSEstimateConfig, dataset_name: str) -> str:
    return config.output_name or f"{dataset_name}-vps"


def _histograms(estimate: VPSEstimate, title: str) -> Figure:
    figure = Figure(figsize=(9, 3.2))
    left, right = figure.subplots(1, 2)
    left.hist(estimate.table["pass_rate"].to_list(), bins=20, range=(0, 1))
    left.set_xlabel("pass rate p")
    left.set_ylabel("prompts")
    right.hist(estimate.table["vps"].to_list(), bins=20, range=(0, 1))
    right.set_xlabel("VPS")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _register(
    cat: Catalog,
    name: str,
    estimate: VPSEstimate,
    dataset_ref: str,
    checkpoint_ref: str,
    mlflow_run_id: str,
) -> VPSTableEntry:
    path, digest, rows = content_addressed(
        home().datasets, name, lambda out: write_vps_table(estimate, out)
    )
    stats = {k: v for k, v in estimate.stats.items() if not k.endswith("_s")}
    return cat.register_vps_table(
        name=name,
        dataset_ref=dataset_ref,
        checkpoint_ref=checkpoint_ref,
        uri=str(path),
        content_hash=digest,
        row_count=int(rows),
        stats=stats,
        prefect_flow_run_id=flow_run_id(),
        mlflow_run_id=mlflow_run_id,
    )


@task(name="estimate-vps", retries=1, retry_delay_seconds=5)
def estimate_vps_table(config: VPSEstimateConfig, mlflow_run_id: str) -> str:
    """Roll out the checkpoint on the RL pool, register the VPS table; return ``vps:name@v``.

    Bare refs resolve to the latest versions now; the resolved versions are
    pinned in the table, its lineage and the MLflow run. A retry (or a rerun
    of the flow with the same config) resumes from the finished shards.
    """
    logger = get_run_logger()
    cat = catalog()
    dataset = cat.get_dataset(config.dataset)
    checkpoint = resolve_checkpoint(cat, config.checkpoint)
    dataset_ref, checkpoint_ref = f"dataset:{dataset.ref}", f"checkpoint:{checkpoint.ref}"
    frame = read_pool_frame(Path(dataset.uri), config.limit)
    tracked_run(mlflow_run_id).log_dataset_input(
        name=dataset.ref,
        digest=dataset.content_hash,
        uri=dataset.uri,
        context="scoring",  # the RL pool whose prompts get VPS under the checkpoint
        columns=dataset.columns,
    )
    name = output_name(config, dataset.name)
    key = json.dumps(
        {
            "config": config.model_dump(mode="json", exclude={"restart"}),
            "dataset": dataset.ref,
            "checkpoint": checkpoint.ref,
            "checkpoint_hash": checkpoint.content_hash,  # the shards' name for the model
        },
        sort_keys=True,
    )
    work = home().runs / "vps" / f"{name}-{hash_bytes(key.encode())[:16]}"
    logger.info(
        "VPS: %d prompts of %s x %d rollouts of %s (work dir %s)",
        frame.height,
        dataset.ref,
        config.rollouts,
        checkpoint.ref,
        work,
    )
    backend = build_backend(vps_backend_config(config, checkpoint.uri))
    try:
        estimate = estimate_vps(
            frame,
            backend,
            config,
            work,
            dataset_ref=dataset.ref,
            checkpoint_ref=checkpoint.ref,
            checkpoint_hash=checkpoint.content_hash,
        )
    finally:
        backend.close()
    entry = _register(cat, name, estimate, dataset.ref, checkpoint.ref, mlflow_run_id)
    ref = f"vps:{entry.ref}"

    run = tracked_run(mlflow_run_id)
    run.log_metrics({f"vps/{k}": v for k, v in estimate.stats.items()})
    run.log_figure(
        _histograms(estimate, f"{entry.ref}: {checkpoint.ref} on {dataset.ref}"),
        "plots/vps_histograms.png",
    )
    run.log_artifact(Path(entry.uri) / "vps.parquet", artifact_path="vps")
    run.record_reads([dataset_ref, checkpoint_ref])
    run.record_writes([ref])
    run.set_tags({"mmr1.vps_table": entry.ref})
    _publish(entry, estimate)
    logger.info("registered %s (%s)", ref, _headline(estimate))
    return ref


def _headline(estimate: VPSEstimate) -> str:
    s = estimate.stats
    return (
        f"{int(s['prompts'])} prompts, mean p {s['pass_rate_mean']:.3f}, "
        f"p in {{0,1}} {s['frac_zero_variance']:.1%}, mean VPS {s['vps_mean']:.3f}, "
        f"{s['rollouts_per_s']:.1f} rollouts/s"
    )


def _publish(entry: VPSTableEntry, estimate: VPSEstimate) -> None:
    """Prefect artifacts: a markdown summary with histograms and the top prompts by VPS."""
    table = estimate.table
    markdown = "\n".join(
        [
            f"# VPS table `{entry.ref}`",
            f"Checkpoint `{entry.checkpoint_ref}` on dataset `{entry.dataset_ref}`: "
            + _headline(estimate)
            + ".",
            "",
            "## Pass rate",
            "```",
            text_histogram(table["pass_rate"].to_list()),
            "```",
            "## VPS",
            "```",
            text_histogram(table["vps"].to_list()),
            "```",
        ]
    )
    slug = entry.name.lower().replace("_", "-").replace(".", "-")
    create_markdown_artifact(
        key=f"vps-{slug}", markdown=markdown, description=f"VPS table {entry.ref}"
    )
    top = table.sort("vps", descending=True).head(20)
    create_table_artifact(
        key=f"vps-top-{slug}",
        table=[
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in top.select("prompt_id", "pass_rate", "ovs", "tds", "vps").iter_rows(
                named=True
            )
        ],
        description=f"Highest-VPS prompts of {entry.ref}",
    )
