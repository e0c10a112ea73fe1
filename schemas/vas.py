"""Variance Promotion Score records and the Variance-Aware Sampler config (METHOD.md 5-6).

VPS = alpha * OVS + beta * TDS, with OVS = ovs_scale * p(1 - p) and TDS a
trajectory diversity in [0, 1]. The sampler mixes B_w = floor(mix_ratio * B)
VPS-weighted draws with B - B_w uniform draws per batch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import ConfigModel


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
    """Settings of ``MixedVarianceSampler`` (paper section 3, METHOD.md section 6)."""

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
