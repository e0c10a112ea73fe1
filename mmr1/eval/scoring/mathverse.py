"""MathVerse scoring: our rule-based default for a protocol that needs an LLM judge.

Official rule (Zhang et al., 2024): optionally keep the last 30 words, let an
LLM extract the answer, then let an LLM judge it 0/1 against the gold given
``question_for_eval``. The official fallback ``quick_match`` is exact string
equality. Overall accuracy over the 3940 testmini rows, which is the mean of the
5 equally sized problem versions; also per version, subject and subfield.

Rule-based default (reported under the scorer name ``rule``): the final answer
is the boxed/``<answer>`` content, else an "answer is" phrase, else the last
line. ``multi-choice`` rows (gold is an option letter) compare letters; when the
question lists its options (``A: 3`` lines after ``Choices``) a prediction that
is an option's text maps to that option's letter. ``free-form`` rows go through
the project's verifier (:func:`mmr1.rewards.is_correct`: normalised text, then
math-verify).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mmr1.eval.scoring.text import final_answer
from mmr1.prompts import CHOICE_LETTERS
from mmr1.rewards import is_correct

_INLINE_OPTION = re.compile(r"^\s*\(?([A-H])\)?\s*[:.)]\s*(.+?)\s*$")


def inline_choices(question: str) -> list[str] | None:
    """Option texts listed after ``Choices`` in a MathVerse question, in letter order."""
    _, found, tail = question.partition("Choices")
    if not found:
        return None
    options: list[str] = []
    for line in tail.splitlines():
        match = _INLINE_OPTION.match(line)
        if match is None:
            continue
        if match.group(1) != CHOICE_LETTERS[len(options)]:
            return None  # not a clean A, B, C... list
        options.append(match.group(2))
    return options or None


def mathverse_extract(response: str) -> str:
    """The final answer the rule-based scorer compares."""
    return final_answer(response)


def mathverse_correct(response: str, row: Mapping[str, Any]) -> bool:
    """Rule-based MathVerse correctness of ``response`` against ``row["answer"]``."""
    prediction = mathverse_extract(response)
    gold = str(row.get("answer", "")).strip()
    if not prediction or not gold:
        return False
    if row.get("question_type") == "multi-choice":
        choices = inline_choices(str(row.get("question") or ""))
        if choices is not None and not (len(gold) == 1 and gold in CHOICE_LETTERS[: len(choices)]):
            choices = None  # the parsed list does not cover the gold letter: letters only
        return is_correct(prediction, gold, choices)
    return is_correct(prediction, gold)
