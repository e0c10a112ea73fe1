"""Training jobs from a task: the same job spec in this process or as an ``accelerate launch``.

:func:`train` is the one branch every training task has: ``launch.kind``
``inprocess`` runs :func:`mmr1.jobs.run_job` here (metrics to the flow's
MLflow run, progress into the flow run's name and log); ``accelerate`` writes
the spec to ``output_dir/job.json`` and launches ``python -m mmr1.jobs``
in the trainer environment (other machines join through ``mmr1.trainer.nodes``),
then reads the result the job wrote.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from prefect.logging import get_run_logger

from mmr1.jobs import read_result, run_job
from mmr1.tracking import TrackedRun
from mmr1.trainer.launch import launch_command
from mmr1.trainer.nodes import leading
from mmr1.trainer.tracking import check_tracking_store
from schemas.grpo import GRPOResult
from schemas.jobs import JobSpec, TrackingSpec
from schemas.launch import LaunchConfig
from schemas.sft import SFTResult
from tasks.context import home
from tasks.observe import Progress

SPEC_FILE = "job.json"
LOG_FILE = "train.log"


def tracking_spec(run: TrackedRun) -> TrackingSpec:
    """Where a job logs: the flow's MLflow run, in the home's tracking store."""
    return TrackingSpec(run_id=run.run_id, tracking_uri=home().tracking_uri)


def train(
    spec: JobSpec, launch: LaunchConfig, run: TrackedRun, *, total_steps: int = 0
) -> SFTResult | GRPOResult:
    """Run ``spec`` as ``launch`` says; the job's result.

    In process, metrics go to ``run`` and progress (``step k/N``, ``total_steps``
    or the horizon the recipe reports first) to the flow run.
    """
    if launch.kind == "inprocess":
        progress = Progress(total_steps)

        def log_step(metrics: dict[str, float], step: int) -> None:
            run.log_metrics(metrics, step=step)
            if "total_steps" in metrics:
                progress.total = int(metrics["total_steps"])
            elif progress.total:
                progress(step)

        return run_job(spec, metrics_callback=log_step)
    check_tracking_store(spec.tracking.tracking_uri if spec.tracking else None, launch.python)
    spec_path = Path(spec.output_dir) / SPEC_FILE
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(spec.model_dump_json(indent=2))
    command = launch_command(spec_path, launch)
    with leading(home().runs, command, launch):  # other machines join (mmr1.trainer.nodes)
        run_process(command, Path(spec.output_dir) / LOG_FILE, launch.timeout_s, spec.kind)
    return read_result(spec)


def run_process(command: Sequence[str], log_path: Path, timeout_s: float | None, what: str) -> None:
    """Run ``command``, appending its output to ``log_path``; raise with the log tail on failure."""
    get_run_logger().info("launching: %s", " ".join(command))
    with log_path.open("ab") as log:
        completed = subprocess.run(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            timeout=timeout_s,
            check=False,
        )
    if completed.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"{what} job failed with exit code {completed.returncode}; log {log_path}:\n{tail}"
        )
