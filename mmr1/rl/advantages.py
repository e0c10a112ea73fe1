"""Group-relative advantages of GRPO (docs/METHOD.md section 7, paper Table 6).

Every prompt gets G rollouts; rollout i of a group is scored against its own
group only::

    A_i = (r_i - mean_g(r)) / (std_g(r) + eps)     scale "group" (GRPO)
    A_i =  r_i - mean_g(r)                         scale "none"  (Dr.GRPO)

``std_g`` is the unbiased (n - 1) standard deviation, as in the released code.
A group whose rewards are all equal carries no learning signal: its advantages
are exactly 0 (not a rounding residue of ``r - mean``), which is the
zero-variance case Variance-Aware Sampling tries to avoid. The per-response
advantage is broadcast over that response's tokens by ``policy_loss``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from schemas.registry import ADVANTAGE_SCALES

AdvantageScale = Callable[[Tensor, Tensor, float], Tensor]
"""``(centred, grouped_rewards, eps) -> advantages``, all of shape (n_prompts, group_size)."""

#: How the centred rewards of a group are scaled, by name (``schemas.registry``: configs
#: validate ``advantage_scale`` against the names registered here).
register_advantage_scale = ADVANTAGE_SCALES.register


@register_advantage_scale("group")
def _scale_by_group_std(centred: Tensor, grouped: Tensor, eps: float) -> Tensor:
    """GRPO: divide by the unbiased group standard deviation plus ``eps``."""
    return centred / (grouped.std(dim=1, unbiased=True, keepdim=True) + eps)


@register_advantage_scale("none")
def _no_scale(centred: Tensor, grouped: Tensor, eps: float) -> Tensor:
    """Dr.GRPO: keep the centred rewards (no division by the group std)."""
    return centred


def group_advantages(
    rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-6
) -> Tensor:
    """Advantage of every response, normalised within its group of ``group_size``.

    ``rewards``: shape (n_prompts * group_size,), ordered group by group (the G
    responses of prompt 0, then those of prompt 1, ...). Returns a float tensor
    of the same shape: ``(r - mean_group) / (std_group + eps)`` for ``scale="group"``
    (unbiased std), ``r - mean_group`` for ``scale="none"``. Groups whose rewards
    are all equal give exactly 0. Integer or bool rewards are promoted to float32.

    Raises ``ValueError`` for ``group_size < 2`` (one response has no baseline and
    an undefined unbiased std), a length not divisible by ``group_size``, a tensor
    that is not 1-D, or an unknown ``scale``.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(
            f"unknown advantage scale {scale!r}; choose one of {sorted(ADVANTAGE_SCALES)}"
        )
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 for group advantages, got {group_size}")
    if rewards.dim() != 1:
        raise ValueError(
            f"rewards must be 1-D (n_prompts * group_size,), got {tuple(rewards.shape)}"
        )
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    flat = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)
    advantages = ADVANTAGE_SCALES[scale](centred, grouped, eps)
    return torch.where(flat, torch.zeros_like(advantages), advantages).reshape(-1)
