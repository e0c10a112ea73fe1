"""What each ``mmr1`` command does: inspection commands use the library only (they work
in a trainer environment without Prefect); flow commands import ``flows`` lazily.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cli import run_log
from mmr1.catalog import Catalog, CatalogError
from mmr1.catalog import report as catalog_report
from schemas.home import HomeConfig
from schemas.presets import load_config

# Defaults for an embedded (serverless) Prefect run; explicit settings win. Prefect's own
# start-up timeout (20 s) fails on a loaded 2-core machine; 300 s survived load 15+.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
}


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
