"""Training jobs: a job spec in, a recipe run, a result out; ``python -m mmr1.jobs SPEC.json``.

:func:`run_job` is what both paths of a training task execute (``tasks.jobs``):
in the flow's process it is called directly (with a metrics callback that also
moves the run's progress); a launched job is ``python -m mmr1.jobs SPEC.json``
in every process of ``accelerate launch``, which calls it with a callback
logging to the spec's MLflow run. Either way the recipe writes
``output_dir/result.json`` (main process), read back by :func:`read_result`.

This module sits above both recipes (``mmr1.sft``, ``mmr1.rl``) and the shared
core they use (``mmr1.trainer``). Exit status of the entry point: 0 on success;
2 for a spec that does not validate or a tracking store this environment cannot
write (checked on every rank before the model is loaded); 1 for other errors.
No Prefect here: the trainer environment may not have it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from mmr1.trainer.job import setup_job_logging
from mmr1.trainer.tracking import job_tracking_problem, mlflow_logger
from schemas.grpo import GRPOResult
from schemas.jobs import GRPOJob, JobSpec, SFTJob
from schemas.sft import SFTResult

MetricsCallback = Callable[[dict[str, float], int], None]
RESULT_FILE = "result.json"


def run_job(
    spec: JobSpec, *, metrics_callback: MetricsCallback | None = None
) -> SFTResult | GRPOResult:
    """Train as ``spec`` says; the result the recipe also wrote to ``result.json``."""
    if isinstance(spec, SFTJob):
        from mmr1.sft.recipe import run_sft

        return run_sft(
            spec.config,
            model_path=spec.model_path,
            dataset_path=spec.dataset_path,
            output_dir=spec.output_dir,
            metrics_callback=metrics_callback,
            resume=spec.resume,
        )
    return _run_grpo(spec, metrics_callback)


def _run_grpo(spec: GRPOJob, metrics_callback: MetricsCallback | None) -> GRPOResult:
    from mmr1.rl.grpo import run_grpo
    from mmr1.rl.snapshot import CatalogHooks

    hooks = None
    if spec.catalog is not None:
        hooks = CatalogHooks(
            catalog_path=spec.catalog.catalog_path,
            checkpoints_root=spec.catalog.checkpoints_root,
            name=spec.catalog.name,
            dataset_ref=spec.catalog.dataset_ref,
            init_ref=spec.catalog.init_ref,
            mlflow_run_id=spec.tracking.run_id if spec.tracking else None,
            prefect_flow_run_id=spec.catalog.prefect_flow_run_id,
            sampling_mode=spec.config.sampling_mode,
        )
    return run_grpo(
        spec.config,
        model_path=spec.model_path,
        dataset_path=spec.dataset_path,
        output_dir=spec.output_dir,
        vps_table=spec.vps_table,
        vps_lookup=hooks.latest_vps_table if hooks and spec.catalog.dataset_ref else None,
        metrics_callback=metrics_callback,
        checkpoint_callback=hooks.register if hooks and spec.catalog.name else None,
        resume=spec.resume,
    )


def read_result(spec: JobSpec) -> SFTResult | GRPOResult:
    """The result a finished job wrote to ``output_dir/result.json``."""
    data = json.loads((Path(spec.output_dir) / RESULT_FILE).read_text())
    model = SFTResult if isinstance(spec, SFTJob) else GRPOResult
    return model.model_validate(data)


logger = logging.getLogger("mmr1.jobs")


def read_spec(path: Path) -> JobSpec:
    """The job spec in ``path``; ``ValueError`` naming the file when it does not validate."""
    try:
        return TypeAdapter(JobSpec).validate_json(Path(path).read_text())
    except (OSError, ValidationError) as exc:
        raise ValueError(f"{path}: not a valid job spec: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m mmr1.jobs SPEC.json", file=sys.stderr)
        return 2
    rank = setup_job_logging()
    try:
        spec = read_spec(Path(args[0]))
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    tracking = spec.tracking
    problem = job_tracking_problem(tracking.run_id, tracking.tracking_uri) if tracking else None
    if problem:
        logger.error("%s", problem)
        return 2
    callback = None
    if tracking is not None and rank == 0:
        callback = mlflow_logger(tracking.run_id, tracking.tracking_uri)

    try:
        result = run_job(spec, metrics_callback=callback)
    except Exception:
        logger.exception("%s job failed", spec.kind)
        return 1
    if rank == 0:
        logger.info("%s done: %d steps; result in %s", spec.kind, result.steps, spec.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
