"""Variance Promotion Score and Variance-Aware Sampling (docs/METHOD.md sections 5-6)."""

from mmr1.vas.sampler import MixedVarianceSampler
from mmr1.vas.vps import outcome_variance, trajectory_diversity, variance_promotion_score

__all__ = [
    "MixedVarianceSampler",
    "outcome_variance",
    "trajectory_diversity",
    "variance_promotion_score",
]
