"""GRPO group advantages (mmr1/rl/advantages.py) on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from mmr1.rl.advantages import ADVANTAGE_SCALES, group_advantages, register_advantage_scale


def test_known_group_uses_unbiased_std() -> None:
    # mean 0.5; unbiased variance = 4 * 0.25 / 3 = 1/3, std = sqrt(1/3)
    advantages = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4)
    half = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert advantages.tolist() == pytest.approx([half, -half, -half, half], rel=1e-6)


def test_groups_are_normalised_separately() -> None:
    # group 1: [2, 0] mean 1, unbiased std sqrt(2); group 2: [5, 5, ...] flat
    rewards = torch.tensor([2.0, 0.0, 5.0, 5.0])
    advantages = group_advantages(rewards, group_size=2)
    one = 1.0 / (math.sqrt(2.0) + 1e-6)
    assert advantages.tolist() == pytest.approx([one, -one, 0.0, 0.0], rel=1e-6)


def test_scale_none_only_centres() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 2.0, 2.0])
    advantages = group_advantages(rewards, group_size=4, scale="none")
    assert advantages.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 1.0, -1.0, 0.0, 0.0])


@pytest.mark.parametrize("scale", ["group", "none"])
@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, 0.3])
def test_all_equal_group_is_exactly_zero(scale: str, value: float) -> None:
    # 0.1 - mean([0.1] * 8) is -7.45e-9 in float32: divided by eps = 1e-6 it would be -0.0075.
    rewards = torch.full((8,), value)
    advantages = group_advantages(rewards, group_size=8, scale=scale)
    assert torch.equal(advantages, torch.zeros(8))


def test_integer_and_bool_rewards_are_promoted() -> None:
    from_int = group_advantages(torch.tensor([1, 0, 0, 1]), group_size=4)
    from_bool = group_advantages(torch.tensor([True, False, False, True]), group_size=4)
    from_float = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4)
    assert from_int.dtype == torch.float32
    assert torch.equal(from_int, from_float)
    assert torch.equal(from_bool, from_float)


def test_matches_a_loop_over_groups() -> None:
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (6 * 8,), generator=generator).double()
    advantages = group_advantages(rewards, group_size=8)
    for g in range(6):
        group = rewards[g * 8 : (g + 1) * 8].tolist()
        mean = sum(group) / 8
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / 7)
        expected = [0.0 if std == 0 else (r - mean) / (std + 1e-6) for r in group]
        assert advantages[g * 8 : (g + 1) * 8].tolist() == pytest.approx(expected)


@pytest.mark.parametrize("group_size", [1, 0, -2])
def test_group_size_below_two_raises(group_size: int) -> None:
    with pytest.raises(ValueError, match="group_size must be at least 2"):
        group_advantages(torch.tensor([1.0, 0.0]), group_size=group_size)


def test_length_not_divisible_raises() -> None:
    with pytest.raises(ValueError, match="5 rewards do not split into groups of 2"):
        group_advantages(torch.zeros(5), group_size=2)


def test_not_one_dimensional_raises() -> None:
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 4), group_size=4)


def test_unknown_scale_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"'batch'.*\['group', 'none'\]"):
        group_advantages(torch.zeros(4), group_size=2, scale="batch")


def test_duplicate_scale_name_raises() -> None:
    assert set(ADVANTAGE_SCALES) >= {"group", "none"}
    with pytest.raises(ValueError, match="already registered"):
        register_advantage_scale("group")(lambda centred, grouped, eps: centred)
