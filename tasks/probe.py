"""Probe a checkpoint: sample and score a few benchmark answers."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from mmr1.data.io import read_rl_dataset
from mmr1.eval.probe import probe_policy
from mmr1.generation import get_backend
from schemas.demo import ProbeConfig
from schemas.generation import HFBackendConfig
from schemas.rewards import RewardConfig
from tasks.context import catalog, tracked_run


@task(name="probe-policy")
def probe_checkpoint(
    checkpoint_ref: str,
    dataset_ref: str,
    config: ProbeConfig,
    rewards: RewardConfig,
    mlflow_run_id: str,
) -> dict[str, float]:
    """Roll out the checkpoint on the first prompts of a dataset; log scores and rollouts."""
    cat = catalog()
    checkpoint = cat.get_checkpoint(checkpoint_ref.removeprefix("checkpoint:"))
    dataset = cat.get_dataset(dataset_ref.removeprefix("dataset:"))
    records = read_rl_dataset(Path(dataset.uri))[: config.n_prompts]
    backend = get_backend(HFBackendConfig(model=checkpoint.uri, batch_size=config.batch_size))
    try:
        result = probe_policy(backend, records, config.sampling, rewards)
    finally:
        backend.close()

    run = tracked_run(mlflow_run_id)
    prefix = f"probe/{checkpoint.name}"
    run.log_metrics({f"{prefix}/{k}": v for k, v in result.metrics.items()})
    run.record_reads([f"checkpoint:{checkpoint.ref}", f"dataset:{dataset.ref}"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rollouts.jsonl"
        path.write_text("".join(json.dumps(r.model_dump()) + "\n" for r in result.rollouts))
        run.log_artifact(path, artifact_path=f"probe/{checkpoint.name}")
    create_table_artifact(
        key="probe-" + checkpoint.name.replace(".", "-").replace("_", "-").lower(),
        table=[{"metric": k, "value": round(v, 4)} for k, v in result.metrics.items()],
        description=f"Probe of {checkpoint.ref} on {dataset.ref} ({len(records)} prompts)",
    )
    return result.metrics
