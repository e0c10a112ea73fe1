"""GRPO building blocks (docs/METHOD.md section 7).

``advantages`` (group-relative advantages) and ``losses`` (clipped policy loss,
k3 KL) are pure torch functions with no model, optimiser or I/O in sight, so the
trainer, the tests and the benches share one definition of each quantity.
"""

from mmr1.rl.advantages import ADVANTAGE_SCALES, group_advantages
from mmr1.rl.losses import (
    LOSS_AGGREGATIONS,
    aggregate_loss,
    kl_k3,
    normaliser_units,
    policy_loss,
)

__all__ = [
    "ADVANTAGE_SCALES",
    "LOSS_AGGREGATIONS",
    "aggregate_loss",
    "group_advantages",
    "kl_k3",
    "normaliser_units",
    "policy_loss",
]
