"""Reward settings and per-response reward scores (docs/METHOD.md section 4).

overall = accuracy_weight * accuracy + format_weight * format
          + repetition_weight * repetition

The paper uses 1 * accuracy + 1 * format and no repetition term. Accuracy and
format are binary; repetition is a penalty in [-0.5, 0].
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RewardConfig(BaseModel):
    """Weights of the reward terms and how answer verification is bounded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy_weight: float = Field(
        default=1.0,
        description="Weight of the binary accuracy reward (1.0 in the paper).",
    )
    format_weight: float = Field(
        default=1.0,
        description="Weight of the binary <think>/<answer> format reward (1.0 in the paper).",
    )
    repetition_weight: float = Field(
        default=0.0,
        ge=0.0,
        description=(
            "Weight of the optional repetition penalty (a value in [-0.5, 0]); "
            "0 turns it off, as in the paper."
        ),
    )
    repetition_ngram: int = Field(
        default=40,
        ge=1,
        description="Word n-gram length of the repetition penalty (40 in the released code).",
    )
    timeout_s: float = Field(
        default=5.0,
        gt=0.0,
        description=(
            "Per-item verification deadline in seconds. An answer whose check has not "
            "finished by then scores accuracy 0 and is flagged timed_out."
        ),
    )
    num_workers: int = Field(
        default=2,
        ge=0,
        description=(
            "Verification worker processes for score_batch (python -m mmr1.rewards.worker, "
            "killed at an item's deadline). 0 verifies in this process, each item still "
            "under the deadline but without a kill: SymPy stuck in C code is not "
            "interrupted (see mmr1.rewards.inprocess)."
        ),
    )


class RewardScore(BaseModel):
    """The reward terms of one response and their weighted sum."""

    accuracy: float = Field(description="1.0 when the extracted answer matches the gold, else 0.0.")
    format: float = Field(description="1.0 for one <think> block then one <answer> block.")
    repetition: float = Field(
        default=0.0, description="Repetition penalty in [-0.5, 0]; 0 when not computed."
    )
    overall: float = Field(description="Weighted sum of the terms (see RewardConfig).")
    timed_out: bool = Field(
        default=False, description="True when verification hit its deadline (accuracy is 0)."
    )
    extracted: str | None = Field(
        default=None, description="The final answer that was compared, or None if none was found."
    )
