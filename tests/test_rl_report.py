"""Rollout statistics of a GRPO step (one process)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from mmr1.rl.report import rollout_stats
from schemas.generation import CompletionSample
from schemas.rewards import RewardScore


def _score(accuracy: float, fmt: float) -> RewardScore:
    return RewardScore(overall=accuracy + fmt, accuracy=accuracy, format=fmt)


def test_zero_variance_of_rewards_and_of_accuracies_per_group() -> None:
    # Three groups of 2: all wrong with varying format (accuracy variance 0, reward
    # variance > 0); all right and well formatted (both 0); mixed accuracy (neither).
    scores = [
        _score(0, 1), _score(0, 0),
        _score(1, 1), _score(1, 1),
        _score(1, 1), _score(0, 1),
    ]  # fmt: skip
    samples = [
        CompletionSample(text="x", token_ids=[1] * (i + 1), finish_reason="length" if i else "stop")
        for i in range(6)
    ]
    rewards = torch.tensor([s.overall for s in scores])
    stats = rollout_stats(Accelerator(cpu=True), samples, scores, rewards, group_size=2)
    assert stats["zero_variance_frac"] == pytest.approx(1 / 3)
    assert stats["zero_accuracy_variance_frac"] == pytest.approx(2 / 3)
    assert stats["reward/accuracy"] == pytest.approx(0.5)
    assert stats["reward/format"] == pytest.approx(5 / 6)
    assert stats["response/length_mean"] == pytest.approx(3.5)
    assert stats["response/length_max"] == 6
    assert stats["response/truncated_frac"] == pytest.approx(5 / 6)
    assert stats["_tokens"] == 21
