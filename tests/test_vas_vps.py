"""Variance Promotion Score maths (mmr1/vas/vps.py) on hand-computed values."""

from __future__ import annotations

import pytest

from mmr1.vas.vps import outcome_variance, trajectory_diversity, variance_promotion_score
from schemas.presets import load_config
from schemas.vas import VPSEstimateConfig, VPSRecord


def test_outcome_variance_peaks_at_half() -> None:
    assert outcome_variance([1, 0, 1, 0]) == pytest.approx(0.25)
    assert outcome_variance([1, 0], scale=4.0) == pytest.approx(1.0)
    assert outcome_variance([1, 1, 1, 0]) == pytest.approx(0.1875)


@pytest.mark.parametrize("accuracies", [[1, 1, 1], [0, 0], [True, True]])
def test_outcome_variance_zero_when_all_same(accuracies: list[float]) -> None:
    assert outcome_variance(accuracies, scale=4.0) == 0.0


def test_outcome_variance_rejects_empty_and_partial_credit() -> None:
    with pytest.raises(ValueError, match="at least one"):
        outcome_variance([])
    with pytest.raises(ValueError, match="accuracy 1"):
        outcome_variance([1, 0.5])


@pytest.mark.parametrize("method", ["self_bleu", "edit"])
def test_identical_trajectories_have_zero_diversity(method: str) -> None:
    same = [[5, 6, 7, 8, 9]] * 4
    assert trajectory_diversity(same, method) == 0.0
    assert trajectory_diversity([[], []], method) == 0.0


def test_self_bleu_disjoint_is_close_to_one() -> None:
    disjoint = [list(range(k * 10, k * 10 + 10)) for k in range(4)]
    assert trajectory_diversity(disjoint) > 0.95


def test_self_bleu_hand_computed() -> None:
    # p1 = 2/3, p2 = 1/2, p3 = epsilon 0.1 / 1, BP = 1 (equal lengths), symmetric pair.
    value = trajectory_diversity([["a", "b", "c"], ["a", "b", "d"]])
    assert value == pytest.approx(1 - (2 / 3 * 1 / 2 * 0.1) ** (1 / 3))


def test_self_bleu_is_monotone_in_diversity() -> None:
    base = list("the cat sat on the mat today".split())
    low = [base, base[:-1] + ["now"], base[:-2] + ["a", "rug"]]
    high = [base, "a dog ran in the park yesterday".split(), "birds fly south every winter".split()]
    assert 0.0 < trajectory_diversity(low) < trajectory_diversity(high) <= 1.0


def test_distinct_hand_computed() -> None:
    # unigrams 4/6, bigrams 3/4 (ab repeats), trigrams 2/2.
    value = trajectory_diversity([["a", "b", "c"], ["a", "b", "d"]], "distinct")
    assert value == pytest.approx((4 / 6 + 3 / 4 + 1) / 3)


def test_edit_hand_computed() -> None:
    assert trajectory_diversity([list("kitten"), list("sitting")], "edit") == pytest.approx(3 / 7)
    # pairs: (ab, ac) 1/2, (ab, xyz) 3/3, (ac, xyz) 3/3
    value = trajectory_diversity([[1, 2], [1, 3], [7, 8, 9]], "edit")
    assert value == pytest.approx((0.5 + 1 + 1) / 3)


@pytest.mark.parametrize("method", ["self_bleu", "distinct", "edit"])
def test_fewer_than_two_trajectories_give_zero(method: str) -> None:
    assert trajectory_diversity([], method) == 0.0
    assert trajectory_diversity([[1, 2, 3]], method) == 0.0


def test_unknown_method_lists_methods() -> None:
    with pytest.raises(ValueError, match="unknown trajectory diversity method 'rouge'; known: "
                       "self_bleu, distinct, edit"):  # fmt: skip
        trajectory_diversity([[1], [2]], "rouge")


def test_vps_combination_hand_computed() -> None:
    record = variance_promotion_score([1, 0, 1, 0], [[1, 2, 3]] * 4)
    assert isinstance(record, VPSRecord)
    assert (record.pass_rate, record.ovs, record.tds) == (0.5, 1.0, 0.0)
    assert record.vps == pytest.approx(0.8)

    # p = 0.75 -> OVS = 4 * 0.1875 = 0.75; edit TDS = 1/2; VPS = 0.8*0.75 + 0.2*0.5 = 0.7
    record = variance_promotion_score([1, 1, 1, 0], [[1, 2], [1, 3]], tds_method="edit")
    assert record.ovs == pytest.approx(0.75)
    assert record.tds == pytest.approx(0.5)
    assert record.vps == pytest.approx(0.7)

    # one-token disjoint pair: BLEU = epsilon 0.1, so TDS = 0.9; raw OVS = 0.25
    raw = variance_promotion_score([1, 0], [[1], [2]], alpha=0.5, beta=0.5, ovs_scale=1.0)
    assert raw.tds == pytest.approx(0.9)
    assert raw.vps == pytest.approx(0.5 * 0.25 + 0.5 * 0.9)


def test_vps_record_is_frozen() -> None:
    record = variance_promotion_score([1, 0], [[1], [2]])
    with pytest.raises(ValueError):
        record.vps = 0.0  # type: ignore[misc]


def test_paper_preset_uses_the_raw_outcome_variance() -> None:
    score = load_config(VPSEstimateConfig, "vps-paper-7b").score
    assert (score.alpha, score.beta, score.ovs_scale) == (0.8, 0.2, 1.0)
    record = variance_promotion_score(
        [1, 0, 1, 0], [[1, 2, 3]] * 4, score.alpha, score.beta, score.ovs_scale
    )
    assert record.ovs == pytest.approx(0.25)  # p(1 - p) at p = 0.5, as in the paper
    assert record.vps == pytest.approx(0.8 * 0.25)
