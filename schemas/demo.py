"""The ``demo`` flow: the whole pipeline, as far as stages exist, on the tiny model."""

from __future__ import annotations

from pydantic import Field

from schemas.base import ConfigModel
from schemas.curation import CurateRLConfig, CurateSFTConfig
from schemas.generation import SamplingParams
from schemas.models import TinyVLMConfig
from schemas.rewards import RewardConfig
from schemas.sft_flow import SFTStageConfig


class ProbeConfig(ConfigModel):
    """A quick check of a policy: sample answers on benchmark items and score them."""

    n_prompts: int = Field(default=16, ge=1, description="Benchmark items to probe.")
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(n=4, temperature=1.0, max_new_tokens=48, seed=0),
        description="Sampling settings for the probe rollouts.",
    )
    batch_size: int = Field(default=16, ge=1, description="Requests per generation batch.")


class DemoConfig(ConfigModel):
    """Parameters of the ``demo`` flow (rendered as a form in the Prefect UI).

    Curation steps whose ``difficulty.model`` is unset rate prompts with the
    demo's base model; SFT trains that base model on the SFT data curated here.
    """

    base_model_name: str = Field(
        default="tiny-qwen2.5-vl", description="Catalog name of the base model checkpoint."
    )
    base_model: TinyVLMConfig = Field(
        default_factory=TinyVLMConfig, description="Architecture of the offline tiny Qwen2.5-VL."
    )
    benchmark_name: str = Field(default="synthetic-bench")
    benchmark_items: int = Field(
        default=100, ge=1, description="Size of the built-in synthetic benchmark."
    )
    benchmark_seed: int = Field(default=0, description="Seed of the synthetic benchmark.")
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
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
