"""The ``evaluate`` flow: checkpoints x benchmarks -> catalog results and a leaderboard.

Checkpoint refs are pinned once at the start, so a checkpoint version
registered while the flow runs does not mix into its results. Each
(checkpoint, benchmark) is one task run: resumable from its generation
shards, recorded in the catalog, logged to this flow's MLflow run.
"""

from typing import Any

from prefect import flow

from schemas.eval import EvaluateConfig
from tasks.context import flow_tracking
from tasks.evaluate import evaluate_checkpoint_on_benchmark, pin_checkpoints, publish_leaderboard
from tasks.observe import run_name


@flow(
    name="evaluate", log_prints=True, flow_run_name=run_name("evaluate", "checkpoints", "tiny-sft")
)
def evaluate(
    config: EvaluateConfig | None = None, parent_mlflow_run_id: str | None = None
) -> dict[str, Any]:
    """Evaluate every checkpoint on every benchmark and publish the leaderboard.

    Returns ``{"results": {checkpoint name@version: {benchmark: accuracy in [0, 1]}},
    "leaderboard": text table, "mlflow_run_id": id}``.
    """
    config = config or EvaluateConfig()
    with flow_tracking("evaluate", config, parent_mlflow_run_id) as run:
        refs = pin_checkpoints(config.checkpoints)
        pinned = config.model_copy(update={"checkpoints": refs})
        results: dict[str, dict[str, float]] = {ref: {} for ref in refs}
        for ref in refs:
            for spec in config.benchmarks:
                outcome = evaluate_checkpoint_on_benchmark(ref, spec, pinned, run.run_id)
                results[ref][spec.name] = outcome["accuracy"]
        table = publish_leaderboard(refs, run.run_id, config.reference_rows)
        print(table)
        return {"results": results, "leaderboard": table, "mlflow_run_id": run.run_id}
