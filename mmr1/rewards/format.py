"""Format reward and repetition penalty: cheap, pure string functions (docs/METHOD.md section 4).

Format contract (the training prompt asks for it, docs/METHOD.md section 3)::

    [space] <think> reasoning </think> [space] <answer> final answer </answer> [space]

(``[space]``: whitespace only) with exactly one of each tag. Anything else
scores 0: a missing think block, two answers, text after ``</answer>``, text
between the blocks.
"""

from __future__ import annotations

import re

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)


def format_reward(response: str) -> float:
    """1.0 when ``response`` is one think block then one answer block (see module doc), else 0.0."""
    if any(response.count(tag) != 1 for tag in _TAGS):
        return 0.0
    return 1.0 if _FORMAT.fullmatch(response) else 0.0


def repetition_penalty(response: str, n: int = 40) -> float:
    """Penalty for repeated word n-grams, in [-0.5, 0].

    penalty = -0.5 * (1 - unique / total), where total = words - n + 1 is the number
    of word n-grams (whitespace split) and unique the number of distinct ones.
    A response with fewer than ``n`` words has no n-gram and scores 0.0; a
    response that is one n-gram repeated forever tends to -0.5.
    """
    if n < 1:
        raise ValueError(f"repetition_penalty: n must be >= 1, got {n}")
    words = response.split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    # Hashes instead of tuples keep memory flat on degenerate 100k-word responses;
    # a 64-bit collision (under-counting unique) is vanishingly unlikely.
    unique = len({hash(tuple(words[i : i + n])) for i in range(total)})
    return -0.5 * (1.0 - unique / total) + 0.0  # "+ 0.0" turns -0.0 into 0.0
