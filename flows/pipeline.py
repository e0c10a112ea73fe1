"""The ``mmr1-pipeline`` flow: curate -> SFT -> VPS -> GRPO with VAS (+ uniform) -> evaluate.

Every arrow is a catalog ref; every stage is a subflow with its own MLflow run
nested under the pipeline's. A stage can be skipped, pinned to an existing
catalog entry, or reused when an earlier run of it finished with the same
inputs, config and code (see ``tasks/pipeline.py``); a rerun after a failure
therefore resumes at the failed stage. ``mmr1 demo`` is this flow with the
``demo`` preset.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.curate import curate_rl, curate_sft
from flows.evaluate import evaluate
from flows.grpo import grpo_vas
from flows.sft import sft
from flows.vps import estimate_vps
from schemas.curation import CurateRLConfig
from schemas.grpo import GRPOStageConfig
from schemas.pipeline import PipelineConfig
from tasks.context import flow_tracking
from tasks.datasets import synthesize_benchmark
from tasks.models import build_base_model, checkpoint_input
from tasks.observe import run_name
from tasks.parameters import stage_config
from tasks.pipeline import StageRunner, recorded_evaluation


def _rated_by(config: CurateRLConfig, model_ref: str) -> CurateRLConfig:
    """Fill in the difficulty model when the config leaves it to the base model."""
    difficulty = config.difficulty
    if not difficulty.enabled or difficulty.model or difficulty.backend:
        return config
    return config.model_copy(
        update={"difficulty": difficulty.model_copy(update={"model": model_ref})}
    )


def _require(ref: str | None, stage: str, needed_by: str) -> str:
    if ref is None:
        raise ValueError(
            f"stage {needed_by!r} needs the output of {stage!r}, which is skipped: pin it "
            f"instead (pin: {{{stage}: REF}}) or skip {needed_by!r} too"
        )
    return ref


def _uniform_ablation(config: GRPOStageConfig, name: str) -> GRPOStageConfig:
    """The paper's ablation of a GRPO stage: uniform prompt sampling, everything else equal.

    Same init model, pool, VPS table, steps, batch, optimiser and seed; only
    ``sampling_mode`` differs, and the full VPS refreshes go (their scores would
    be read by nobody, so they would only cost time).
    """
    train = config.train.model_copy(update={"sampling_mode": "uniform", "vps_update_every": None})
    return config.model_copy(update={"output_name": name, "train": train})


def _evaluate_config(
    config: PipelineConfig, checkpoints: list[str], bench: str | None, baseline: str | None
):
    benchmarks = [
        spec.model_copy(update={"source": bench})
        if spec.name == "synthetic" and bench and spec.source == config.benchmark_name
        else spec
        for spec in config.evaluate.benchmarks
    ]
    update: dict[str, Any] = {"checkpoints": checkpoints, "benchmarks": benchmarks}
    if config.evaluate.baseline is None and baseline:
        update["baseline"] = baseline  # paired tests against the SFT model this run made
    return config.evaluate.model_copy(update=update)


@flow(
    name="mmr1-pipeline",
    log_prints=True,
    flow_run_name=run_name("mmr1-pipeline", "label", "custom"),
)
def mmr1_pipeline(
    config: PipelineConfig | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or reuse) every stage and return the refs written plus the evaluation results.

    Args:
        config: The whole pipeline config. A deployment fills it from its preset.
        preset: A preset name (schemas/presets/) or YAML path to use instead of config.
        overrides: Fields to change, merged over the preset (or config), keeping the rest:
            {"sft.train.max_steps": 50} or {"sft": {"train": {"max_steps": 50}}}, like --set.
    """
    config = stage_config(PipelineConfig, config, preset, overrides)
    with flow_tracking("mmr1-pipeline", config) as run:
        if config.base_checkpoint:
            base = checkpoint_input(config.base_checkpoint, run.run_id)
        else:
            base = build_base_model(config.base_model_name, config.base_model, run.run_id)
        uses_synthetic = "evaluate" not in config.skip and any(
            s.name == "synthetic" and s.source == config.benchmark_name
            for s in config.evaluate.benchmarks
        )
        bench = (
            synthesize_benchmark(
                config.benchmark_name,
                config.benchmark_seed,
                config.benchmark_items,
                run.run_id,
                config.benchmark_tasks,
            )
            if uses_synthetic or "evaluate" in config.skip
            else None
        )
        stages = StageRunner(
            reuse=config.reuse,
            pins=dict(config.pin),
            skip=list(config.skip) + ([] if config.grpo_uniform_name else ["grpo_uniform"]),
            mlflow_run_id=run.run_id,
        )
        rl_pool = stages.run(
            "curate_rl",
            curate_rl,
            _rated_by(config.curate_rl, base),
            {"base": base, "bench": bench},
        )
        sft_data = stages.run(
            "curate_sft",
            curate_sft,
            _rated_by(config.curate_sft, base),
            {"base": base, "bench": bench},
        )
        sft_model = None
        if "sft" in config.pin or "sft" not in config.skip:
            data = sft_data if "sft" in config.pin else _require(sft_data, "curate_sft", "sft")
            sft_config = config.sft.model_copy(update={"dataset": data or "-", "base_model": base})
            sft_model = stages.run("sft", sft, sft_config, {"dataset": sft_data, "base": base})
        vps = None
        if "estimate_vps" in config.pin or "estimate_vps" not in config.skip:
            vps_config = config.vps.model_copy(
                update={
                    "dataset": _require(rl_pool, "curate_rl", "estimate_vps"),
                    "checkpoint": _require(sft_model, "sft", "estimate_vps"),
                }
            )
            vps = stages.run(
                "estimate_vps",
                estimate_vps,
                vps_config,
                {"dataset": rl_pool, "checkpoint": sft_model},
            )
        rl_model = None
        if "grpo_vas" in config.pin or "grpo_vas" not in config.skip:
            grpo_config = config.grpo.model_copy(
                update={
                    "dataset": _require(rl_pool, "curate_rl", "grpo_vas"),
                    "init_model": _require(sft_model, "sft", "grpo_vas"),
                    "vps_table": vps,
                }
            )
            rl_model = stages.run(
                "grpo_vas",
                grpo_vas,
                grpo_config,
                {"dataset": rl_pool, "init": sft_model, "vps": vps},
            )
        uniform_model = None
        if "grpo_uniform" in config.pin or "grpo_uniform" not in stages.skip:
            uniform_config = config.grpo.model_copy(
                update={
                    "dataset": _require(rl_pool, "curate_rl", "grpo_uniform"),
                    "init_model": _require(sft_model, "sft", "grpo_uniform"),
                    "vps_table": vps,
                }
            )
            name = config.grpo_uniform_name or f"{config.grpo.output_name}-uniform"
            uniform_model = stages.run(
                "grpo_uniform",
                grpo_vas,
                _uniform_ablation(uniform_config, name),
                {"dataset": rl_pool, "init": sft_model, "vps": vps},
            )
        checkpoints = [ref for ref in (base, sft_model, uniform_model, rl_model) if ref]
        results: dict[str, Any] = {}
        if "evaluate" not in config.skip:
            eval_config = _evaluate_config(config, checkpoints, bench, sft_model)
            outcome = stages.run(
                "evaluate",
                evaluate,
                eval_config,
                {f"checkpoint{i}": ref for i, ref in enumerate(checkpoints)},
                output=lambda result: None,
                # Reused: the accuracies (and leaderboard) the reused run recorded.
                reused=lambda found: recorded_evaluation(eval_config, found),
            )
            results = outcome.get("results", {}) if isinstance(outcome, dict) else {}
            if stages.outcomes["evaluate"]["action"] == "reused" and outcome.get("leaderboard"):
                print(outcome["leaderboard"])

        refs = {
            "base_model": base,
            "benchmark": bench,
            "rl_pool": rl_pool,
            "sft": sft_data,
            "sft_model": sft_model,
            "vps": vps,
            "rl_model": rl_model,
            "rl_uniform_model": uniform_model,
        }
        written = {k: v for k, v in refs.items() if v}
        run.record_writes(list(written.values()))
        run.set_tags({f"mmr1.output.{key}": value for key, value in written.items()})
        create_table_artifact(
            key="pipeline-stages",
            table=list(stages.outcomes.values()),
            description=f"mmr1-pipeline stages (MLflow run {run.run_id})",
        )
        for stage in stages.outcomes.values():
            print(f"{stage['stage']:>13}: {stage['action']:<8} {stage['output']}")
        return {**refs, "evaluation": results, "mlflow_run_id": run.run_id}
