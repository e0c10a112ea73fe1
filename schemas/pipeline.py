"""The ``mmr1-pipeline`` flow: every stage, chained through catalog refs.

``mmr1 demo`` runs it with the ``demo`` preset (tiny offline model, synthetic
data, CPU). Stages, in order: ``curate_rl``, ``curate_sft``, ``sft``,
``estimate_vps``, ``grpo_vas``, ``grpo_uniform`` (the paper's ablation: the
``grpo`` stage with uniform prompt sampling, run when ``grpo_uniform_name`` is
set), ``evaluate``; each can be skipped, pinned to an existing catalog entry, or
reused when an identical earlier run finished.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from schemas.base import ConfigModel
from schemas.curation import CurateRLConfig, CurateSFTConfig
from schemas.eval import EvaluateConfig
from schemas.grpo import GRPOStageConfig
from schemas.models import TinyVLMConfig
from schemas.refs import CheckpointInput, CheckpointOutput
from schemas.sft_flow import SFTStageConfig
from schemas.synthetic import SyntheticTasks
from schemas.vas import VPSEstimateConfig

Stage = Literal[
    "curate_rl", "curate_sft", "sft", "estimate_vps", "grpo_vas", "grpo_uniform", "evaluate"
]
STAGES: tuple[Stage, ...] = get_args(Stage)


class PipelineConfig(ConfigModel):
    """Parameters of the ``mmr1-pipeline`` flow (rendered as a form in the Prefect UI).

    The pipeline fills in every stage's inputs from the stages before it
    (dataset, model and VPS refs), so those fields of the stage configs are
    ignored. Curation steps whose ``difficulty.model`` is unset rate prompts with
    the base model; SFT trains the base model on the SFT data curated here.
    """

    label: str = Field(
        default="custom",
        description="Shown in run names (mmr1-pipeline[demo]); presets set their own name.",
    )
    base_checkpoint: CheckpointInput | None = Field(
        default=None,
        description="Base model: catalog ref, local directory or hub id (e.g. "
        "Qwen/Qwen2.5-VL-7B-Instruct, registered on the fly). None: build the tiny offline "
        "Qwen2.5-VL described by base_model.",
    )

    base_model_name: str = Field(
        default="tiny-qwen2.5-vl", description="Catalog name of the base model checkpoint."
    )
    base_model: TinyVLMConfig = Field(
        default_factory=TinyVLMConfig, description="Architecture of the offline tiny Qwen2.5-VL."
    )
    benchmark_name: str = Field(
        default="synthetic-bench",
        description="Catalog name of the built-in synthetic benchmark the pipeline registers.",
    )
    benchmark_items: int = Field(
        default=100, ge=1, description="Size of the built-in synthetic benchmark."
    )
    benchmark_seed: int = Field(default=0, description="Seed of the synthetic benchmark.")
    benchmark_tasks: SyntheticTasks = Field(
        default_factory=SyntheticTasks,
        description="Task distribution of the synthetic benchmark (families, difficulties, "
        "multiple-choice ratio, image size, options): that of the pools it should measure.",
    )
    curate_rl: CurateRLConfig = Field(
        default_factory=lambda: CurateRLConfig(output_name="synthetic-rl"),
        description="RL pool curation (synthetic source by default).",
    )
    curate_sft: CurateSFTConfig = Field(
        default_factory=lambda: CurateSFTConfig(output_name="synthetic-sft"),
        description="SFT CoT curation (synthetic source + programmatic teacher by default).",
    )
    sft: SFTStageConfig = Field(
        default_factory=lambda: SFTStageConfig(output_name="tiny-sft"),
        description="Cold-start SFT; its dataset and base model are the ones this demo made.",
    )
    vps: VPSEstimateConfig = Field(
        default_factory=VPSEstimateConfig,
        description="VPS estimation of the RL pool with the SFT model (dataset and checkpoint "
        "are filled in by the demo).",
    )
    grpo: GRPOStageConfig = Field(
        default_factory=lambda: GRPOStageConfig(output_name="tiny-grpo"),
        description="GRPO with VAS from the SFT model (dataset, init model and VPS table are "
        "filled in by the demo).",
    )
    grpo_uniform_name: CheckpointOutput | None = Field(
        default=None,
        description="Catalog name of the paper's ablation (stage grpo_uniform): the grpo "
        "stage's run with uniform prompt sampling instead of VAS (same SFT model, pool, "
        "steps, batch and seed; no VPS table or refreshes), evaluated beside it. None: no "
        "ablation (the stage reports skipped).",
    )
    evaluate: EvaluateConfig = Field(
        default_factory=EvaluateConfig,
        description="Evaluation of the base, SFT and RL models (checkpoints are filled in; a "
        "synthetic benchmark whose source is the benchmark_name uses the pipeline's; "
        "baseline None: the SFT model).",
    )
    skip: list[Stage] = Field(
        default_factory=list,
        description="Stages not to run (their outputs must be pinned if a later stage needs them).",
    )
    pin: dict[Stage, str] = Field(
        default_factory=dict,
        description="Stage -> existing catalog ref to use as its output instead of running it, "
        "e.g. {sft: 'checkpoint:mmr1-7b-sft@3'}.",
    )
    reuse: bool = Field(
        default=True,
        description="Reuse the output of an earlier finished run of a stage with the same "
        "inputs, config and code version instead of recomputing it.",
    )

    @model_validator(mode="after")
    def _check_stages(self) -> PipelineConfig:
        both = sorted(set(self.skip) & set(self.pin))
        if both:
            raise ValueError(f"stages {both} are both skipped and pinned; choose one")
        return self
