"""The fast TDS internals of mmr1/vas/vps.py against plain readable implementations.

vps.py counts n-grams once per trajectory with numpy and takes Levenshtein
distances from rapidfuzz (mmr1.edit_distance); the references below are the
textbook forms (Counter of n-gram tuples per hypothesis/reference pair, the
O(|a| |b|) table). They must agree exactly, not approximately.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

import pytest

from mmr1.edit_distance import dense_ids, levenshtein, pairwise_levenshtein
from mmr1.vas import vps

Token = int | str


def ngrams(seq: Sequence[Token], n: int) -> Counter[tuple[Token, ...]]:
    return Counter(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))


def reference_bleu(hypothesis: Sequence[Token], references: Sequence[Sequence[Token]]) -> float:
    c = len(hypothesis)
    if c == 0:
        return 1.0 if any(len(r) == 0 for r in references) else 0.0
    log_precisions = []
    for n in range(1, min(3, c) + 1):
        max_ref: Counter[tuple[Token, ...]] = Counter()
        for ref in references:
            for gram, count in ngrams(ref, n).items():
                max_ref[gram] = max(max_ref[gram], count)
        clipped = sum(min(count, max_ref[gram]) for gram, count in ngrams(hypothesis, n).items())
        log_precisions.append(math.log(max(clipped, 0.1) / (c - n + 1)))
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    brevity = 1.0 if c > r else math.exp(1.0 - r / c)
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))


def reference_self_bleu(trajectories: list[list[Token]]) -> float:
    bleus = [
        reference_bleu(hyp, [ref for j, ref in enumerate(trajectories) if j != i])
        for i, hyp in enumerate(trajectories)
    ]
    return 1.0 - sum(bleus) / len(bleus)


def reference_distinct(trajectories: list[list[Token]]) -> float:
    ratios = []
    for n in range(1, 4):
        pooled: Counter[tuple[Token, ...]] = Counter()
        for seq in trajectories:
            pooled.update(ngrams(seq, n))
        total = sum(pooled.values())
        if total:
            ratios.append(len(pooled) / total)
    return sum(ratios) / len(ratios) if ratios else 0.0


def reference_levenshtein(a: Sequence[Token], b: Sequence[Token]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def random_trajectories(rng: random.Random, max_length: int) -> list[list[Token]]:
    """2..8 rollouts over a small vocabulary (so n-grams repeat), some empty or very short."""
    vocabulary: list[Token] = (
        list(range(rng.randint(1, 6))) if rng.random() < 0.7 else ["a", "b", "c", "the", "x"]
    )
    base = [rng.choice(vocabulary) for _ in range(max_length)]
    out = []
    for _ in range(rng.randint(2, 8)):
        length = rng.choice([0, 1, 2, rng.randint(0, max_length)])
        if rng.random() < 0.4:  # a near-copy of a shared prefix, as rollouts of one prompt are
            seq = base[:length]
            out.append([t if rng.random() > 0.1 else rng.choice(vocabulary) for t in seq])
        else:
            out.append([rng.choice(vocabulary) for _ in range(length)])
    return out


@pytest.mark.parametrize("seed", range(8))
def test_self_bleu_and_distinct_equal_reference(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        trajectories = random_trajectories(rng, max_length=rng.choice([4, 12, 40]))
        assert vps._self_bleu_diversity(trajectories) == reference_self_bleu(trajectories)
        assert vps._distinct_n(trajectories) == reference_distinct(trajectories)


@pytest.mark.parametrize("seed", range(8))
def test_levenshtein_equals_table(seed: int) -> None:
    rng = random.Random(100 + seed)
    for _ in range(60):
        vocabulary = range(rng.randint(1, 5))
        # Lengths past 64 and 128 so the bit vectors span several machine words.
        a = [rng.choice(vocabulary) for _ in range(rng.choice([0, 1, 3, 70, 150]))]
        b = [rng.choice(vocabulary) for _ in range(rng.choice([0, 1, 5, 65, 140]))]
        assert levenshtein(a, b) == reference_levenshtein(a, b)
        assert levenshtein(b, a) == reference_levenshtein(a, b)
        text_a, text_b = "".join(map(str, a)), "".join(map(str, b))
        assert levenshtein(text_a, text_b) == reference_levenshtein(text_a, text_b)


def test_levenshtein_compares_tokens_by_equality_not_by_hash() -> None:
    # hash(-1) == hash(-2) and hash(2**61 - 1) == hash(0): still different tokens.
    assert hash(-1) == hash(-2) and hash(2**61 - 1) == hash(0)
    assert levenshtein([-1, 5], [-2, 5]) == 1
    assert levenshtein([2**61 - 1], [0]) == 1
    assert pairwise_levenshtein([[-1], [-2], [-1]]) == [1, 0, 1]
    # Equal as dict keys means equal tokens, as in the table (1 == 1.0 == True).
    assert levenshtein([1, "the"], [1.0, "the"]) == reference_levenshtein([1, "the"], [1.0, "the"])
    assert levenshtein(["the", "cat"], ["the", "hat"]) == 1
    assert dense_ids([[7, "a"], ["a", 9]]) == [[0, 1], [1, 2]]


def test_pairwise_levenshtein_order_and_edit_normalisation() -> None:
    rollouts: list[list[Token]] = [[1, 2, 3], [1, 3], [], [4, 5, 6, 7]]
    expected = [
        reference_levenshtein(rollouts[i], rollouts[j]) for i in range(4) for j in range(i + 1, 4)
    ]
    assert pairwise_levenshtein(rollouts) == expected == [1, 3, 4, 2, 4, 4]
    # edit TDS: mean of lev / longer length over the 6 pairs; () vs () would be 0.
    normalised = [1 / 3, 3 / 3, 4 / 4, 2 / 2, 4 / 4, 4 / 4]
    assert vps.trajectory_diversity(rollouts, "edit") == sum(normalised) / 6
    assert vps.trajectory_diversity([[], []], "edit") == 0.0


def test_public_scores_equal_reference_on_long_rollouts() -> None:
    rng = random.Random(7)
    base = [rng.randrange(50) for _ in range(300)]
    rollouts: list[list[Token]] = [
        [t if rng.random() > 0.2 else rng.randrange(50) for t in base[: rng.randint(200, 300)]]
        for _ in range(5)
    ]
    assert vps.trajectory_diversity(rollouts) == reference_self_bleu(rollouts)
    assert vps.trajectory_diversity(rollouts, "distinct") == reference_distinct(rollouts)
    pairs = [
        reference_levenshtein(rollouts[i], rollouts[j]) / max(len(rollouts[i]), len(rollouts[j]))
        for i in range(5)
        for j in range(i + 1, 5)
    ]
    assert vps.trajectory_diversity(rollouts, "edit") == sum(pairs) / len(pairs)
