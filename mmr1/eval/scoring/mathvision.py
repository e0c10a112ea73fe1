"""MathVision's official, fully rule-based scoring (Wang et al., 2024), in our own code.

Extraction (the prompt asks for one ``\\boxed{}``): the last ``\\boxed{}`` (the
project's extractor, which also reads an ``<answer>`` block); without one, a
multiple-choice response that ends (or starts) with an option letter (``... is
(B).``, ``Answer: B``) gives that letter; else the text after "the answer is";
else the last line. The extraction is then cleaned: only the text after the
last ``=``/``\\approx`` is kept; ``\\left``/``\\right``, spacing, degrees, ``%``
and units (a trailing ``\\text{cm}``, ``5 cm``) are removed; ``\\text{}`` is
unwrapped; and the MATH-style string normalisation applies (``\\dfrac``/``\\tfrac``
-> ``\\frac``, ``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt3`` -> ``\\sqrt{3}``,
``.5`` -> ``0.5``, ``0.5`` -> ``\\frac{1}{2}``, integer ``a/b`` -> ``\\frac{a}{b}``,
spaces removed, ``(a)`` -> ``a``). One deliberate addition: an answer that is
a single number with thousands separators (``1,000``, ``12{,}345.5``; groups of
exactly three digits) loses them, so it is one thousand and not the tuple
``(1, 0)``; ``1,2`` and ``1,00`` stay tuples.

Equality of a prediction and a gold (both cleaned): equal lowercase strings, or
both read as LaTeX numbers (:func:`latex_value`) and equal after rounding to 2
decimals, tuples element-wise. So ``2\\sqrt{3}`` equals ``3.46``, which a harness
that lost its ``from math import *`` gets wrong. A multiple-choice item
(``answer`` is a letter) is also correct when the prediction equals that
option's text. Items whose options are literally ``A``..``E`` (choices drawn in
the image) compare letters only. Accuracy overall, per level and per subject.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from mmr1.eval.scoring.latex_value import latex_value, rounded_equal
from mmr1.eval.scoring.text import answer_phrase, clean_answer, last_line
from mmr1.rewards import extract_final_answer
from mmr1.rewards.normalize import strip_math_delimiters, strip_trailing_unit

_LETTER_END = re.compile(r"(?:^|[\s:*])\(?([A-E])\)?[.*]*$")
_LETTER_START = re.compile(r"^\(?([A-E])\)?(?:[.:]|\n|$)")
_EQUALS = re.compile(r"=|\\approx|≈")
_SPACING = re.compile(r"\\left|\\right|\\[,;:! ]|\\quad|\\qquad|~|\\!")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree")
_UNIT_GROUP = re.compile(
    r"(?<=\S)\s*\\(?:text|mathrm|mbox|textrm)\s*\{[^{}]*\}(?:\s*\^\s*\{?\d\}?)?\s*$"
)
_TEXT_GROUP = re.compile(r"\\(?:text|mathrm|mbox|textrm|textbf|mathbf)\s*\{([^{}]*)\}")
_FRAC_COMMANDS = re.compile(r"\\[dt]frac")
_FRAC_TWO_DIGITS = re.compile(r"\\frac(\d)(\d)")
_FRAC_DIGIT_THEN_GROUP = re.compile(r"\\frac(\d)\{")
_FRAC_GROUP_THEN_DIGIT = re.compile(r"\\frac(\{[^{}]*\})(\d)")
_SQRT_BARE = re.compile(r"\\sqrt(\w)")
_SLASH_FRACTION = re.compile(r"^(-?\d+)/(\d+)$")
_PAREN_LETTER = re.compile(r"^\(([a-zA-Z])\)$")
# A whole answer that is one number with thousands separators: "1,000", "12{,}345.5".
_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:(?:,|\{,\})\d{3})+(?:\.\d+)?")


def _letter_ending(response: str) -> str | None:
    text = response.strip()
    match = _LETTER_END.search(text) or _LETTER_START.match(text)
    return match.group(1) if match else None


def mathvision_extract(response: str, row: Mapping[str, Any]) -> str:
    """The answer MathVision compares, extracted from ``response`` and cleaned."""
    boxed = extract_final_answer(response)
    if boxed is not None:
        candidate = boxed
    else:
        letter = _letter_ending(response) if row.get("options") else None
        candidate = letter or answer_phrase(response) or last_line(response)
    return normalize_answer(candidate)


def normalize_answer(text: str) -> str:
    """Clean and MATH-normalise one answer string (steps in the module doc)."""
    text = clean_answer(str(text))
    parts = _EQUALS.split(text)
    if len(parts) > 1 and parts[-1].strip():
        text = parts[-1]
    text = _SPACING.sub(" ", text)
    text = _DEGREES.sub("", text)
    text = _UNIT_GROUP.sub("", text)
    text = _TEXT_GROUP.sub(r"\1", text)
    text = text.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    text = strip_trailing_unit(strip_math_delimiters(text.strip()))
    text = _FRAC_COMMANDS.sub(r"\\frac", text)
    text = _FRAC_TWO_DIGITS.sub(r"\\frac{\1}{\2}", text)
    text = _FRAC_DIGIT_THEN_GROUP.sub(r"\\frac{\1}{", text)
    text = _FRAC_GROUP_THEN_DIGIT.sub(r"\\frac\1{\2}", text)
    text = _SQRT_BARE.sub(r"\\sqrt{\1}", text)
    text = "".join(text.split()).rstrip(".")
    if _THOUSANDS_NUMBER.fullmatch(text):  # one thousand, not the tuple (1, 0)
        text = text.replace("{,}", "").replace(",", "")
    if text.startswith("."):
        text = "0" + text
    text = text.replace("{.", "{0.")
    if text == "0.5":
        text = "\\frac{1}{2}"
    fraction = _SLASH_FRACTION.match(text)
    if fraction is not None:
        text = f"\\frac{{{fraction.group(1)}}}{{{fraction.group(2)}}}"
    letter = _PAREN_LETTER.match(text)
    if letter is not None:
        text = letter.group(1)
    return text


def mathvision_equal(prediction: str, gold: str) -> bool:
    """Official equality of two cleaned answers: lowercase strings, else rounded values."""
    pred, target = normalize_answer(prediction).lower(), normalize_answer(gold).lower()
    if not pred or not target:
        return False
    if pred == target:
        return True
    pred_value, target_value = latex_value(pred), latex_value(target)
    if pred_value is None or target_value is None:
        return False
    return rounded_equal(pred_value, target_value, 2)


def _option_text(options: Sequence[Any], letter: str) -> str | None:
    index = ord(letter.upper()) - ord("A") if len(letter) == 1 else -1
    return str(options[index]) if 0 <= index < len(options) else None


def mathvision_correct(response: str, row: Mapping[str, Any]) -> bool:
    """Official MathVision correctness of ``response`` against ``row["answer"]``.

    ``row`` is a MathVision row: ``options`` (5 texts, or empty for free-form)
    and ``answer`` (an option letter for multiple choice).
    """
    prediction = mathvision_extract(response, row)
    gold = str(row.get("answer", ""))
    if mathvision_equal(prediction, gold):
        return True
    options = list(row.get("options") or [])
    option = _option_text(options, gold.strip()) if options else None
    return option is not None and mathvision_equal(prediction, option)
