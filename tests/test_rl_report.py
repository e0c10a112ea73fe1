"""Rollout statistics of a GRPO step (one process)."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from mmr1.rl.report import rollout_stats, run_summary
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


def test_run_summary_means_and_the_first_and_last_tenth_of_steps() -> None:
    # 11 steps: the first and last 10% are ceil(1.1) = 2 steps each.
    history = [
        {
            "step": float(i + 1),
            "reward/accuracy": i / 10,
            "zero_variance_frac": 0.5 if i < 5 else 1.0,
            "zero_accuracy_variance_frac": 0.25,
        }
        for i in range(11)
    ]
    summary = run_summary(history)
    assert summary == pytest.approx(
        {
            "run/zero_variance_frac_mean": (5 * 0.5 + 6 * 1.0) / 11,
            "run/zero_accuracy_variance_frac_mean": 0.25,
            "run/accuracy_first_10pct": 0.05,
            "run/accuracy_last_10pct": 0.95,
            "run/steps": 11.0,
        }
    )
    assert run_summary(history[:3])["run/accuracy_first_10pct"] == 0.0  # at least one step
    assert run_summary([]) == {}
    assert run_summary([{"step": 1.0, "reward/accuracy": 0.5}]) == {
        "run/accuracy_first_10pct": 0.5,
        "run/accuracy_last_10pct": 0.5,
        "run/steps": 1.0,
    }
