"""Variance Promotion Score records and the Variance-Aware Sampler config (docs/METHOD.md 5-6).

VPS = alpha * OVS + beta * TDS, with OVS = ovs_scale * p(1 - p) and TDS a
trajectory diversity in [0, 1]. The sampler mixes B_w = floor(mix_ratio * B)
VPS-weighted draws with B - B_w uniform draws per batch.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import ConfigModel, StageConfig
from schemas.generation import BackendConfig, SamplingParams
from schemas.refs import CheckpointInput, DatasetInput, VPSOutput
from schemas.registry import TDS_METHODS
from schemas.rewards import RewardConfig


class VPSRecord(BaseModel):
    """The Variance Promotion Score of one prompt and the terms it was built from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pass_rate: float = Field(
        ge=0.0, le=1.0, description="p = mean binary accuracy of the rollouts."
    )
    ovs: float = Field(ge=0.0, description="Outcome variance score, ovs_scale * p(1 - p).")
    tds: float = Field(ge=0.0, le=1.0, description="Trajectory diversity score in [0, 1].")
    vps: float = Field(ge=0.0, description="alpha * ovs + beta * tds.")


class SamplerConfig(ConfigModel):
    """Settings of ``MixedVarianceSampler`` (paper section 3, docs/METHOD.md section 6)."""

    batch_size: int = Field(ge=1, description="B, prompts per batch (global, across ranks).")
    mix_ratio: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description=(
            "lambda: B_w = floor(lambda * B) prompts per batch are drawn with replacement "
            "proportionally to VPS, the rest uniformly without replacement. Paper: 0.5."
        ),
    )
    floor: float = Field(
        default=1e-3,
        gt=0.0,
        description=(
            "Added to every score before normalising, so no prompt has zero probability "
            "(the released min-max normalisation gave the lowest prompt weight 0)."
        ),
    )
    prior: float | None = Field(
        default=None,
        ge=0.0,
        description=(
            "Score of prompts never estimated. None: the mean of the currently known scores "
            "(re-evaluated after every update), or 1.0 when no score is known yet, so "
            "unestimated prompts are neither starved nor favoured."
        ),
    )
    seed: int = Field(default=0, description="Seed of the sampler's torch.Generator.")
    drop_last: bool = Field(
        default=False,
        description="Drop the last, short uniform part of a pass instead of yielding it.",
    )

    def weighted_per_batch(self) -> int:
        """B_w = floor(mix_ratio * batch_size), robust to binary rounding.

        A product within 1e-9 of an integer counts as that integer: in floating point
        0.29 * 100 = 28.999999999999996, whose plain floor would give 28 instead of 29.
        """
        return math.floor(round(self.mix_ratio * self.batch_size, 9))


class VPSScoreConfig(ConfigModel):
    """How per-prompt rollouts become a Variance Promotion Score (docs/METHOD.md section 5)."""

    alpha: float = Field(default=0.8, ge=0.0, description="Weight of OVS (paper: 0.8).")
    beta: float = Field(default=0.2, ge=0.0, description="Weight of TDS (paper: 0.2).")
    ovs_scale: float = Field(
        default=4.0,
        gt=0.0,
        description="OVS = ovs_scale * p(1 - p); 4 maps it to [0, 1] like TDS, 1 is the raw form.",
    )
    tds_method: Annotated[str, TDS_METHODS.field()] = Field(
        default="self_bleu",
        description="A registered trajectory diversity: self_bleu (1 - self-BLEU(1..3)), "
        "distinct (distinct-n), or edit (mean normalised edit distance).",
    )
    tds_unit: Literal["tokens", "words"] = Field(
        default="tokens",
        description="Compare trajectories as unpadded token ids, or as whitespace words "
        "(for backends that return no token ids).",
    )


class VPSEstimateConfig(StageConfig):
    """Parameters of the ``estimate_vps`` flow (a form in the Prefect UI).

    ``dataset`` and ``checkpoint`` are catalog refs; a bare name means the latest
    version at the time the flow runs, which is what scheduled re-estimation uses
    to follow a training run.
    """

    REQUIRED = ("dataset", "checkpoint")

    dataset: DatasetInput | None = Field(
        default=None,
        description="Catalog ref of the RL pool (NAME[@VERSION]). "
        "None: set by mmr1-pipeline; required when the flow runs on its own.",
    )
    checkpoint: CheckpointInput | None = Field(
        default=None,
        description="Model to roll out: catalog ref (NAME[@VERSION]; bare = latest), local "
        "directory or hub id. "
        "None: set by mmr1-pipeline; required when the flow runs on its own.",
    )
    output_name: VPSOutput | None = Field(
        default=None, description="Catalog name of the VPS table (default: '<dataset name>-vps')."
    )
    rollouts: int = Field(
        default=8, ge=2, description="N rollouts per prompt (paper main text: 32)."
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.6, top_p=1.0, max_new_tokens=512),
        description="Sampling as in training (docs/METHOD.md section 7); n and seed are set "
        "per shard.",
    )
    backend: BackendConfig | None = Field(
        default=None,
        description="Generation backend; None: the local 'hf' backend on the checkpoint. Its "
        "model field is replaced by the checkpoint's location.",
    )
    batch_size: int = Field(default=16, ge=1, description="Prompts per hf forward batch.")
    device: str = Field(default="auto", description="Device of the default hf backend.")
    shard_size: int = Field(default=64, ge=1, description="Prompts per resumable shard.")
    limit: int | None = Field(
        default=None, ge=1, description="Score only the first N prompts (quick runs)."
    )
    seed: int = Field(default=0, description="Base seed; shard s samples with a derived seed.")
    score: VPSScoreConfig = Field(
        default_factory=VPSScoreConfig,
        description="How VPS combines its parts: alpha * OVS + beta * TDS (docs/METHOD.md 5).",
    )
    rewards: RewardConfig = Field(
        default_factory=RewardConfig,
        description="Reward weights and answer-verification limits (deadline, workers).",
    )
    restart: bool = Field(
        default=False, description="Discard finished shards of an identical earlier run."
    )
