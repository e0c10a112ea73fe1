"""The ``demo`` flow: the whole pipeline, as far as stages exist, on the tiny model."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.generation import SamplingParams
from schemas.models import TinyVLMConfig
from schemas.rewards import RewardConfig
from schemas.synthetic import SyntheticConfig


class ProbeConfig(BaseModel):
    """A quick check of a policy: sample answers on benchmark items and score them."""

    n_prompts: int = Field(default=16, ge=1, description="Benchmark items to probe.")
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(n=4, temperature=1.0, max_new_tokens=48, seed=0),
        description="Sampling settings for the probe rollouts.",
    )
    batch_size: int = Field(default=16, ge=1, description="Requests per generation batch.")


class DemoConfig(BaseModel):
    """Parameters of the ``demo`` flow (rendered as a form in the Prefect UI)."""

    base_model_name: str = Field(
        default="tiny-qwen2.5-vl", description="Catalog name of the base model checkpoint."
    )
    base_model: TinyVLMConfig = Field(
        default_factory=TinyVLMConfig, description="Architecture of the offline tiny Qwen2.5-VL."
    )
    rl_pool: SyntheticConfig = Field(
        default_factory=lambda: SyntheticConfig(n_items=256, seed=0),
        description="Synthetic RL prompt pool (MMR1-RL schema).",
    )
    sft_pool: SyntheticConfig = Field(
        default_factory=lambda: SyntheticConfig(n_items=256, seed=1),
        description="Synthetic questions answered by the programmatic teacher for SFT.",
    )
    benchmark_items: int = Field(
        default=100, ge=1, description="Size of the built-in synthetic benchmark."
    )
    benchmark_seed: int = Field(default=0, description="Seed of the synthetic benchmark.")
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
