"""GRPO training job: ``accelerate launch -m mmr1.rl.grpo_main --config cfg.json ...``.

The entry point the ``grpo_vas`` flow launches in the trainer environment (no
Prefect needed). Metrics go to an existing MLflow run by id; with
``--catalog`` every saved checkpoint is snapshotted into the home and
registered as a new version of ``--register-name`` (what scheduled VPS
re-estimation follows), and ``vps_refresh='catalog'`` reads the newest VPS
table of ``--dataset-ref`` from that catalog.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mmr1.rl.snapshot import CatalogHooks
from mmr1.train.job import read_job_config, setup_job_logging
from mmr1.train.launch import job_tracking_problem
from mmr1.train.sft_main import mlflow_logger
from schemas.grpo import GRPOConfig

logger = logging.getLogger("mmr1.rl.grpo_main")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mmr1.rl.grpo_main", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="GRPOConfig (JSON or YAML).")
    parser.add_argument("--model", type=Path, required=True, help="Starting / reference model.")
    parser.add_argument("--dataset", type=Path, required=True, help="RL pool directory.")
    parser.add_argument("--output", type=Path, required=True, help="Run directory.")
    parser.add_argument("--vps-table", nargs=2, metavar=("REF", "PATH"), help="Initial scores.")
    parser.add_argument("--mlflow-run-id", default=None)
    parser.add_argument("--mlflow-tracking-uri", default=None)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--catalog", type=Path, help="DuckDB catalog for snapshots / VPS lookup.")
    parser.add_argument("--checkpoints-root", type=Path, help="Where snapshots are stored.")
    parser.add_argument("--register-name", help="Catalog name of the saved checkpoints.")
    parser.add_argument("--dataset-ref", help="Catalog ref of the RL pool (name@version).")
    parser.add_argument("--init-ref", help="Catalog ref of the starting model.")
    parser.add_argument("--prefect-flow-run-id", default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rank = setup_job_logging()
    try:
        config = read_job_config(args.config, GRPOConfig, "GRPO")
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
    hooks = None
    if args.catalog is not None:
        hooks = CatalogHooks(
            catalog_path=args.catalog,
            checkpoints_root=args.checkpoints_root,
            name=args.register_name,
            dataset_ref=args.dataset_ref,
            init_ref=args.init_ref,
            mlflow_run_id=args.mlflow_run_id,
            prefect_flow_run_id=args.prefect_flow_run_id,
            sampling_mode=config.sampling_mode,
        )

    from mmr1.rl.grpo import run_grpo

    try:
        result = run_grpo(
            config,
            model_path=args.model,
            dataset_path=args.dataset,
            output_dir=args.output,
            vps_table=(args.vps_table[0], Path(args.vps_table[1])) if args.vps_table else None,
            vps_lookup=hooks.latest_vps_table if hooks and args.dataset_ref else None,
            metrics_callback=callback,
            checkpoint_callback=hooks.register if hooks and hooks.name else None,
            resume=not args.no_resume,
        )
    except Exception:
        logger.exception("GRPO failed")
        return 1
    if rank == 0:
        logger.info(
            "GRPO done: %d steps; final weights in %s", result.steps, result.final_checkpoint
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
