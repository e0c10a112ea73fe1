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

For a reasoning model the final answer is taken first (the project's extractor:
the last ``\\boxed{}``, else the ``<answer>`` block, else the whole response),
with the LaTeX the model wrapped it in removed (``$..$``, ``\\text{}``, ``\\%``
-> ``%``); then the official rule applies unchanged, 5% tolerance included.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmr1.rewards import extract_final_answer
from mmr1.rewards.normalize import strip_math_delimiters, unwrap_text_commands

RELATIVE_TOLERANCE = 0.05


def chartqa_extract(response: str) -> str:
    """The answer the relaxed metric compares: the boxed/``<answer>`` content, else the response."""
    answer = extract_final_answer(response)
    if answer is None:
        return response.strip()
    answer = unwrap_text_commands(strip_math_delimiters(answer))
    return answer.replace("\\%", "%").replace("\\$", "$").strip()


def relaxed_float(text: str) -> float | None:
    """``float(text)``, with a trailing ``%`` meaning /100; None when it does not parse."""
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_match(answer: str, gold: str) -> bool:
    """The official relaxed-accuracy comparison of an already extracted answer."""
    value, target = relaxed_float(answer), relaxed_float(gold)
    if value is not None and target:  # target is not None and not 0
        return abs(value - target) / abs(target) <= RELATIVE_TOLERANCE
    return answer.lower() == gold.lower()


def chartqa_relaxed(prediction: str, gold: str) -> bool:
    """Relaxed accuracy of a model response against one gold answer (rule in the module doc)."""
    return relaxed_match(chartqa_extract(prediction), str(gold))


def chartqa_relaxed_any(prediction: str, golds: Sequence[str]) -> bool:
    """Relaxed accuracy against several gold answers: correct if any gold matches."""
    answer = chartqa_extract(prediction)
    return any(relaxed_match(answer, str(gold)) for gold in golds)
