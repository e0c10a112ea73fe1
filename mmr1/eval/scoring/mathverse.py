"""MathVerse scoring: our rule-based default for a protocol that needs an LLM judge.

Official rule (Zhang et al., 2024): optionally keep the last 30 words, let an
LLM extract the answer, then let an LLM judge it 0/1 against the gold given
``question_for_eval``. The official fallback ``quick_match`` is exact string
equality. Overall accuracy over the 3940 testmini rows, which is the mean of the
5 equally sized problem versions; also per version, subject and subfield.

Rule-based default (reported under the scorer name ``rule``): the final answer
is the boxed/``<answer>`` content, else an "answer is" phrase, else the last
line. ``multi-choice`` rows (gold is an option letter) compare letters; when the
question lists its options after ``Choices`` (one per line, ``A:3``, or inline on
one line, ``A: 3 B: 4 C: 5`` / ``A. 3 B. 4 ...``) a prediction that is an
option's text maps to that option's letter. Before that comparison the
prediction and the option texts are brought to one LaTeX form
(:func:`latex_form`: ``√3`` -> ``\\sqrt{3}``, ``π`` -> ``\\pi``, ``°`` and
``^{\\circ}`` -> ``^\\circ``, ``\\dfrac`` -> ``\\frac``), so the Unicode and the
LaTeX spelling of one option are the same option. ``free-form`` rows go through
the project's verifier (:func:`mmr1.rewards.is_correct`: normalised text, then
math-verify) on the same LaTeX forms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mmr1.eval.scoring.text import final_answer
from mmr1.prompts import CHOICE_LETTERS
from mmr1.rewards import is_correct

# An option label: a capital at a line start or after whitespace, ``A:``, ``A.``,
# ``(A)``, ``A)``; the option's text runs to the next label or the end of the line.
_OPTION_LABEL = re.compile(r"(?:^|(?<=\s))\(?([A-H])\)?\s*[:.)]", re.MULTILINE)
_CHOICES_HEADING = re.compile(r"\b(?:Choices|Options)\b\s*:?")
# "√23" is the root of 23 (in LaTeX "\sqrt23" is the root of 2, times 3).
_UNICODE_SQRT = re.compile("\u221a\\s*(\\d+(?:\\.\\d+)?|[A-Za-z])")
_UNICODE_MATH = {
    "\u221a": "\\sqrt",  # √
    "\u03c0": "\\pi",  # π
    "\u00b0": "^\\circ",  # °
    "\u00d7": "\\times",  # ×
    "\u00b7": "\\cdot",  # ·
    "\u22c5": "\\cdot",  # ⋅
    "\u00f7": "\\div",  # ÷
    "\u2212": "-",  # −
    "\u2264": "\\leq",  # ≤
    "\u2265": "\\geq",  # ≥
}
_CIRC = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ")
_BARE_SQRT = re.compile(r"\\sqrt\s*([0-9A-Za-z])")
_FRAC_VARIANT = re.compile(r"\\[dt]frac")


def latex_form(text: str) -> str:
    """``text`` with Unicode math written as LaTeX and one spelling per construct.

    >>> latex_form("2√3 + π")
    '2\\\\sqrt{3} + \\\\pi'
    >>> latex_form("30^{\\circ}") == latex_form("30°") == "30^\\circ"
    True
    """
    text = _UNICODE_SQRT.sub(r"\\sqrt{\1}", text)
    for symbol, command in _UNICODE_MATH.items():
        text = text.replace(symbol, command)
    text = _CIRC.sub("^\\\\circ", text)
    text = _BARE_SQRT.sub(r"\\sqrt{\1}", text)
    return _FRAC_VARIANT.sub(r"\\frac", text)


def inline_choices(question: str) -> list[str] | None:
    """Option texts listed after ``Choices`` in a MathVerse question, in letter order.

    One option per line (``A:30°``) or several on one line (``A: 3 B: 4 C: 5``,
    ``A. 3 B. 4``). None when there is no such heading or the labels are not
    ``A, B, C, ...`` in order.
    """
    heading = _CHOICES_HEADING.search(question)
    if heading is None:
        return None
    tail = question[heading.end() :]
    labels = list(_OPTION_LABEL.finditer(tail))
    options: list[str] = []
    for index, label in enumerate(labels):
        if label.group(1) != CHOICE_LETTERS[len(options)]:
            return None  # not a clean A, B, C... list
        end = labels[index + 1].start() if index + 1 < len(labels) else len(tail)
        text = tail[label.end() : end].split("\n", 1)[0].strip()
        if not text:
            return None
        options.append(text)
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
    prediction = latex_form(prediction)
    if row.get("question_type") == "multi-choice":
        choices = inline_choices(str(row.get("question") or ""))
        if choices is not None and not (len(gold) == 1 and gold in CHOICE_LETTERS[: len(choices)]):
            choices = None  # the parsed list does not cover the gold letter: letters only
        if choices is not None:
            choices = [latex_form(choice) for choice in choices]
        return is_correct(prediction, gold, choices)
    return is_correct(prediction, latex_form(gold))
