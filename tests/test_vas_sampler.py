"""MixedVarianceSampler (mmr1/vas/sampler.py): mixing, coverage, resume, determinism."""

from __future__ import annotations

import math
import multiprocessing
import random
from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from mmr1.vas.sampler import MixedVarianceSampler
from schemas.vas import SamplerConfig


def take(sampler: MixedVarianceSampler, k: int) -> list[list[int]]:
    """The next k batches, across pass boundaries."""
    out: list[list[int]] = []
    while len(out) < k:
        out.extend(islice(iter(sampler), k - len(out)))
    return out


def make(n: int = 10, batch_size: int = 4, **kwargs: object) -> MixedVarianceSampler:
    return MixedVarianceSampler(n, SamplerConfig(batch_size=batch_size, **kwargs))


def test_batch_sizes_and_len() -> None:
    sampler = make(n=10, batch_size=4)  # B_w = 2, B_r = 2
    assert len(sampler) == 5
    assert [len(b) for b in sampler] == [4] * 5
    uneven = make(n=10, batch_size=6, mix_ratio=0.5)  # B_r = 3: 3, 3, 3, 1
    assert len(uneven) == 4
    assert [len(b) for b in uneven] == [6, 6, 6, 4]
    dropped = make(n=10, batch_size=6, drop_last=True)
    assert len(dropped) == 3
    assert [len(b) for b in dropped] == [6, 6, 6]
    all_weighted = make(n=10, batch_size=4, mix_ratio=1.0)
    assert len(all_weighted) == 3
    assert [len(b) for b in all_weighted] == [4, 4, 4]


def test_uniform_part_covers_every_index_once_per_pass() -> None:
    sampler = make(n=11, batch_size=6, mix_ratio=0.5)  # B_w = 3
    first = [b[3:] for b in sampler]
    second = [b[3:] for b in sampler]
    for one_pass in (first, second):
        assert sorted(i for b in one_pass for i in b) == list(range(11))
    assert first != second  # reshuffled each pass
    assert sampler.pass_index == 1


def test_weighted_part_concentrates_on_high_scores() -> None:
    sampler = make(n=20, batch_size=8, mix_ratio=0.5, seed=1)
    scores = [0.0] * 20
    scores[7] = 1.0
    scores[3] = 0.1
    sampler.update_scores(range(20), scores)
    counts = Counter(i for b in take(sampler, 200) for i in b[:4])
    assert counts[7] > 5 * counts[3] > 0
    assert counts[7] > 500
    zero_scored = sum(counts[i] for i in range(20) if i not in (3, 7))
    assert zero_scored > 0  # the floor keeps zero-scored prompts reachable


@pytest.mark.parametrize("value", [0.0, 0.3])
def test_equal_scores_are_uniform(value: float) -> None:
    sampler = make(n=5, batch_size=10, mix_ratio=1.0)
    sampler.update_scores(range(5), [value] * 5)
    assert torch.equal(sampler.scores, torch.full((5,), value, dtype=torch.float64))
    counts = Counter(i for b in take(sampler, 200) for i in b)
    assert set(counts) == set(range(5))
    assert all(300 < c < 500 for c in counts.values())  # 400 expected each


def test_unknown_prompts_get_the_prior() -> None:
    sampler = make(n=4)
    assert sampler.scores.tolist() == [1.0] * 4
    sampler.update_scores([0, 1], [0.2, 0.4])
    assert sampler.scores.tolist() == pytest.approx([0.2, 0.4, 0.3, 0.3])
    fixed = make(n=3, prior=0.5)
    fixed.update_scores([0], [0.0])
    assert fixed.scores.tolist() == [0.0, 0.5, 0.5]


def test_resume_from_state_dict_reproduces_the_stream() -> None:
    original = make(n=13, batch_size=6, seed=3)
    original.update_scores(range(13), [i / 13 for i in range(13)])
    take(original, 7)
    state = original.state_dict()
    expected = take(original, 10)

    restored = make(n=13, batch_size=6, seed=3)
    restored.load_state_dict(state)
    assert take(restored, 10) == expected


def test_mid_pass_iteration_resumes_in_place() -> None:
    a, b = make(n=10, seed=5), make(n=10, seed=5)
    it = iter(a)
    head = [next(it), next(it)]
    assert head + list(iter(a)) == list(b)


def test_same_seed_agrees_and_updates_change_draws() -> None:
    a, b = make(n=30, batch_size=8, seed=9), make(n=30, batch_size=8, seed=9)
    assert take(a, 5) == take(b, 5)
    ref = make(n=30, batch_size=8, seed=9)
    take(ref, 5)
    # score every prompt: with prior=None a lone known score would also be the prior
    update = [100.0] + [0.0] * 29
    a.update_scores(range(30), update)
    b.update_scores(range(30), update)
    after_a, after_b, after_ref = take(a, 5), take(b, 5), take(ref, 5)
    assert after_a == after_b
    assert after_a != after_ref
    assert sum(batch[:4].count(0) for batch in after_a) > 10


@pytest.mark.parametrize("bad", [float("nan"), -0.1, float("inf")])
def test_invalid_scores_are_rejected_naming_the_index(bad: float) -> None:
    sampler = make(n=5)
    with pytest.raises(ValueError, match="prompt 3"):
        sampler.update_scores([1, 3], [0.5, bad])
    assert sampler.scores.tolist() == [1.0] * 5  # nothing written


def test_invalid_indices_and_state_rejected() -> None:
    sampler = make(n=5)
    with pytest.raises(ValueError, match="index 5"):
        sampler.update_scores([5], [0.1])
    with pytest.raises(ValueError, match="2 scores"):
        sampler.update_scores([0], [0.1, 0.2])
    with pytest.raises(ValueError, match="num_prompts=5 in the state but 6 here"):
        make(n=6).load_state_dict(sampler.state_dict())


def test_next_batch_continues_across_passes_like_iteration() -> None:
    config = SamplerConfig(batch_size=4, mix_ratio=0.5, seed=3)
    stepped = MixedVarianceSampler(10, config)
    iterated = MixedVarianceSampler(10, config)
    expected = [b for _ in range(3) for b in iterated]
    assert [stepped.next_batch() for _ in range(len(expected))] == expected


def test_weighted_count_is_exact_for_decimal_ratios() -> None:
    assert math.floor(0.29 * 100) == 28  # the float trap: 0.29 * 100 = 28.999...
    assert SamplerConfig(batch_size=100, mix_ratio=0.29).weighted_per_batch() == 29
    sampler = make(n=300, batch_size=100, mix_ratio=0.29)
    assert (sampler.num_weighted, sampler.num_uniform) == (29, 71)
    for hundredths in range(101):
        for batch_size in range(1, 201):
            config = SamplerConfig(batch_size=batch_size, mix_ratio=hundredths / 100)
            assert config.weighted_per_batch() == hundredths * batch_size // 100, (
                hundredths,
                batch_size,
            )


def _weighted_counts(scores: list[float], floor: float, batches: int, seed: int) -> list[int]:
    """How often each prompt is drawn in ``batches`` all-weighted batches of 100."""
    sampler = make(n=len(scores), batch_size=100, mix_ratio=1.0, floor=floor, seed=seed)
    sampler.update_scores(range(len(scores)), scores)
    counts = Counter(i for _ in range(batches) for i in sampler.next_batch())
    return [counts[i] for i in range(len(scores))]


def _chisquare_p(observed: list[int], weights: list[float]) -> float:
    total = sum(observed)
    expected = [total * w / sum(weights) for w in weights]
    return float(chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_draws_are_proportional_to_score_plus_floor(seed: int) -> None:
    # The module docstring's P(i) = (s_i + floor) / sum_j (s_j + floor), tested on 20k draws.
    scores = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    floor = 0.05
    observed = _weighted_counts(scores, floor, batches=200, seed=seed)
    assert _chisquare_p(observed, [s + floor for s in scores]) > 1e-3
    # Negative controls: the same counts reject a squared weighting and a missing floor.
    assert _chisquare_p(observed, [(s + floor) ** 2 for s in scores]) < 1e-3
    assert _chisquare_p(observed, scores) < 1e-3


def _rank_stream(global_seed: int) -> list[list[int]]:
    """The global batches one rank sees, with its global RNGs seeded ``global_seed``.

    Module level so a spawned process can run it. Every global generator (python,
    numpy, torch) is seeded and consumed differently per rank, so a sampler that
    touched any of them would diverge across ranks.
    """
    random.seed(global_seed)
    np.random.seed(global_seed)
    torch.manual_seed(global_seed)
    random.random()
    np.random.rand(global_seed + 1)
    torch.rand(global_seed + 1)
    sampler = MixedVarianceSampler(23, SamplerConfig(batch_size=8, mix_ratio=0.5, seed=11))
    stream = [batch for _ in range(2) for batch in sampler]
    sampler.update_scores(range(23), [(7 * i % 23) / 23 for i in range(23)])
    torch.manual_seed(global_seed + 100)
    stream += [sampler.next_batch() for _ in range(2 * len(sampler) + 1)]
    sampler.update_scores([3, 5], [2.0, 0.0])
    np.random.seed(global_seed + 200)
    stream += [batch for _ in range(2) for batch in sampler]
    return stream


def test_ranks_with_different_global_rng_agree_on_the_stream() -> None:
    rank0 = _rank_stream(global_seed=1)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        rank1 = pool.apply(_rank_stream, (2,))
    assert len(rank0) == 2 * 6 + 13 + 5 + 6  # 2 passes, 13 steps, rest of the pass, 1 pass
    assert rank1 == rank0
    assert _rank_stream(global_seed=3) == rank0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 8),
        ("mix_ratio", 0.25),
        ("floor", 0.01),
        ("prior", 0.5),
        ("drop_last", True),
        ("seed", 4),
    ],
)
def test_state_from_a_differently_configured_sampler_is_refused(field: str, value: object) -> None:
    settings: dict[str, object] = {"batch_size": 6, "seed": 3}
    original = make(n=13, **settings)
    original.update_scores([0, 1], [0.3, 0.9])
    take(original, 3)
    other = make(n=13, **(settings | {field: value}))
    before = other.state_dict()
    with pytest.raises(ValueError, match=f"{field}=.* in the state but {value!r} here"):
        other.load_state_dict(original.state_dict())
    after = other.state_dict()
    assert torch.equal(after["raw_scores"], before["raw_scores"])  # nothing restored
    assert (after["pass"], after["batch"]) == (before["pass"], before["batch"])


def test_state_records_the_settings_and_older_states_still_load() -> None:
    original = make(n=13, batch_size=6, seed=3, floor=0.01)
    original.update_scores(range(13), [i / 13 for i in range(13)])
    take(original, 4)
    state = original.state_dict()
    assert state["num_prompts"] == 13 and state["seed"] == 3
    assert state["config"] == {
        "batch_size": 6,
        "mix_ratio": 0.5,
        "floor": 0.01,
        "prior": None,
        "drop_last": False,
    }
    expected = take(original, 8)
    del state["config"]  # as written before the settings were recorded
    restored = make(n=13, batch_size=6, seed=3, floor=0.01)
    restored.load_state_dict(state)
    assert take(restored, 8) == expected
