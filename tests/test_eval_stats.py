"""Intervals and paired tests of evaluation results: hand-checked values and scipy."""

from __future__ import annotations

import random

import pytest
from scipy import special
from scipy import stats as scipy_stats

from mmr1.eval.significance import ItemOutcomes, paired_test, summarize
from mmr1.eval.stats import (
    mcnemar_exact,
    mean_interval,
    paired_t_test,
    regularized_beta,
    student_t_cdf,
    student_t_quantile,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 5, 2 / 2**5),  # 0.0625
        (5, 0, 0.0625),
        (1, 9, 2 * (1 + 10) / 2**10),  # 0.021484375
        (2, 8, 2 * (1 + 10 + 45) / 2**10),  # 0.109375
        (0, 0, 1.0),  # no discordant pairs
        (3, 3, 1.0),  # 2 * P(X <= 3 | n=6) = 2 * 42/64 > 1: capped
        (4, 2, 2 * (1 + 6 + 15) / 2**6),  # 0.6875
    ],
)
def test_mcnemar_exact_on_hand_checked_tables(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_exact_is_the_two_sided_binomial_test_of_the_discordant_pairs() -> None:
    for b, c in [(0, 1), (7, 19), (40, 61), (300, 260)]:
        expected = scipy_stats.binomtest(b, b + c, 0.5).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="discordant"):
        mcnemar_exact(-1, 3)


@pytest.mark.parametrize(
    ("successes", "n", "interval"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table II, method 3 (score, no correction).
    [
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, n: int, interval: tuple[float, float]
) -> None:
    low, high = wilson_interval(successes, n)
    assert (round(low, 4), round(high, 4)) == interval


def test_wilson_interval_formula_and_edges() -> None:
    # 8/10, z = 1.96: centre (0.8 + 0.19208) / 1.38416, half 1.96 / 1.38416 * sqrt(0.016 + 0.009604)
    low, high = wilson_interval(8, 10, z=1.96)
    centre, half = 0.99208 / 1.38416, 1.96 / 1.38416 * (0.025604**0.5)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(50, 50)
    assert high == 1.0 and 0.92 < low < 0.93
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_t_distribution_matches_scipy() -> None:
    for df in (1, 2, 7, 99, 499, 5000):
        for p in (0.5, 0.9, 0.975, 0.9995):
            assert student_t_quantile(p, df) == pytest.approx(
                scipy_stats.t.ppf(p, df), rel=1e-9, abs=1e-12
            )
        for t in (-4.0, -0.3, 0.0, 1.7, 6.0):
            assert student_t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-9)
    for x, a, b in [(0.2, 0.5, 0.5), (0.7, 3.0, 0.5), (0.999, 250.0, 0.5), (0.01, 2.0, 9.0)]:
        assert regularized_beta(x, a, b) == pytest.approx(special.betainc(a, b, x), rel=1e-10)


def _sampled(rng: random.Random, n: int, k: int, shift: float) -> list[float]:
    return [sum(rng.random() < min(1.0, q + shift) for _ in range(k)) / k for q in [0.5] * n]


def test_mean_interval_is_the_t_interval_clipped_to_0_1() -> None:
    rng = random.Random(0)
    values = _sampled(rng, 40, 8, 0.0)
    mean = sum(values) / len(values)
    expected = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=mean, scale=scipy_stats.sem(values)
    )
    assert mean_interval(values) == pytest.approx(expected, rel=1e-9)
    assert mean_interval([1.0, 1.0, 0.875]) is not None
    assert mean_interval([1.0, 1.0, 0.875])[1] == 1.0  # clipped
    assert mean_interval([0.5]) is None


def test_paired_t_test_matches_scipy_ttest_rel() -> None:
    rng = random.Random(1)
    for n, shift in ((30, 0.0), (200, 0.05), (500, 0.1)):
        first, second = _sampled(rng, n, 8, shift), _sampled(rng, n, 8, 0.0)
        expected = scipy_stats.ttest_rel(first, second).pvalue
        assert paired_t_test(first, second) == pytest.approx(expected, rel=1e-8)
    # Constant differences: no spread, p is 1 when they are all zero, else 0.
    assert paired_t_test([0.5, 0.25], [0.5, 0.25]) == 1.0
    assert paired_t_test([0.5, 0.75], [0.25, 0.5]) == 0.0
    assert paired_t_test([0.5], [0.25]) is None
    with pytest.raises(ValueError, match="length"):
        paired_t_test([0.5, 0.5], [0.5])


def test_paired_test_matches_items_by_id_and_says_when_they_differ() -> None:
    base = ItemOutcomes(["a", "b", "c", "d"], [True, False, False, True], [0.5, 0.0, 0.25, 1.0], 4)
    # Reordered, one item ("d") missing and one extra ("e"): 3 items in common.
    model = ItemOutcomes(["c", "a", "b", "e"], [True, False, True, True], [0.75, 0.5, 0.5, 1.0], 4)
    test = paired_test(model, base)
    assert test.n_paired == 3
    assert (test.baseline_only, test.model_only) == (1, 2)  # a lost; b and c gained
    assert test.p_value == pytest.approx(mcnemar_exact(1, 2))
    expected = scipy_stats.ttest_rel([0.75, 0.5, 0.5], [0.25, 0.5, 0.0]).pvalue
    assert test.sampled_p_value == pytest.approx(expected, rel=1e-9)
    assert test.note is not None and "items differ: 3 in common" in test.note
    same = paired_test(base, base)
    assert (same.p_value, same.sampled_p_value, same.note) == (1.0, 1.0, None)
    greedy_only = ItemOutcomes(["a", "b", "c", "d"], [True] * 4, None, 0)
    assert paired_test(greedy_only, base).sampled_p_value is None
    disjoint = paired_test(ItemOutcomes(["x"], [True], None, 0), base)
    assert disjoint.p_value is None and disjoint.note == "no items in common with the baseline"


def test_summarize_gives_both_accuracies_and_their_intervals() -> None:
    outcomes = ItemOutcomes(
        ["a", "b", "c", "d"], [True, True, False, True], [1.0, 0.5, 0.0, 0.75], 4
    )
    summary = summarize(outcomes)
    assert summary["item_accuracy"] == 0.75 and summary["sampled_k"] == 4.0
    lo, hi = wilson_interval(3, 4)
    assert (summary["accuracy_ci95_lo"], summary["accuracy_ci95_hi"]) == (lo, hi)
    assert summary["sampled_accuracy"] == pytest.approx(0.5625)
    lo, hi = mean_interval([1.0, 0.5, 0.0, 0.75])
    assert summary["sampled_accuracy_ci95_lo"] == lo and summary["sampled_accuracy_ci95_hi"] == hi
    greedy = summarize(ItemOutcomes(["a"], [False], None, 0))
    assert greedy["sampled_k"] == 0.0 and "sampled_accuracy" not in greedy
