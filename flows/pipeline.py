"""The ``mmr1-pipeline`` flow: curate -> SFT -> VPS -> GRPO with VAS (+ uniform) -> evaluate.

One table drives it: ``schemas.pipeline.STAGE_IO`` says what each stage reads
and writes (refs by name; the config validator checks that a skip leaves every
running stage its inputs), ``STAGE_FLOWS`` below says which flow runs it and
how its config is built from the recipe in ``PipelineConfig`` and the refs so
far. Every stage is a subflow with its own MLflow run nested under the
pipeline's, and returns the catalog ref it wrote (the evaluation too: a
dataset of kind ``evaluation``). ``StageRunner`` (``tasks/pipeline.py``) pins,
skips, or reuses a stage when an earlier run of it finished with the same
config (inputs included) and code; a rerun after a failure therefore resumes
at the failed stage. ``mmr1 demo`` is this flow with the ``demo`` preset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from flows.curate import curate_rl, curate_sft
from flows.evaluate import evaluate
from flows.grpo import grpo_vas
from flows.sft import sft
from flows.vps import estimate_vps
from schemas.curation import CurateRLConfig
from schemas.eval import EvaluateConfig
from schemas.grpo import GRPOStageConfig
from schemas.pipeline import STAGE_IO, PipelineConfig, Stage
from tasks.context import flow_tracking
from tasks.datasets import synthesize_benchmark
from tasks.evaluation_record import read_evaluation
from tasks.models import build_base_model, checkpoint_input
from tasks.observe import run_name
from tasks.parameters import stage_config
from tasks.pipeline import StageRunner


def _rated_by(config: CurateRLConfig, model_ref: str) -> CurateRLConfig:
    """Fill in the difficulty model when the config leaves it to the base model."""
    difficulty = config.difficulty
    if not difficulty.enabled or difficulty.model or difficulty.backend:
        return config
    return config.model_copy(
        update={"difficulty": difficulty.model_copy(update={"model": model_ref})}
    )


#: GRPO settings that only VAS reads: the ablation holds them at their defaults, so
#: changing one for the VAS run leaves the uniform run's stage key (and result) alone.
_VAS_ONLY = ("mix_ratio", "vps_floor", "vps_prior", "vps_refresh", "vps_rollouts")


def _uniform_ablation(config: GRPOStageConfig, name: str) -> GRPOStageConfig:
    """The paper's ablation of a GRPO stage: uniform prompt sampling, everything else equal.

    Same init model, pool, VPS table, steps, batch, optimiser and seed; only
    ``sampling_mode`` differs, the full VPS refreshes go (their scores would be
    read by nobody, so they would only cost time) and the VAS-only settings
    take their defaults.
    """
    fields = type(config.train).model_fields
    update: dict[str, Any] = {
        field: fields[field].get_default(call_default_factory=True) for field in _VAS_ONLY
    }
    update |= {"sampling_mode": "uniform", "vps_update_every": None}
    train = config.train.model_copy(update=update)
    return config.model_copy(update={"output_name": name, "train": train})


Refs = Mapping[str, str | None]


def _grpo(config: PipelineConfig, refs: Refs) -> GRPOStageConfig:
    return config.grpo.model_copy(
        update={
            "dataset": refs["rl_pool"],
            "init_model": refs["sft_model"],
            "vps_table": refs["vps"],
        }
    )


def _evaluate_config(config: PipelineConfig, refs: Refs) -> EvaluateConfig:
    """Evaluation of the models this run made, on the pipeline's synthetic benchmark.

    The baseline of the paired tests is the SFT model unless the recipe names one.
    """
    bench = refs["benchmark"]
    benchmarks = [
        spec.model_copy(update={"source": bench})
        if spec.name == "synthetic" and bench and spec.source == config.benchmark_name
        else spec
        for spec in config.evaluate.benchmarks
    ]
    models = ("base_model", "sft_model", "rl_uniform_model", "rl_model")
    checkpoints = [ref for ref in (refs.get(name) for name in models) if ref]
    update: dict[str, Any] = {"checkpoints": checkpoints, "benchmarks": benchmarks}
    if config.evaluate.baseline is None and refs.get("sft_model"):
        update["baseline"] = refs["sft_model"]
    return config.evaluate.model_copy(update=update)


@dataclass(frozen=True)
class StageFlow:
    """How a stage of ``schemas.pipeline.STAGE_IO`` runs: its flow, and its config from refs."""

    flow: Callable[[Any], str]
    config: Callable[[PipelineConfig, Refs], BaseModel]


#: The flow and config of each stage; what it reads and writes is in STAGE_IO.
STAGE_FLOWS: dict[Stage, StageFlow] = {
    "curate_rl": StageFlow(curate_rl, lambda c, r: _rated_by(c.curate_rl, r["base_model"])),
    "curate_sft": StageFlow(curate_sft, lambda c, r: _rated_by(c.curate_sft, r["base_model"])),
    "sft": StageFlow(
        sft,
        lambda c, r: c.sft.model_copy(
            update={"dataset": r["sft_data"], "base_model": r["base_model"]}
        ),
    ),
    "estimate_vps": StageFlow(
        estimate_vps,
        lambda c, r: c.vps.model_copy(
            update={"dataset": r["rl_pool"], "checkpoint": r["sft_model"]}
        ),
    ),
    "grpo_vas": StageFlow(grpo_vas, _grpo),
    "grpo_uniform": StageFlow(
        grpo_vas,
        lambda c, r: _uniform_ablation(
            _grpo(c, r), c.grpo_uniform_name or f"{c.grpo.output_name}-uniform"
        ),
    ),
    "evaluate": StageFlow(evaluate, _evaluate_config),
}


def _sources(config: PipelineConfig, mlflow_run_id: str) -> dict[str, str | None]:
    """The refs before the first stage: the base model and the built-in synthetic benchmark.

    The benchmark is registered when the evaluation reads it, and also when the
    evaluation is skipped, so decontamination (and the stages' keys) see the same
    benchmarks either way.
    """
    if config.base_checkpoint:
        base = checkpoint_input(config.base_checkpoint, mlflow_run_id)
    else:
        base = build_base_model(config.base_model_name, config.base_model, mlflow_run_id)
    evaluated = "evaluate" not in config.skip and any(
        s.name == "synthetic" and s.source == config.benchmark_name
        for s in config.evaluate.benchmarks
    )
    bench = None
    if evaluated or "evaluate" in config.skip:
        bench = synthesize_benchmark(
            config.benchmark_name,
            config.benchmark_seed,
            config.benchmark_items,
            mlflow_run_id,
            config.benchmark_tasks,
        )
    return {"base_model": base, "benchmark": bench}


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
    """Run (or reuse, pin, skip) every stage in order; return the refs and the accuracies.

    Returns the ref each stage wrote (None when skipped), keyed as in
    ``schemas.pipeline.STAGE_IO`` (``base_model``, ``benchmark``, ``rl_pool``,
    ``sft_data``, ``sft_model``, ``vps``, ``rl_model``, ``rl_uniform_model``,
    ``evaluation``), plus ``results`` (checkpoint -> benchmark -> accuracy),
    ``baseline`` (of the evaluation's paired tests) and ``mlflow_run_id``.

    Args:
        config: The whole pipeline config. A deployment fills it from its preset.
        preset: A preset name (schemas/presets/) or YAML path to use instead of config.
        overrides: Fields to change, merged over the preset (or config), keeping the rest:
            {"sft.train.max_steps": 50} or {"sft": {"train": {"max_steps": 50}}}, like --set.
    """
    config = stage_config(PipelineConfig, config, preset, overrides)
    with flow_tracking("mmr1-pipeline", config) as run:
        refs = _sources(config, run.run_id)
        stages = StageRunner(
            reuse=config.reuse, pins=dict(config.pin), skip=config.skipped, mlflow_run_id=run.run_id
        )
        for name, io in STAGE_IO.items():
            step = STAGE_FLOWS[name]
            refs[io.writes] = stages.run(
                name,
                step.flow,
                lambda step=step: step.config(config, refs),
                {key: refs.get(key) for key in (*io.reads, *io.optional)},
            )
        evaluation = read_evaluation(refs["evaluation"]) if refs["evaluation"] else {}
        if evaluation and stages.outcomes["evaluate"]["action"] != "ran":
            print(evaluation["leaderboard"])  # the run that computed it printed it then
        _record(run, refs, stages)
        return {
            **refs,
            "results": evaluation.get("results", {}),
            "baseline": evaluation.get("baseline"),
            "mlflow_run_id": run.run_id,
        }


def _record(run: Any, refs: Refs, stages: StageRunner) -> None:
    """Tag the pipeline's MLflow run with what it wrote; publish and print the stage table."""
    written = {key: ref for key, ref in refs.items() if ref}
    run.record_writes(list(written.values()))
    run.set_tags({f"mmr1.output.{key}": ref for key, ref in written.items()})
    create_table_artifact(
        key="pipeline-stages",
        table=list(stages.outcomes.values()),
        description=f"mmr1-pipeline stages (MLflow run {run.run_id})",
    )
    for stage in stages.outcomes.values():
        print(f"{stage['stage']:>13}: {stage['action']:<8} {stage['output']}")
