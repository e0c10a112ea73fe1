"""Datasets a task writes whole: the built-in synthetic benchmark, evaluation records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from mmr1.data.io import DatasetFiles, write_rl_dataset
from mmr1.data.synthetic import generate_benchmark
from mmr1.storage import content_addressed
from schemas.synthetic import SyntheticConfig, SyntheticTasks
from tasks.context import catalog, flow_run_id, home, tracked_run


def register_dataset_files(
    name: str,
    kind: str,
    write: Callable[[Path], DatasetFiles],
    mlflow_run_id: str,
    metadata: dict[str, Any],
    context: str,
    parents: Sequence[str] = (),
) -> str:
    """Write a dataset with ``write(dir)`` under the home, register it and log it; its ref.

    The directory is content-addressed, so the same content is the same version.
    """
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


@task(name="synthesize-benchmark")
def synthesize_benchmark(
    name: str,
    seed: int,
    n_items: int,
    mlflow_run_id: str,
    tasks: SyntheticTasks | None = None,
) -> str:
    """Generate the built-in synthetic benchmark (held-out seed space) and register it.

    ``tasks`` is its task distribution (None: every family, the generator's defaults).
    """
    tasks = tasks or SyntheticTasks()
    template = SyntheticConfig(n_items=n_items, seed=seed, **tasks.model_dump())
    records = [item.record for item in generate_benchmark(seed, n_items, template=template)]
    return register_dataset_files(
        name,
        "benchmark",
        lambda out: write_rl_dataset(records, out),
        mlflow_run_id,
        {
            "generator": "synthetic-benchmark",
            "seed": seed,
            "n_items": n_items,
            "tasks": tasks.model_dump(mode="json"),
        },
        context="evaluation",
    )
