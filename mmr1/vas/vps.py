"""Variance Promotion Score (docs/METHOD.md section 5, paper section 3).

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
from collections.abc import Sequence

import numpy as np

from mmr1.edit_distance import pairwise_levenshtein
from schemas.registry import TDS_METHODS
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


def _ngram_count_matrices(trajectories: Sequence[Sequence[Token]]) -> list[np.ndarray]:
    """n-gram counts of every trajectory, for n = 1..MAX_ORDER, all counted in one pass.

    Entry ``n - 1`` is an int array of shape (num_trajectories, U_n): column g holds
    how often the g-th distinct n-gram (over all trajectories) occurs in each one.
    Tokens are mapped to dense ids with a dict (so tokens compare exactly as they
    would inside tuples), then an n-gram's id is built from its (n-1)-gram prefix id
    and its last token: ``id_n = unique(id_{n-1} * V + token)``. n-grams never span
    two trajectories. Memory is O(num_trajectories * total tokens) per order.
    """
    lengths = np.array([len(seq) for seq in trajectories], dtype=np.int64)
    vocabulary: dict[Token, int] = {}
    tokens = np.array(
        [vocabulary.setdefault(token, len(vocabulary)) for seq in trajectories for token in seq],
        dtype=np.int64,
    )
    num = len(trajectories)
    owner = np.repeat(np.arange(num), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    # Tokens left in its trajectory from each position on (itself included).
    remaining = lengths[owner] - (np.arange(tokens.size) - starts[owner])
    matrices = []
    gram_ids = tokens
    for n in range(1, MAX_ORDER + 1):
        positions = np.flatnonzero(remaining >= n)
        if n == 1:
            keys = tokens
        else:
            keys = gram_ids[positions] * max(len(vocabulary), 1) + tokens[positions + n - 1]
        distinct, dense = np.unique(keys, return_inverse=True)
        gram_ids = np.zeros(tokens.size, dtype=np.int64)
        gram_ids[positions] = dense
        flat = owner[positions] * distinct.size + dense
        counts = np.bincount(flat, minlength=num * distinct.size)
        matrices.append(counts.reshape(num, distinct.size))
    return matrices


def _self_bleu_diversity(trajectories: Sequence[Sequence[Token]]) -> float:
    """``1 - mean_i BLEU(y_i; {y_j : j != i})``.

    Sentence BLEU of a hypothesis y_i against references {y_j : j != i}, orders
    1..3, uniform weights:

    p_n = max(clipped_n, BLEU_EPSILON) / total_n, where
    clipped_n = sum_g min(count_hyp(g), max_ref count_ref(g)) over the hypothesis n-grams g
    and total_n is the number of hypothesis n-grams. Orders longer than the hypothesis
    are left out and the uniform weights renormalised over the remaining orders.
    BLEU = BP * exp(mean_n log p_n), BP = 1 if c > r else exp(1 - r / c), with c the
    hypothesis length and r the closest reference length (ties: the shorter).
    An empty hypothesis scores 1 if some reference is empty, else 0.

    The n-grams are counted once per trajectory (``_ngram_count_matrices``); the
    maximum reference count excluding y_i is the largest count over all
    trajectories, or the second largest where y_i holds the largest.
    """
    num = len(trajectories)
    clipped_by_order = []
    for counts in _ngram_count_matrices(trajectories):
        ranked = np.sort(counts, axis=0)
        holds_top = counts.argmax(axis=0)[None, :] == np.arange(num)[:, None]
        best_other = np.where(holds_top, ranked[-2], ranked[-1])
        clipped_by_order.append(np.minimum(counts, best_other).sum(axis=1).tolist())
    lengths = [len(seq) for seq in trajectories]
    bleus = []
    for i, c in enumerate(lengths):
        reference_lengths = lengths[:i] + lengths[i + 1 :]
        if c == 0:
            bleus.append(1.0 if 0 in reference_lengths else 0.0)
            continue
        log_precisions = []
        for n in range(1, min(MAX_ORDER, c) + 1):
            clipped = clipped_by_order[n - 1][i]
            total = c - n + 1
            log_precisions.append(math.log(max(clipped, BLEU_EPSILON) / total))
        r = min(reference_lengths, key=lambda length: (abs(length - c), length))
        brevity = 1.0 if c > r else math.exp(1.0 - r / c)
        bleus.append(brevity * math.exp(sum(log_precisions) / len(log_precisions)))
    return 1.0 - sum(bleus) / len(bleus)


def _distinct_n(trajectories: Sequence[Sequence[Token]]) -> float:
    """``mean_n unique_n / total_n`` for n = 1..3, n-grams pooled over all trajectories.

    Orders with no n-gram at all are left out; 0 if no trajectory has a token.
    """
    ratios = []
    for counts in _ngram_count_matrices(trajectories):
        total = int(counts.sum())
        if total:
            ratios.append(counts.shape[1] / total)
    return sum(ratios) / len(ratios) if ratios else 0.0


def _edit_diversity(trajectories: Sequence[Sequence[Token]]) -> float:
    """Mean over pairs i < j of ``lev(y_i, y_j) / max(|y_i|, |y_j|)`` (0 for two empties).

    ``lev`` is :func:`mmr1.edit_distance.pairwise_levenshtein` (rapidfuzz).
    """
    lengths = [len(seq) for seq in trajectories]
    pairs = [(i, j) for i in range(len(lengths)) for j in range(i + 1, len(lengths))]
    distances = [
        distance / max(lengths[i], lengths[j]) if max(lengths[i], lengths[j]) else 0.0
        for (i, j), distance in zip(pairs, pairwise_levenshtein(trajectories), strict=True)
    ]
    return sum(distances) / len(distances)


# The methods configs can name (``tds_method``): TDS_METHODS, ``schemas.registry``.
TDS_METHODS.register("self_bleu")(_self_bleu_diversity)
TDS_METHODS.register("distinct")(_distinct_n)
TDS_METHODS.register("edit")(_edit_diversity)


def trajectory_diversity(
    trajectories: Sequence[Sequence[Token]], method: str = "self_bleu"
) -> float:
    """Trajectory diversity score in [0, 1] of one prompt's rollouts.

    ``trajectories`` are unpadded token-id or word sequences. Methods:

    - ``self_bleu``: ``1 - mean_i BLEU(y_i; others)``, BLEU over 1..3-grams with
      uniform weights, clipped counts (max over references), closest-length brevity
      penalty and epsilon smoothing (see ``_self_bleu_diversity``). Identical rollouts
      give 0.
    - ``distinct``: distinct-n ratio, unique / total n-grams pooled over the rollouts,
      averaged over n = 1..3.
    - ``edit``: ``mean_{i<j} lev(y_i, y_j) / max(|y_i|, |y_j|)``, the Levenshtein
      distance normalised by the longer length. Identical rollouts give 0.

    Fewer than two trajectories give 0.0. The result is clamped to [0, 1].
    """
    diversity = TDS_METHODS[method]  # ValueError naming the known methods
    if len(trajectories) < 2:
        return 0.0
    value = diversity([list(t) for t in trajectories])
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

    ``p = mean(accuracies)`` over the binary accuracies (``outcome_variance``) and
    ``TDS = trajectory_diversity(trajectories, tds_method)`` on unpadded sequences.
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
