"""The ``mmr1`` command: thin, it calls flows or, for inspection, the library.

Inspection commands (``catalog ...``, ``home``) need only the library, so they
work in a trainer environment without Prefect; flow commands import ``flows``
lazily (``mmr1/`` itself never imports Prefect).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mmr1.catalog import Catalog, CatalogError
from mmr1.catalog import report as catalog_report
from schemas.home import HomeConfig
from schemas.presets import ConfigError, load_config

# Defaults for an embedded (serverless) Prefect run; explicit settings win.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


#: Commands that run a flow: their ValueErrors keep the traceback.
FLOW_COMMANDS = frozenset({"demo", "curate", "sft", "grpo", "eval", "pipeline"})


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def _catalog(args: argparse.Namespace) -> Catalog:
    home = HomeConfig()
    if not home.catalog.exists():
        raise CliError(
            f"no catalog at {home.catalog} (MMR1_HOME={home.root}); run `mmr1 demo` first "
            "or point MMR1_HOME / MMR1_CATALOG at an existing one"
        )
    return Catalog(home.catalog)


def cmd_catalog_list(args: argparse.Namespace) -> None:
    catalog = _catalog(args)
    kinds = [args.type] if args.type else ["dataset", "checkpoint", "vps"]
    entries: list[Any] = []
    if "dataset" in kinds:
        entries += catalog.list_datasets(name=args.name, kind=args.kind)
    if "checkpoint" in kinds:
        entries += catalog.list_checkpoints(name=args.name)
    if "vps" in kinds:
        entries += catalog.list_vps_tables(name=args.name)
    if args.json:
        _print_json(catalog_report.list_json(entries))
    elif entries:
        print(catalog_report.render_list(entries))
    else:
        print("(catalog is empty)")


def cmd_catalog_show(args: argparse.Namespace) -> None:
    catalog = _catalog(args)
    kind, entry = catalog.resolve(args.ref)
    summary = catalog.quarantine_summary(f"{entry.ref}") if kind == "dataset" else None
    if args.json:
        _print_json(catalog_report.show_json(entry, summary))
    else:
        print(catalog_report.render_show(entry, summary))


def cmd_catalog_lineage(args: argparse.Namespace) -> None:
    catalog = _catalog(args)
    kind, entry = catalog.resolve(args.ref)
    node = catalog.lineage(entry.ref, kind=kind)
    if args.json:
        _print_json(catalog_report.lineage_json(node))
    else:
        print(catalog_report.render_lineage(node))


def cmd_home(args: argparse.Namespace) -> None:
    home = HomeConfig()
    data = {
        "root": str(home.root),
        "catalog": str(home.catalog),
        "datasets": str(home.datasets),
        "checkpoints": str(home.checkpoints),
        "runs": str(home.runs),
        "mlflow_tracking_uri": home.tracking_uri,
        "mlflow_artifacts": str(home.artifacts),
        "prefect_home": os.environ.get("PREFECT_HOME", str(Path("~/.prefect").expanduser())),
    }
    if args.json:
        _print_json(data)
    else:
        width = max(len(k) for k in data)
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in data.items()))


def _run_pipeline(config_ref: str | None, overrides: Sequence[str], label: str) -> None:
    from schemas.pipeline import PipelineConfig

    config = load_config(PipelineConfig, config_ref, overrides)
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from flows.pipeline import mmr1_pipeline

    home = HomeConfig()
    print(f"mmr1 {label}: home {home.root}")
    outcome = mmr1_pipeline(config)
    print("\nwrote:")
    for key in ("base_model", "benchmark", "rl_pool", "sft", "sft_model", "vps", "rl_model"):
        if outcome.get(key):
            print(f"  {key:12s} {outcome[key]}")
    evaluation = outcome.get("evaluation") or {}
    if evaluation:
        print("\naccuracy:")
        for checkpoint, scores in evaluation.items():
            line = "  ".join(f"{name} {value:.3f}" for name, value in scores.items())
            print(f"  {checkpoint:24s} {line}")
    compare = " ".join(ref.split(":", 1)[-1] for ref in evaluation) or "CHECKPOINT..."
    print(
        f"\ninspect: mmr1 catalog list | mmr1 eval compare {compare}\n"
        f"         mlflow ui --backend-store-uri {home.tracking_uri}"
    )


def cmd_demo(args: argparse.Namespace) -> None:
    _run_pipeline(args.config, args.set, "demo")


def cmd_pipeline(args: argparse.Namespace) -> None:
    _run_pipeline(args.config, args.set, "pipeline")


def _run_flow(model: type[BaseModel], module: str, flow_name: str, args: argparse.Namespace) -> str:
    """Validate ``--config``/``--set`` into ``model`` and run the flow ``module:flow_name``."""
    config = load_config(model, args.config, args.set)
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    flow_fn = getattr(importlib.import_module(module), flow_name)
    return flow_fn(config)


def cmd_curate(args: argparse.Namespace) -> None:
    from schemas.curation import CurateRLConfig, CurateSFTConfig

    model = CurateRLConfig if args.target == "rl" else CurateSFTConfig
    ref = _run_flow(model, "flows.curate", f"curate_{args.target}", args)
    print(f"\nwrote {ref}\ninspect: mmr1 catalog show {ref} | mmr1 catalog lineage {ref}")


def cmd_sft(args: argparse.Namespace) -> None:
    from schemas.sft_flow import SFTStageConfig

    ref = _run_flow(SFTStageConfig, "flows.sft", "sft", args)
    print(f"\nwrote {ref}\ninspect: mmr1 catalog lineage {ref}")


def cmd_grpo(args: argparse.Namespace) -> None:
    from schemas.grpo import GRPOStageConfig

    ref = _run_flow(GRPOStageConfig, "flows.grpo", "grpo_vas", args)
    print(f"\nwrote {ref}\ninspect: mmr1 catalog lineage {ref}")


def cmd_eval(args: argparse.Namespace) -> None:
    from schemas.eval import EvaluateConfig

    config = load_config(EvaluateConfig, args.config, args.set)
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from flows.evaluate import evaluate

    outcome = evaluate(config)  # the flow prints the leaderboard
    refs = " ".join(outcome["results"])
    print(f"\ninspect: mmr1 eval compare {refs}")


def cmd_eval_compare(args: argparse.Namespace) -> None:
    from mmr1.eval.leaderboard import compare

    print(compare(_catalog(args), args.checkpoints, include_reference=not args.no_reference))


def cmd_serve(args: argparse.Namespace) -> None:
    from mmr1.ops import ServiceError, serve

    try:
        serve(
            host=args.host,
            prefect_port=args.prefect_port,
            mlflow_port=args.mlflow_port,
            pool=args.pool,
            deploy=not args.no_deploy,
            with_mlflow=not args.no_mlflow,
            with_worker=not args.no_worker,
            deployments=args.deployment or None,
            prefect_home=args.prefect_home,
            log_dir=args.log_dir,
        )
    except ServiceError as exc:
        raise CliError(str(exc)) from None


def cmd_vps_estimate(args: argparse.Namespace) -> None:
    from schemas.vas import VPSEstimateConfig

    ref = _run_flow(VPSEstimateConfig, "flows.vps", "estimate_vps", args)
    dataset = Catalog(HomeConfig().catalog).get_vps_table(ref.removeprefix("vps:")).dataset_ref
    print(f"\nwrote {ref}\ninspect: mmr1 vps show {dataset}")


def cmd_vps_show(args: argparse.Namespace) -> None:
    from mmr1.vas.estimate import read_vps_table, summarise, text_histogram

    catalog = _catalog(args)
    if args.ref.startswith("vps:"):
        entry = catalog.get_vps_table(args.ref.removeprefix("vps:"))
    else:
        found = catalog.latest_vps_table(args.ref.removeprefix("dataset:"))
        if found is None:
            raise CliError(f"no VPS table for dataset {args.ref!r}; run `mmr1 vps estimate` first")
        entry = found
    table = read_vps_table(Path(entry.uri))
    stats = summarise(table)
    if args.json:
        _print_json({"table": entry.ref, **entry.model_dump(mode="json"), "summary": stats})
        return
    print(
        f"VPS table {entry.ref}: checkpoint {entry.checkpoint_ref} on dataset "
        f"{entry.dataset_ref}, {table.height} prompts, estimated {entry.created_at:%Y-%m-%d %H:%M}"
    )
    width = max(len(k) for k in stats)
    print("\n".join(f"  {k.ljust(width)}  {v:.4g}" for k, v in stats.items()))
    for column in ("pass_rate", "vps"):
        print(f"\n{column}:\n{text_histogram(table[column].to_list(), bins=args.bins)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmr1", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="pipeline home (sets MMR1_HOME; default ~/.mmr1)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="run mmr1-pipeline with the demo preset (tiny offline model, CPU)"
    )
    demo.add_argument("--config", default="demo", help="YAML file or preset name (default: demo)")
    demo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
    demo.set_defaults(func=cmd_demo)

    pipeline = sub.add_parser(
        "pipeline", help="run the mmr1-pipeline flow (curate, SFT, VPS, GRPO, eval) from a config"
    )
    pipeline.add_argument("--config", help="YAML file or preset name (default: built-ins)")
    pipeline.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
    pipeline.set_defaults(func=cmd_pipeline)

    curate = sub.add_parser("curate", help="curate an RL pool or long-CoT SFT data")
    curate.add_argument("target", choices=["rl", "sft"])
    curate.add_argument("--config", help="YAML file or preset name (default: built-in defaults)")
    curate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
    curate.set_defaults(func=cmd_curate)

    sft = sub.add_parser("sft", help="cold-start SFT on a curated long-CoT dataset")
    sft.add_argument("--config", help="YAML file or preset name (sft-demo, sft-paper-3b, ...)")
    sft.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
    sft.set_defaults(func=cmd_sft)

    grpo = sub.add_parser("grpo", help="GRPO with Variance-Aware Sampling from an SFT model")
    grpo.add_argument("--config", help="YAML file or preset (grpo-demo, grpo-paper-3b, ...)")
    grpo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
    grpo.set_defaults(func=cmd_grpo)

    evaluation = sub.add_parser("eval", help="evaluate checkpoints on benchmarks; leaderboards")
    evaluation.add_argument("--config", help="YAML file or preset name (eval-demo, eval-paper)")
    evaluation.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
    evaluation.set_defaults(func=cmd_eval)
    esub = evaluation.add_subparsers(dest="eval_command")
    compare = esub.add_parser("compare", help="leaderboard of checkpoints from the catalog")
    compare.add_argument("checkpoints", nargs="*", help="NAME[@VERSION] (none: all evaluated)")
    compare.add_argument("--no-reference", action="store_true", help="omit the paper's rows")
    compare.set_defaults(func=cmd_eval_compare)

    vps = sub.add_parser("vps", help="Variance Promotion Scores: estimate a table, show one")
    vsub = vps.add_subparsers(dest="vps_command", required=True)
    estimate = vsub.add_parser("estimate", help="roll out a checkpoint on an RL pool, score")
    estimate.add_argument("--config", help="YAML file or preset name (vps-demo, vps-paper)")
    estimate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
    estimate.set_defaults(func=cmd_vps_estimate)
    vshow = vsub.add_parser("show", help="summary and histograms of a dataset's latest VPS table")
    vshow.add_argument("ref", help="DATASET[@VERSION], or vps:TABLE[@VERSION]")
    vshow.add_argument("--bins", type=int, default=10)
    vshow.add_argument("--json", action="store_true")
    vshow.set_defaults(func=cmd_vps_show)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.home is not None:
        os.environ["MMR1_HOME"] = str(args.home.expanduser().resolve())
    try:
        args.func(args)
    except (CliError, CatalogError, ConfigError) as exc:
        print(f"mmr1: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        flow_command = args.command in FLOW_COMMANDS and getattr(args, "eval_command", None) is None
        if flow_command or getattr(args, "vps_command", None) == "estimate":
            raise  # inside a flow: keep the traceback
        print(f"mmr1: error: {exc}", file=sys.stderr)  # e.g. a malformed ref
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
