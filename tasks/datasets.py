"""Tasks that produce versioned datasets from the synthetic generator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from mmr1.cot import keep_verified
from mmr1.data.io import DatasetFiles, write_rl_dataset, write_sft_dataset
from mmr1.data.synthetic import generate_benchmark, generate_items, to_sft_record
from mmr1.storage import content_addressed
from schemas.rewards import RewardConfig
from schemas.synthetic import SyntheticConfig
from tasks.context import catalog, flow_run_id, home, tracked_run


def _register(
    name: str,
    kind: str,
    write: Callable[[Path], DatasetFiles],
    mlflow_run_id: str,
    metadata: dict[str, Any],
    context: str,
    parents: Sequence[str] = (),
) -> str:
    path, digest, files = content_addressed(home().datasets, name, write)
    entry = catalog().register_dataset(
        name=name,
        kind=kind,
        uri=str(path),
        content_hash=digest,
        row_count=files.row_count,
        columns=files.columns,
        prefect_flow_run_id=flow_run_id(),
        mlflow_run_id=mlflow_run_id,
        metadata=metadata,
        parents=parents,
    )
    run = tracked_run(mlflow_run_id)
    run.record_writes([f"dataset:{entry.ref}"])
    run.log_dataset_input(
        name=entry.ref, digest=digest, uri=entry.uri, context=context, columns=entry.columns
    )
    run.log_metrics({f"{name}/rows": entry.row_count})
    get_run_logger().info("%s: %d rows at %s", entry.ref, entry.row_count, entry.uri)
    return f"dataset:{entry.ref}"


@task(name="synthesize-rl-pool")
def synthesize_rl_pool(name: str, config: SyntheticConfig, mlflow_run_id: str) -> str:
    """Generate a synthetic RL prompt pool (MMR1-RL schema) and register it."""
    records = [item.record for item in generate_items(config)]
    return _register(
        name,
        "rl",
        lambda out: write_rl_dataset(records, out),
        mlflow_run_id,
        {"generator": "synthetic", "config": config.model_dump(mode="json")},
        context="training",
    )


@task(name="synthesize-benchmark")
def synthesize_benchmark(name: str, seed: int, n_items: int, mlflow_run_id: str) -> str:
    """Generate the built-in synthetic benchmark (held-out seed space) and register it."""
    records = [item.record for item in generate_benchmark(seed=seed, n_items=n_items)]
    return _register(
        name,
        "benchmark",
        lambda out: write_rl_dataset(records, out),
        mlflow_run_id,
        {"generator": "synthetic-benchmark", "seed": seed, "n_items": n_items},
        context="evaluation",
    )


@task(name="synthesize-sft-cot")
def synthesize_sft_cot(
    name: str, config: SyntheticConfig, rewards: RewardConfig, mlflow_run_id: str
) -> str:
    """SFT data from the programmatic teacher, keeping only CoTs whose answer verifies.

    The questions are registered first (kind ``source``) and are the SFT
    dataset's lineage parent, as a hub or local source is in real curation.

    Rejected CoTs are quarantined against the new dataset version with their
    reason, so ``kept + quarantined == generated`` always holds.
    """
    items = generate_items(config)
    questions = _register(
        f"{name}-questions",
        "source",
        lambda out: write_rl_dataset([item.record for item in items], out),
        mlflow_run_id,
        {"generator": "synthetic", "config": config.model_dump(mode="json")},
        context="source",
    )
    candidates = [to_sft_record(item) for item in items]
    choices: Sequence[list[str] | None] = [item.record.choices for item in items]
    result = keep_verified(candidates, choices, source=questions, config=rewards)
    ref = _register(
        name,
        "sft",
        lambda out: write_sft_dataset(result.kept, out),
        mlflow_run_id,
        {
            "generator": "synthetic-teacher",
            "config": config.model_dump(mode="json"),
            "generated": len(candidates),
            "rejected": len(result.rejected),
        },
        context="training",
        parents=[questions],
    )
    if result.rejected:
        catalog().add_quarantined(ref.removeprefix("dataset:"), result.rejected)
    tracked_run(mlflow_run_id).log_metrics({f"{name}/cot_acceptance_rate": result.acceptance_rate})
    return ref
