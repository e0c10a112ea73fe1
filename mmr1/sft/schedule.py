"""Learning-rate schedules: linear warmup, then cosine / linear decay or a constant rate.

For an update with index ``s`` (0-based: ``s`` optimiser steps were taken
before it) out of ``T`` total, with ``W = ceil(warmup_ratio * T)`` warmup
steps and ``m = min_lr_ratio``, the learning rate is ``lr * f(s)`` where::

    warmup (s < W):   f(s) = (s + 1) / (W + 1)
    after  (s >= W):  p = (s - W) / (T - W)            in [0, 1)
                      cosine:   f = m + (1 - m) * (1 + cos(pi * p)) / 2
                      linear:   f = m + (1 - m) * (1 - p)
                      constant: f = 1

The first update already uses a non-zero rate (the common ``s / W`` ramp
spends its first step at lr 0) and the peak is reached at ``s = W``. The decay
approaches ``m * lr`` at the last step without wasting it at exactly ``m``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

ScheduleKind = Literal["cosine", "constant", "linear"]


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """``ceil(warmup_ratio * total_steps)``, kept below ``total_steps``."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must lie in [0, 1), got {warmup_ratio}")
    # 1e-9 keeps e.g. 0.1 * 30 = 3.0000000000000004 from rounding up to 4.
    return min(math.ceil(warmup_ratio * total_steps - 1e-9), total_steps - 1)


def lr_multiplier(
    step: int,
    *,
    total_steps: int,
    warmup: int,
    kind: ScheduleKind = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """``f(step)`` of the module docstring: the factor applied to the peak learning rate."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = min((step - warmup) / max(1, total_steps - warmup), 1.0)
    if kind == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)
    raise ValueError(f"unknown schedule {kind!r}; expected cosine, linear or constant")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_ratio: float,
    kind: ScheduleKind = "cosine",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` following :func:`lr_multiplier`; call ``step()`` once per optimiser step.

    Not handed to ``accelerator.prepare``: Accelerate's scheduler wrapper steps
    once per process, which would run the schedule N times too fast under N
    processes.
    """
    warmup = warmup_steps(total_steps, warmup_ratio)

    def factor(step: int) -> float:
        return lr_multiplier(
            step, total_steps=total_steps, warmup=warmup, kind=kind, min_lr_ratio=min_lr_ratio
        )

    return LambdaLR(optimizer, factor)
