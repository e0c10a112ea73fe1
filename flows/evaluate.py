"""The ``evaluate`` flow: checkpoints x benchmarks -> catalog results, a leaderboard, a ref.

Checkpoint refs are pinned once at the start, so a checkpoint version
registered while the flow runs does not mix into its results. Each
(checkpoint, benchmark) is one task run: resumable from its generation
shards, recorded in the catalog, logged to this flow's MLflow run. The run
as a whole is recorded too, as a dataset of kind ``evaluation``
(``tasks/evaluation_record.py``), whose ref the flow returns.
"""

from typing import Any

from prefect import flow

from schemas.eval import EvaluateConfig
from tasks.context import flow_tracking
from tasks.evaluate import evaluate_checkpoint_on_benchmark, pin_checkpoints, publish_leaderboard
from tasks.evaluation_record import record_evaluation
from tasks.observe import announce, run_name
from tasks.parameters import stage_config


@flow(
    name="evaluate", log_prints=True, flow_run_name=run_name("evaluate", "checkpoints", "tiny-sft")
)
def evaluate(
    config: EvaluateConfig | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Evaluate every checkpoint on every benchmark, publish the leaderboard, record the run.

    Returns the evaluation's catalog ref (``dataset:NAME@V``, kind ``evaluation``):
    one row per checkpoint and benchmark with accuracy, 95% intervals and paired
    tests against ``config.baseline``; its metadata holds ``results``
    ({checkpoint name@version: {benchmark: accuracy in [0, 1]}}) and the
    ``leaderboard`` text (``tasks.evaluation_record.read_evaluation``).

    Args:
        config: The whole evaluation config. A deployment fills it from its preset.
        preset: A preset name (schemas/presets/) or YAML path to use instead of config.
        overrides: Fields to change, merged over the preset (or config), keeping the rest:
            {"a.b": 1} or {"a": {"b": 1}}, like --set on the command line.
    """
    config = stage_config(EvaluateConfig, config, preset, overrides)
    with flow_tracking("evaluate", config) as run:
        refs = pin_checkpoints(config.checkpoints)
        # The baseline of the paired tests is pinned too (and an unknown one fails now).
        baseline = pin_checkpoints([config.baseline])[0] if config.baseline else None
        pinned = config.model_copy(update={"checkpoints": refs, "baseline": baseline})
        results: dict[str, dict[str, float]] = {ref: {} for ref in refs}
        for ref in refs:
            for spec in config.benchmarks:
                outcome = evaluate_checkpoint_on_benchmark(ref, spec, pinned, run.run_id)
                results[ref][spec.name] = outcome["accuracy"]
        table = publish_leaderboard(refs, run.run_id, config.reference_rows, baseline)
        # In this run's log and, as a pipeline stage, in the pipeline's (what CI shows).
        announce("leaderboard\n%s", table)
        return record_evaluation(pinned, results, table, run.run_id)
