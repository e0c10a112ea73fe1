"""Variance Promotion Score (METHOD.md section 5, paper section 3).

For a prompt with N rollouts y_1..y_N and binary accuracies a_i:

    p   = mean(a_i)
    OVS = ovs_scale * p (1 - p)          (Bernoulli variance; ovs_scale=4 maps it to [0, 1])
    TDS = diversity(y_1..y_N) in [0, 1]  (default 1 - mean self-BLEU)
    VPS = alpha * OVS + beta * TDS

Unlike the released code, OVS uses the *binary* accuracy (not the partial-credit
reward), TDS is a diversity (1 - self-BLEU, not the similarity itself) and it is
computed on unpadded sequences, so padding cannot make short answers look alike.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from schemas.vas import VPSRecord

Token = int | str

MAX_ORDER = 3
"""n-grams of order 1..MAX_ORDER enter self-BLEU and distinct-n."""

BLEU_EPSILON = 0.1
"""Smoothing: a zero clipped count of order n becomes BLEU_EPSILON (Chen & Cherry method 1)."""


def outcome_variance(accuracies: Sequence[float], scale: float = 1.0) -> float:
    """Outcome variance score ``scale * p (1 - p)`` with ``p = mean(accuracies)``.

    ``accuracies`` are binary (0/1 or bools), one per rollout. The maximum is
    ``scale / 4`` at ``p = 0.5``; all-correct or all-wrong groups score 0 (the
    gradient-vanishing case of GRPO).
    """
    if len(accuracies) == 0:
        raise ValueError("outcome_variance needs at least one accuracy, got none")
    for i, a in enumerate(accuracies):
        if a not in (0, 1):
            raise ValueError(f"accuracy {i} is {a!r}; OVS uses binary (0/1) accuracy only")
    p = sum(float(a) for a in accuracies) / len(accuracies)
    return scale * p * (1.0 - p)


def _ngrams(seq: Sequence[Token], n: int) -> Counter[tuple[Token, ...]]:
    return Counter(tuple(seq[i : i + n]) for i in range(len(seq) - n + 1))


def _bleu(hypothesis: Sequence[Token], references: Sequence[Sequence[Token]]) -> float:
    """Sentence BLEU of ``hypothesis`` against ``references``, orders 1..3, uniform weights.

    p_n = max(clipped_n, BLEU_EPSILON) / total_n, where
    clipped_n = sum_g min(count_hyp(g), max_ref count_ref(g)) over the hypothesis n-grams g
    and total_n is the number of hypothesis n-grams. Orders longer than the hypothesis
    are left out and the uniform weights renormalised over the remaining orders.
    BLEU = BP * exp(mean_n log p_n), BP = 1 if c > r else exp(1 - r / c), with c the
    hypothesis length and r the closest reference length (ties: the shorter).
    An empty hypothesis scores 1 if some reference is empty, else 0.
    """
    c = len(hypothesis)
    if c == 0:
        return 1.0 if any(len(r) == 0 for r in references) else 0.0
    log_precisions = []
    for n in range(1, min(MAX_ORDER, c) + 1):
        hyp_counts = _ngrams(hypothesis, n)
        max_ref: Counter[tuple[Token, ...]] = Counter()
        for ref in references:
            for gram, count in _ngrams(ref, n).items():
                max_ref[gram] = max(max_ref[gram], count)
        clipped = sum(min(count, max_ref[gram]) for gram, count in hyp_counts.items())
        total = c - n + 1
        log_precisions.append(math.log(max(clipped, BLEU_EPSILON) / total))
    r = min((len(ref) for ref in references), key=lambda length: (abs(length - c), length))
    brevity = 1.0 if c > r else math.exp(1.0 - r / c)
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))


def _self_bleu_diversity(trajectories: Sequence[Sequence[Token]]) -> float:
    """``1 - mean_i BLEU(y_i; {y_j : j != i})``."""
    bleus = [
        _bleu(hyp, [ref for j, ref in enumerate(trajectories) if j != i])
        for i, hyp in enumerate(trajectories)
    ]
    return 1.0 - sum(bleus) / len(bleus)


def _distinct_n(trajectories: Sequence[Sequence[Token]]) -> float:
    """``mean_n unique_n / total_n`` for n = 1..3, n-grams pooled over all trajectories.

    Orders with no n-gram at all are left out; 0 if no trajectory has a token.
    """
    ratios = []
    for n in range(1, MAX_ORDER + 1):
        pooled: Counter[tuple[Token, ...]] = Counter()
        for seq in trajectories:
            pooled.update(_ngrams(seq, n))
        total = sum(pooled.values())
        if total:
            ratios.append(len(pooled) / total)
    return sum(ratios) / len(ratios) if ratios else 0.0


def _levenshtein(a: Sequence[Token], b: Sequence[Token]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _edit_diversity(trajectories: Sequence[Sequence[Token]]) -> float:
    """Mean over pairs i < j of ``lev(y_i, y_j) / max(|y_i|, |y_j|)`` (0 for two empties)."""
    distances = []
    for i in range(len(trajectories)):
        for j in range(i + 1, len(trajectories)):
            a, b = trajectories[i], trajectories[j]
            longer = max(len(a), len(b))
            distances.append(_levenshtein(a, b) / longer if longer else 0.0)
    return sum(distances) / len(distances)


_DIVERSITY_METHODS = {
    "self_bleu": _self_bleu_diversity,
    "distinct": _distinct_n,
    "edit": _edit_diversity,
}


def trajectory_diversity(
    trajectories: Sequence[Sequence[Token]], method: str = "self_bleu"
) -> float:
    """Trajectory diversity score in [0, 1] of one prompt's rollouts.

    ``trajectories`` are unpadded token-id or word sequences. Methods:

    - ``self_bleu``: ``1 - mean_i BLEU(y_i; others)``, BLEU over 1..3-grams with
      uniform weights, clipped counts (max over references), closest-length brevity
      penalty and epsilon smoothing (see ``_bleu``). Identical rollouts give 0.
    - ``distinct``: distinct-n ratio, unique / total n-grams pooled over the rollouts,
      averaged over n = 1..3.
    - ``edit``: mean pairwise Levenshtein distance normalised by the longer length.
      Identical rollouts give 0.

    Fewer than two trajectories give 0.0. The result is clamped to [0, 1].
    """
    if method not in _DIVERSITY_METHODS:
        raise ValueError(
            f"unknown diversity method {method!r}; choose one of {sorted(_DIVERSITY_METHODS)}"
        )
    if len(trajectories) < 2:
        return 0.0
    value = _DIVERSITY_METHODS[method]([list(t) for t in trajectories])
    return min(1.0, max(0.0, value))


def variance_promotion_score(
    accuracies: Sequence[float],
    trajectories: Sequence[Sequence[Token]],
    alpha: float = 0.8,
    beta: float = 0.2,
    ovs_scale: float = 4.0,
    tds_method: str = "self_bleu",
) -> VPSRecord:
    """``VPS = alpha * ovs_scale * p(1 - p) + beta * TDS`` for one prompt.

    Paper main text: alpha = 0.8, beta = 0.2 and the raw OVS (``ovs_scale=1``); the
    default ``ovs_scale=4`` puts OVS in [0, 1] like TDS so alpha and beta weigh
    comparable quantities.
    """
    if alpha < 0 or beta < 0 or ovs_scale <= 0:
        raise ValueError(
            f"need alpha >= 0, beta >= 0, ovs_scale > 0; got {alpha}, {beta}, {ovs_scale}"
        )
    pass_rate = sum(float(a) for a in accuracies) / len(accuracies) if accuracies else 0.0
    ovs = outcome_variance(accuracies, scale=ovs_scale)
    tds = trajectory_diversity(trajectories, method=tds_method)
    return VPSRecord(pass_rate=pass_rate, ovs=ovs, tds=tds, vps=alpha * ovs + beta * tds)
