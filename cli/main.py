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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cli import run_log
from mmr1.catalog import Catalog, CatalogError
from mmr1.catalog import report as catalog_report
from mmr1.models.hub import ModelSourceError
from schemas.home import HomeConfig
from schemas.presets import ConfigError, load_config

# Defaults for an embedded (serverless) Prefect run; explicit settings win. Prefect's own
# start-up timeout (20 s) fails on a loaded 2-core machine; 300 s survived load 15+.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
}
_STARTUP_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"


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


def cmd_plan(args: argparse.Namespace) -> None:
    """Per-GPU memory and tokens per step of a GRPO or SFT config (mmr1.plan); no Prefect."""
    from mmr1.plan_inputs import PlanError, make_plan, render

    home = HomeConfig()
    try:
        plan = make_plan(
            args.config,
            args.set,
            gpus=args.gpus,
            gpu_memory_gib=args.gpu_memory,
            model=args.model,
            catalog_path=home.catalog if home.catalog.is_file() else None,
        )
    except PlanError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        _print_json(plan.as_dict())
    else:
        print(render(plan))
    if not plan.fits:
        raise CliError(
            f"{args.config} does not fit {plan.gpus} GPUs x {args.gpu_memory:g} GiB "
            f"({len(plan.problems)} problem(s) above); change {', '.join(plan.fields)}"
        )


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


def _preflight(config: BaseModel, skip: Callable[[str], bool] = lambda path: False) -> None:
    """Refuse (exit 2, one line) a config whose refs, checkpoints or files do not exist.

    Runs before Prefect is imported, so nothing starts for a typo.
    """
    from mmr1.preflight import check_inputs

    problems = check_inputs(config, Catalog(HomeConfig().ensure().catalog), skip=skip)
    if problems:
        raise CliError("; ".join(problems))


def _start_prefect(module: str) -> Any:
    """Import a flows module with the embedded-run defaults and quiet console tracebacks."""
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    loaded = importlib.import_module(module)
    run_log.quiet_console_tracebacks()
    return loaded


def _pipeline_fills(path: str) -> bool:
    """Fields whose refs the pipeline itself makes (so they need not exist beforehand).

    The stages' input refs are unset in a pipeline config (``PipelineConfig``
    refuses them); the evaluation's baseline and benchmark sources may name
    what the pipeline registers (``tiny-sft``, ``synthetic-bench``).
    """
    return path.startswith("evaluate.")


def _run_pipeline(config_ref: str | None, overrides: Sequence[str], label: str) -> None:
    from schemas.pipeline import SOURCES, STAGE_IO, PipelineConfig

    config = load_config(PipelineConfig, config_ref, overrides)
    _preflight(config, skip=_pipeline_fills)
    for stage, ref in config.pin.items():
        try:
            Catalog(HomeConfig().catalog).resolve(ref)
        except (CatalogError, ValueError) as exc:
            raise CliError(f"pin.{stage}: {exc}") from None
    mmr1_pipeline = _start_prefect("flows.pipeline").mmr1_pipeline

    home = HomeConfig()
    print(f"mmr1 {label}: home {home.root}")
    outcome = mmr1_pipeline(config)
    print("\nwrote:")
    for key in (*SOURCES, *(io.writes for io in STAGE_IO.values())):
        if outcome.get(key):
            print(f"  {key:16s} {outcome[key]}")
    evaluation = outcome.get("results") or {}
    if evaluation:
        print("\naccuracy:")
        for checkpoint, scores in evaluation.items():
            line = "  ".join(f"{name} {value:.3f}" for name, value in scores.items())
            print(f"  {checkpoint:24s} {line}")
    compare = " ".join(ref.split(":", 1)[-1] for ref in evaluation) or "CHECKPOINT..."
    if outcome.get("baseline"):
        compare += f" --baseline {outcome['baseline']}"
    print(
        f"\ninspect: mmr1 catalog list | mmr1 eval compare {compare}\n"
        f"         mlflow ui --backend-store-uri {home.tracking_uri}"
    )


def cmd_demo(args: argparse.Namespace) -> None:
    _run_pipeline(args.config, args.set, "demo")


def cmd_pipeline(args: argparse.Namespace) -> None:
    _run_pipeline(args.config, args.set, "pipeline")


def _run_flow(
    model: type[BaseModel], module: str, flow_name: str, args: argparse.Namespace
) -> str | None:
    """Validate ``--config``/``--set`` into ``model``, check inputs, run ``module:flow_name``.

    A config whose ``launch.machine_rank`` is > 0 runs no flow: this machine joins
    the job machine 0's flow launches (returns None).
    """
    config = load_config(model, args.config, args.set)
    if _join_machine_zero(config):
        return None
    _preflight(config)
    flow_fn = getattr(_start_prefect(module), flow_name)
    return flow_fn(config)


def _join_machine_zero(config: BaseModel) -> bool:
    """Run this machine's part of machine 0's job (launch.machine_rank > 0); False otherwise."""
    from schemas.launch import LaunchConfig

    launch = getattr(config, "launch", None)
    if not isinstance(launch, LaunchConfig) or launch.machine_rank == 0:
        return False
    from mmr1.trainer.nodes import follow, job_dir

    try:
        directory = job_dir(HomeConfig().runs, launch)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(
        f"mmr1: machine {launch.machine_rank} of {launch.num_machines}: waiting for machine 0's "
        f"job in {directory} (run the same command with machine_rank 0 there)",
        flush=True,
    )
    status = follow(directory, launch.machine_rank, jobs=1)
    if status:
        raise CliError(f"machine {launch.machine_rank}'s part of the job exited with {status}")
    print(f"mmr1: machine {launch.machine_rank}: the job finished")
    return True


def cmd_curate(args: argparse.Namespace) -> None:
    from schemas.curation import CurateRLConfig, CurateSFTConfig

    model = CurateRLConfig if args.target == "rl" else CurateSFTConfig
    ref = _run_flow(model, "flows.curate", f"curate_{args.target}", args)
    print(f"\nwrote {ref}\ninspect: mmr1 catalog show {ref} | mmr1 catalog lineage {ref}")


def cmd_sft(args: argparse.Namespace) -> None:
    from schemas.sft_flow import SFTStageConfig

    ref = _run_flow(SFTStageConfig, "flows.sft", "sft", args)
    if ref:
        print(f"\nwrote {ref}\ninspect: mmr1 catalog lineage {ref}")


def cmd_grpo(args: argparse.Namespace) -> None:
    from schemas.grpo import GRPOStageConfig

    ref = _run_flow(GRPOStageConfig, "flows.grpo", "grpo_vas", args)
    if ref:
        print(f"\nwrote {ref}\ninspect: mmr1 catalog lineage {ref}")


def cmd_eval(args: argparse.Namespace) -> None:
    from schemas.eval import EvaluateConfig

    config = load_config(EvaluateConfig, args.config, args.set)
    _preflight(config)
    evaluate = _start_prefect("flows.evaluate").evaluate
    ref = evaluate(config)  # the flow prints the leaderboard
    results = Catalog(HomeConfig().catalog).get_dataset(ref).metadata["results"]
    print(
        f"\nwrote {ref}\ninspect: mmr1 eval compare {' '.join(results)} | mmr1 catalog show {ref}"
    )


def cmd_eval_compare(args: argparse.Namespace) -> None:
    from mmr1.eval.leaderboard import compare, comparison

    catalog = _catalog(args)
    if args.json:
        rows, _ = comparison(catalog, args.checkpoints, args.baseline)
        _print_json(rows)
        return
    print(
        compare(
            catalog,
            args.checkpoints,
            include_reference=not args.no_reference,
            baseline=args.baseline,
        )
    )


def cmd_model_register(args: argparse.Namespace) -> None:
    from mmr1.models.registry import register_model

    home = HomeConfig().ensure()
    entry = register_model(
        Catalog(home.catalog),
        args.source,
        name=args.name,
        revision=args.revision,
        copy=args.copy,
        checkpoints_dir=home.checkpoints,
    )
    if args.json:
        _print_json(entry.model_dump(mode="json"))
        return
    print(f"checkpoint:{entry.ref}  ({entry.config.get('source')}: {entry.uri})")


def cmd_benchmark_register(args: argparse.Namespace) -> None:
    from mmr1.eval.catalog_benchmarks import register_benchmark
    from schemas.eval import EvaluateConfig

    config = load_config(EvaluateConfig, args.config, args.set)
    _preflight(config, skip=lambda path: not path.startswith("benchmarks"))
    home = HomeConfig().ensure()
    catalog = Catalog(home.catalog)
    for spec in config.benchmarks:
        entry = register_benchmark(catalog, home.datasets, spec)
        invalid = entry.metadata.get("invalid_items", 0)
        note = f", {invalid} unreadable rows left out" if invalid else ""
        print(f"dataset:{entry.ref}  {entry.row_count} items of {spec.source}{note}")
    print("curation now decontaminates against them (every dataset of kind 'benchmark')")


def cmd_serve(args: argparse.Namespace) -> None:
    from ops import ServiceError, serve

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
    dataset = Catalog(HomeConfig().catalog).get_vps_table(ref).dataset_ref
    print(f"\nwrote {ref}\ninspect: mmr1 vps show {dataset}")


def cmd_vps_show(args: argparse.Namespace) -> None:
    from mmr1.vas.estimate import read_vps_table, summarise, text_histogram

    catalog = _catalog(args)
    if args.ref.startswith("vps:"):
        entry = catalog.get_vps_table(args.ref)
    else:
        found = catalog.latest_vps_table(args.ref)
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
    _add_flow_commands(sub)
    _add_eval_commands(sub)
    _add_model_commands(sub)
    _add_catalog_commands(sub)
    return parser


def _add_flow_commands(sub: Any) -> None:
    """The commands that run a flow: demo, pipeline, curate, sft, grpo."""

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


def _add_eval_commands(sub: Any) -> None:
    """eval (run, compare) and vps (estimate, show)."""
    evaluation = sub.add_parser("eval", help="evaluate checkpoints on benchmarks; leaderboards")
    evaluation.add_argument("--config", help="YAML file or preset name (eval-demo, eval-paper)")
    evaluation.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
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
    estimate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
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
    plan.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
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
    bregister.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a field"
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit 0; 2 for a bad command, config or input (one line on stderr,
    before anything starts); 1 for a failure while running (one line naming the log file
    that holds the full traceback); 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    if args.home is not None:
        os.environ["MMR1_HOME"] = str(args.home.expanduser().resolve())
    log = run_log.RunLog.for_command(args.command)
    try:
        args.func(args)
    except (CliError, CatalogError, ConfigError, ModelSourceError) as exc:
        print(f"mmr1: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmr1: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _is_input_error(args, exc):
            print(f"mmr1: error: {exc}", file=sys.stderr)  # e.g. a malformed ref
            return 2
        where = log.write_traceback(exc)
        print(f"mmr1: error: {_describe(exc)} (full traceback: {where})", file=sys.stderr)
        return 1
    finally:
        log.close()
    return 0


def _is_input_error(args: argparse.Namespace, exc: Exception) -> bool:
    """A ValueError of an inspection command (not of a running flow) is bad input."""
    running = args.command in FLOW_COMMANDS and getattr(args, "eval_command", None) is None
    running = running or getattr(args, "vps_command", None) == "estimate"
    return isinstance(exc, ValueError) and not running


def _describe(exc: BaseException) -> str:
    """One line for a runtime failure; the embedded server's time-out gets advice."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if _STARTUP_TIMEOUT in str(exc):
        waited = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "?")
        return (
            f"the embedded Prefect API server did not answer within {waited} s (a busy "
            "machine?); raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or run against "
            "a started server (`mmr1 serve`, then PREFECT_API_URL=http://HOST:PORT/api)"
        )
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
