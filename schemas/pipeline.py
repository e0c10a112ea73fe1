"""The ``mmr1-pipeline`` flow: every stage, chained through catalog refs.

``mmr1 demo`` runs it with the ``demo`` preset (tiny offline model, synthetic
data, CPU). Stages, in order: ``curate_rl``, ``curate_sft``, ``sft``,
``estimate_vps``, ``grpo_vas``, ``grpo_uniform`` (the paper's ablation: the
``grpo`` stage with uniform prompt sampling, run when ``grpo_uniform_name`` is
set), ``evaluate``; each can be skipped, pinned to an existing catalog entry, or
reused when an identical earlier run finished.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

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

#: Refs that exist before the first stage: the base model and the built-in benchmark.
SOURCES = ("base_model", "benchmark")


class StageIO(NamedTuple):
    """What one stage of the pipeline reads and writes, by the names of the refs between stages.

    ``reads`` must exist for the stage to run (written by an earlier stage that
    runs or is pinned, or a source); ``optional`` are taken when they exist;
    ``section`` is the field of :class:`PipelineConfig` holding the stage's
    recipe and ``fills`` the fields of that recipe the pipeline sets from refs
    (so they must be left unset in the pipeline's config).
    """

    reads: tuple[str, ...]
    optional: tuple[str, ...]
    writes: str
    section: str
    fills: tuple[str, ...]


#: The pipeline, in order: the one table that decides what each stage needs, so what a skip
#: or a pin implies (flows/pipeline.py pairs each row with its flow and config builder).
STAGE_IO: dict[Stage, StageIO] = {
    "curate_rl": StageIO(("base_model",), ("benchmark",), "rl_pool", "curate_rl", ()),
    "curate_sft": StageIO(("base_model",), ("benchmark",), "sft_data", "curate_sft", ()),
    "sft": StageIO(("sft_data", "base_model"), (), "sft_model", "sft", ("dataset", "base_model")),
    "estimate_vps": StageIO(("rl_pool", "sft_model"), (), "vps", "vps", ("dataset", "checkpoint")),
    "grpo_vas": StageIO(
        ("rl_pool", "sft_model"),
        ("vps",),
        "rl_model",
        "grpo",
        ("dataset", "init_model", "vps_table"),
    ),
    "grpo_uniform": StageIO(
        ("rl_pool", "sft_model"),
        ("vps",),
        "rl_uniform_model",
        "grpo",
        ("dataset", "init_model", "vps_table"),
    ),
    "evaluate": StageIO(
        (),
        ("base_model", "sft_model", "rl_uniform_model", "rl_model", "benchmark"),
        "evaluation",
        "evaluate",
        ("checkpoints",),
    ),
}
WRITER: dict[str, Stage] = {io.writes: stage for stage, io in STAGE_IO.items()}


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
        default_factory=SFTStageConfig,
        description="Cold-start SFT recipe; the pipeline sets its dataset (curate_sft's) and "
        "base model (base_checkpoint or the tiny one).",
    )
    vps: VPSEstimateConfig = Field(
        default_factory=VPSEstimateConfig,
        description="VPS estimation recipe; the pipeline sets its dataset (curate_rl's pool) "
        "and checkpoint (the SFT model).",
    )
    grpo: GRPOStageConfig = Field(
        default_factory=GRPOStageConfig,
        description="GRPO with VAS recipe; the pipeline sets its dataset (curate_rl's pool), "
        "init model (the SFT model) and VPS table (estimate_vps's).",
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
        description="Evaluation recipe; the pipeline sets its checkpoints (base, SFT and RL "
        "models); a synthetic benchmark whose source is benchmark_name is the pipeline's; "
        "baseline None: the SFT model.",
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

    @property
    def skipped(self) -> set[Stage]:
        """Stages that do not run: ``skip``, and ``grpo_uniform`` without a name (unless pinned)."""
        off: set[Stage] = set(self.skip)
        if self.grpo_uniform_name is None and "grpo_uniform" not in self.pin:
            off.add("grpo_uniform")
        return off

    @model_validator(mode="after")
    def _check_stages(self) -> PipelineConfig:
        both = sorted(set(self.skip) & set(self.pin))
        if both:
            raise ValueError(f"stages {both} are both skipped and pinned; choose one")
        for stage, io in STAGE_IO.items():
            if stage in self.skipped or stage in self.pin:
                continue
            for name in io.reads:
                writer = WRITER.get(name)
                if writer is not None and writer in self.skipped:
                    raise ValueError(
                        f"stage {stage!r} needs the output of {writer!r} ({name}), which is "
                        f"skipped: pin it instead (pin: {{{writer}: REF}}) or skip {stage!r} too"
                    )
            section = getattr(self, io.section)
            for field in io.fills:
                value = getattr(section, field)
                if value is not None and value != []:
                    source = ", ".join(
                        f"{WRITER[name]}'s {name}" if name in WRITER else name
                        for name in (*io.reads, *io.optional)
                    )
                    raise ValueError(
                        f"{io.section}.{field} is {value!r}, but the pipeline sets it from "
                        f"the refs stage {stage!r} reads ({source}); leave it unset, and pin "
                        "the stage that writes it to use an existing one "
                        "(pin: {STAGE: REF})"
                    )
        return self
