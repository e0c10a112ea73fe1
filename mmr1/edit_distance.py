"""Levenshtein distance, the one implementation of the project (backed by ``rapidfuzz``).

Two callers: the ``edit`` trajectory diversity of VAS (:mod:`mmr1.vas.vps`, token
sequences of ~1k tokens, all pairs of a prompt's rollouts) and MathVista's
nearest-choice rule (:mod:`mmr1.eval.scoring.text`, short strings).

The distance is the textbook one: the fewest insertions, deletions and
substitutions of one element each (unit costs), ``D[i][j] = min(D[i-1][j] + 1,
D[i][j-1] + 1, D[i-1][j-1] + [a_i != b_j])``. ``rapidfuzz`` computes it with a
bit-parallel algorithm in C++ (Hyyro 2003, blocked beyond 64 elements).

Exactness. ``rapidfuzz`` compares the elements of a non-string sequence by
their Python ``hash`` (``hash(-1) == hash(-2)``, and two words can collide), so
non-string sequences are first mapped to dense integer ids with one dict
shared by the sequences compared together: elements are then equal exactly
when they compare equal as dict keys, as in a pure Python implementation.
Strings are compared by code point, directly.

Cost (``bench/bench_vas.py``: 8 rollouts x ~1k token ids, 28 pairs per prompt,
one core): about 3 ms per prompt, 15k prompts in 31-50 s, against 48 ms
(718 s) for the bit-parallel Python version it replaced, with equal results.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from rapidfuzz.distance import Levenshtein

Tokens = str | Sequence[Hashable]


def dense_ids(sequences: Sequence[Sequence[Hashable]]) -> list[list[int]]:
    """Each sequence with every element replaced by a dense id (one vocabulary for all).

    ``[[7, "a"], ["a", 9]] -> [[0, 1], [1, 2]]``: equal elements (as dict keys)
    get equal ids, different ones different ids.
    """
    vocabulary: dict[Hashable, int] = {}
    return [[vocabulary.setdefault(token, len(vocabulary)) for token in seq] for seq in sequences]


def levenshtein(a: Tokens, b: Tokens) -> int:
    """Levenshtein distance of two strings (by character) or two sequences (by element).

    >>> levenshtein("kitten", "sitting")
    3
    >>> levenshtein([1, 2, 3], [1, 3])
    1
    """
    if isinstance(a, str) and isinstance(b, str):
        return int(Levenshtein.distance(a, b))
    left, right = dense_ids([a, b])
    return int(Levenshtein.distance(left, right))


def pairwise_levenshtein(sequences: Sequence[Tokens]) -> list[int]:
    """Distances of all pairs ``i < j``, in the order (0, 1), (0, 2), ..., (1, 2), ...

    The sequences are mapped to dense ids once (strings too, element by
    element, so strings and token lists may be mixed), then each pair costs one
    ``rapidfuzz`` call. The mapping is about a fifth of the time on token ids;
    skipping it for "safe" ints needs a type and range check that costs about
    as much.
    """
    encoded = dense_ids(sequences)
    return [
        int(Levenshtein.distance(encoded[i], encoded[j]))
        for i in range(len(encoded))
        for j in range(i + 1, len(encoded))
    ]


__all__ = ["dense_ids", "levenshtein", "pairwise_levenshtein"]
