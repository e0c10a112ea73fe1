"""ChartQA's official metric, relaxed accuracy, applied to a reasoning model's final answer.

Official rule (Masry et al., 2022, as in the reference implementation): parse the
prediction and the gold as floats, where a trailing ``%`` divides by 100. If
both parse and the gold is non-zero, the prediction is correct iff
``|pred - gold| / |gold| <= 0.05`` (inclusive). Otherwise the two strings must be
equal ignoring case, with no other normalisation: ``1,000`` and ``$12`` do not
parse as floats and fall back to the string comparison. A question with several
gold answers is correct when any gold matches (max over golds); the benchmark
score is the mean over the 2500 test questions, i.e. the mean of the human and
augmented halves (1250 each).

Exact arithmetic. The reference computes the tolerance in binary floats, where
``|1.05 - 1| / 1`` is ``0.050000000000000044``, so the documented inclusive
boundary is missed for ``1.05``/``0.95`` against ``1`` (and ``0.76`` against
``0.8``). We read the number exactly from its text (:class:`~decimal.Decimal`,
then :class:`~fractions.Fraction`; a ``%`` divides by exactly 100) and test
``|pred - gold| <= |gold| / 20``, so both boundaries are inclusive. What counts as
a number is what ``float()`` accepts (``" 12 "``, ``"1e3"``, ``"-0.5"``, ``".5"``,
``"1_000"``), so no answer changes class between "number" and "string"; a
value a float rounds to 0 is 0 (``1e-999``), as in the reference. ``float()``
also reads ``inf``/``nan``/``infinity``: such an answer or gold is never
correct, which is what the reference's float arithmetic yields (``inf - inf``
and every comparison with ``nan`` fail).

For a reasoning model the final answer is taken first: the last ``\\boxed{}``,
else the ``<answer>`` block (the project's extractor), else the text after the
last "the answer is" / "Answer:" phrase, else the whole response; the LaTeX the
model wrapped it in is removed (``$..$``, ``\\text{}``, ``\\%`` -> ``%``). Then
the official rule applies unchanged, 5% tolerance included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from mmr1.eval.scoring.text import answer_phrase
from mmr1.rewards import extract_final_answer
from mmr1.rewards.normalize import strip_math_delimiters, unwrap_text_commands

#: The official 5% relative tolerance, as an exact fraction.
RELATIVE_TOLERANCE = Fraction(1, 20)


class _NotFinite:
    """Marker for a text ``float()`` reads as infinite or NaN."""


NOT_FINITE = _NotFinite()


def chartqa_extract(response: str) -> str:
    """The answer the relaxed metric compares (extraction order in the module doc)."""
    answer = extract_final_answer(response)
    if answer is None:
        answer = answer_phrase(response)
    if answer is None:
        return response.strip()
    answer = unwrap_text_commands(strip_math_delimiters(answer))
    return answer.replace("\\%", "%").replace("\\$", "$").strip()


def relaxed_number(text: str) -> Fraction | _NotFinite | None:
    """The exact value of ``text`` (trailing ``%`` = /100), :data:`NOT_FINITE`, or None.

    None when ``float()`` would not parse it (the official "not a number" case).
    """
    percent = text.endswith("%")
    body = text[:-1] if percent else text
    try:
        approximate = float(body)
    except ValueError:
        return None
    if not math.isfinite(approximate):
        return NOT_FINITE
    try:
        # A value that underflows to 0.0 as a float is 0, as in the reference.
        value = Fraction(Decimal(body)) if approximate else Fraction(0)
    except InvalidOperation:  # a form float() reads and Decimal() does not
        value = Fraction(approximate)
    return value / 100 if percent else value


def relaxed_match(answer: str, gold: str) -> bool:
    """The official relaxed-accuracy comparison of an already extracted answer."""
    value, target = relaxed_number(answer), relaxed_number(gold)
    if value is NOT_FINITE or target is NOT_FINITE:
        return False
    if isinstance(value, Fraction) and isinstance(target, Fraction) and target != 0:
        return abs(value - target) <= RELATIVE_TOLERANCE * abs(target)
    return answer.lower() == gold.lower()


def chartqa_relaxed(prediction: str, gold: str) -> bool:
    """Relaxed accuracy of a model response against one gold answer (rule in the module doc)."""
    return relaxed_match(chartqa_extract(prediction), str(gold))


def chartqa_relaxed_any(prediction: str, golds: Sequence[str]) -> bool:
    """Relaxed accuracy against several gold answers: correct if any gold matches."""
    answer = chartqa_extract(prediction)
    return any(relaxed_match(answer, str(gold)) for gold in golds)
