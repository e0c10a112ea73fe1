"""The ``mmr1`` argument parser: one sub-command per flow or inspection, each bound to its
function in :mod:`cli.commands`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.commands import (
    cmd_benchmark_register,
    cmd_catalog_lineage,
    cmd_catalog_list,
    cmd_catalog_show,
    cmd_curate,
    cmd_demo,
    cmd_eval,
    cmd_eval_compare,
    cmd_grpo,
    cmd_home,
    cmd_model_register,
    cmd_pipeline,
    cmd_plan,
    cmd_serve,
    cmd_sft,
    cmd_vps_estimate,
    cmd_vps_show,
)

DESCRIPTION = (
    "mmr1-pipeline: curate multimodal QA data, cold-start SFT, estimate VPS, train GRPO "
    "with Variance-Aware Sampling, evaluate; every artifact in the home's catalog"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmr1", description=DESCRIPTION)
    parser.add_argument("--home", type=Path, help="pipeline home (sets MMR1_HOME; default ~/.mmr1)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_flow_commands(sub)
    _add_eval_commands(sub)
    _add_model_commands(sub)
    _add_catalog_commands(sub)
    return parser


def _add_overrides(command: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable): override one field of the command's config."""
    command.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )


def _add_flow_commands(sub: Any) -> None:
    """The commands that run a flow: demo, pipeline, curate, sft, grpo."""

    demo = sub.add_parser(
        "demo", help="run mmr1-pipeline with the demo preset (tiny offline model, CPU)"
    )
    demo.add_argument("--config", default="demo", help="YAML file or preset name (default: demo)")
    _add_overrides(demo)
    demo.set_defaults(func=cmd_demo)

    pipeline = sub.add_parser(
        "pipeline", help="run the mmr1-pipeline flow (curate, SFT, VPS, GRPO, eval) from a config"
    )
    pipeline.add_argument("--config", help="YAML file or preset name (default: built-ins)")
    _add_overrides(pipeline)
    pipeline.set_defaults(func=cmd_pipeline)

    curate = sub.add_parser("curate", help="curate an RL pool or long-CoT SFT data")
    curate.add_argument("target", choices=["rl", "sft"])
    curate.add_argument("--config", help="YAML file or preset name (default: built-in defaults)")
    _add_overrides(curate)
    curate.set_defaults(func=cmd_curate)

    sft = sub.add_parser("sft", help="cold-start SFT on a curated long-CoT dataset")
    sft.add_argument("--config", help="YAML file or preset name (sft-demo, sft-paper-3b, ...)")
    _add_overrides(sft)
    sft.set_defaults(func=cmd_sft)

    grpo = sub.add_parser("grpo", help="GRPO with Variance-Aware Sampling from an SFT model")
    grpo.add_argument("--config", help="YAML file or preset (grpo-demo, grpo-paper-3b, ...)")
    _add_overrides(grpo)
    grpo.set_defaults(func=cmd_grpo)


def _add_eval_commands(sub: Any) -> None:
    """eval (run, compare) and vps (estimate, show)."""
    evaluation = sub.add_parser("eval", help="evaluate checkpoints on benchmarks; leaderboards")
    evaluation.add_argument("--config", help="YAML file or preset name (eval-demo, eval-paper)")
    _add_overrides(evaluation)
    evaluation.set_defaults(func=cmd_eval)
    esub = evaluation.add_subparsers(dest="eval_command")
    compare = esub.add_parser(
        "compare",
        help="leaderboard of checkpoints from the catalog, with 95%% intervals and paired tests",
    )
    compare.add_argument("checkpoints", nargs="*", help="NAME[@VERSION] (none: all evaluated)")
    compare.add_argument("--no-reference", action="store_true", help="omit the paper's rows")
    compare.add_argument(
        "--baseline",
        metavar="REF",
        help="checkpoint the others are paired with (exact McNemar on greedy answers, paired "
        "t-test on per-item sampled accuracy); default: the first checkpoint",
    )
    compare.add_argument(
        "--json",
        action="store_true",
        help="print one row per checkpoint and benchmark: accuracy, accuracy_ci95, "
        "sampled_accuracy, sampled_k, p_value, sampled_p_value, ...",
    )
    compare.set_defaults(func=cmd_eval_compare)

    vps = sub.add_parser("vps", help="Variance Promotion Scores: estimate a table, show one")
    vsub = vps.add_subparsers(dest="vps_command", required=True)
    estimate = vsub.add_parser("estimate", help="roll out a checkpoint on an RL pool, score")
    estimate.add_argument("--config", help="YAML file or preset name (vps-demo, vps-paper)")
    _add_overrides(estimate)
    estimate.set_defaults(func=cmd_vps_estimate)
    vshow = vsub.add_parser("show", help="summary and histograms of a dataset's latest VPS table")
    vshow.add_argument("ref", help="DATASET[@VERSION], or vps:TABLE[@VERSION]")
    vshow.add_argument("--bins", type=int, default=10)
    vshow.add_argument("--json", action="store_true")
    vshow.set_defaults(func=cmd_vps_show)


def _add_model_commands(sub: Any) -> None:
    """serve, model register, plan, benchmark register."""
    serve = sub.add_parser(
        "serve", help="local Prefect server + worker + MLflow server, deployments registered"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--prefect-port", type=int, default=4200, help="0: a free port")
    serve.add_argument("--mlflow-port", type=int, default=5000, help="0: a free port")
    serve.add_argument("--pool", default="mmr1-local", help="process work pool to serve")
    serve.add_argument("--no-deploy", action="store_true", help="do not register deployments")
    serve.add_argument("--no-mlflow", action="store_true", help="no MLflow server")
    serve.add_argument("--no-worker", action="store_true", help="no process worker")
    serve.add_argument(
        "--deployment", action="append", default=[], help="register only these (repeatable)"
    )
    serve.add_argument("--prefect-home", type=Path, help="PREFECT_HOME of the servers")
    serve.add_argument("--log-dir", type=Path, help="child logs (default MMR1_HOME/logs)")
    serve.set_defaults(func=cmd_serve)

    model = sub.add_parser("model", help="bring outside checkpoints into the catalog")
    msub = model.add_subparsers(dest="model_command", required=True)
    register = msub.add_parser(
        "register",
        help="register a hub id (ORG/NAME) or a local checkpoint directory as a base checkpoint",
    )
    register.add_argument("source", help="hub id (Qwen/Qwen2.5-VL-7B-Instruct) or directory")
    register.add_argument("--name", help="catalog name (default: the repo/directory name)")
    register.add_argument("--revision", help="hub branch, tag or commit (default: main)")
    register.add_argument(
        "--copy", action="store_true", help="copy the files under MMR1_HOME/checkpoints"
    )
    register.add_argument("--json", action="store_true")
    register.set_defaults(func=cmd_model_register)

    plan = sub.add_parser(
        "plan",
        help="estimate per-GPU memory by phase and tokens per step of a GRPO or SFT config",
    )
    plan.add_argument("--config", required=True, help="YAML file or preset (grpo-paper-7b, ...)")
    _add_overrides(plan)
    plan.add_argument(
        "--gpus", type=int, help="GPUs of the job, all machines (default: launch.num_processes)"
    )
    plan.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU (default 80)")
    plan.add_argument(
        "--model",
        help="size the model from this instead: qwen2.5-vl-3b, qwen2.5-vl-7b, a checkpoint "
        "directory or a cached hub id (default: the config's model)",
    )
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=cmd_plan)

    bench = sub.add_parser("benchmark", help="evaluation benchmarks in the catalog")
    bsub = bench.add_subparsers(dest="benchmark_command", required=True)
    bregister = bsub.add_parser(
        "register",
        help="register the benchmarks of an eval config as catalog datasets (kind benchmark), "
        "so curation decontaminates against them",
    )
    bregister.add_argument("--config", help="eval YAML file or preset (eval-paper-7b, ...)")
    _add_overrides(bregister)
    bregister.set_defaults(func=cmd_benchmark_register)


def _add_catalog_commands(sub: Any) -> None:
    """home and catalog (list, show, lineage)."""
    home = sub.add_parser("home", help="print where state is kept")
    home.add_argument("--json", action="store_true")
    home.set_defaults(func=cmd_home)

    catalog = sub.add_parser("catalog", help="inspect the DuckDB catalog")
    csub = catalog.add_subparsers(dest="catalog_command", required=True)
    lst = csub.add_parser("list", help="list datasets, checkpoints and VPS tables")
    lst.add_argument("--json", action="store_true")
    lst.add_argument("--type", choices=["dataset", "checkpoint", "vps"])
    lst.add_argument("--kind", help="dataset kind (rl, sft, benchmark, ...)")
    lst.add_argument("--name")
    lst.set_defaults(func=cmd_catalog_list)
    show = csub.add_parser("show", help="show one entry: NAME[@VERSION], kind: prefix optional")
    show.add_argument("ref")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_catalog_show)
    lineage = csub.add_parser("lineage", help="what an entry was derived from, recursively")
    lineage.add_argument("ref")
    lineage.add_argument("--json", action="store_true")
    lineage.set_defaults(func=cmd_catalog_lineage)
