"""SFT job entry point: ``python -m mmr1.train.sft_main`` (usually under ``accelerate launch``).

    python -m mmr1.train.sft_main --config cfg.json --model PATH --dataset PATH --output DIR \\
        [--mlflow-run-id ID --mlflow-tracking-uri URI] [--no-resume]

Runs :func:`mmr1.train.sft.run_sft` (which writes ``DIR/result.json``). With a
run id, the main process logs every metric to that MLflow run through
``MlflowClient.log_batch`` only, so ``mlflow-skinny`` suffices in the trainer
environment with an HTTP tracking server. Exit status: 0 on success, 2 for a bad
config or a tracking store this environment cannot write (``sqlite:`` without
SQLAlchemy, see :func:`mmr1.train.launch.job_tracking_problem`), 1 for other errors.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mmr1.train.job import read_job_config, setup_job_logging
from mmr1.train.launch import job_tracking_problem
from schemas.sft import SFTConfig

logger = logging.getLogger("mmr1.train.sft_main")

#: MLflow accepts at most 1000 metrics per log_batch call.
_METRIC_BATCH = 1000


def read_config(path: Path) -> SFTConfig:
    """An ``SFTConfig`` from a JSON or YAML file (JSON is YAML); errors name the file."""
    return read_job_config(path, SFTConfig, "SFT")


def mlflow_logger(run_id: str, tracking_uri: str | None) -> Callable[[dict[str, float], int], None]:
    """A metrics callback that logs finite values to an existing MLflow run by id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)

    def log(metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [
            Metric(str(key), float(value), now, int(step))
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
        for start in range(0, len(items), _METRIC_BATCH):
            client.log_batch(run_id, metrics=items[start : start + _METRIC_BATCH])

    return log


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mmr1.train.sft_main", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="SFTConfig as JSON or YAML.")
    parser.add_argument("--model", type=Path, required=True, help="Checkpoint to fine-tune.")
    parser.add_argument("--dataset", type=Path, required=True, help="SFT dataset directory.")
    parser.add_argument("--output", type=Path, required=True, help="Run directory.")
    parser.add_argument("--mlflow-run-id", default=None, help="Log metrics to this run.")
    parser.add_argument("--mlflow-tracking-uri", default=None, help="MLflow tracking URI.")
    parser.add_argument("--no-resume", action="store_true", help="Start over instead of resuming.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rank = setup_job_logging()
    try:
        config = read_config(args.config)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    tracking_problem = job_tracking_problem(args.mlflow_run_id, args.mlflow_tracking_uri)
    if tracking_problem:
        logger.error("%s", tracking_problem)
        return 2
    callback = None
    if args.mlflow_run_id and rank == 0:
        callback = mlflow_logger(args.mlflow_run_id, args.mlflow_tracking_uri)

    from mmr1.train.sft import run_sft

    try:
        result = run_sft(
            config,
            model_path=args.model,
            dataset_path=args.dataset,
            output_dir=args.output,
            metrics_callback=callback,
            resume=not args.no_resume,
        )
    except Exception:
        logger.exception("SFT failed")
        return 1
    if rank == 0:
        logger.info(
            "SFT done: %d steps; best %s at %s; result in %s",
            result.steps,
            result.best_metric,
            result.best_checkpoint,
            args.output / "result.json",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
