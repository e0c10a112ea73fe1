"""MathVista's official scoring (Lu et al., 2024), with a rule-based extractor.

Official rule. A response is first reduced to an extraction: quick paths (the
response equals one choice's text; ``int(response)``; ``float(response)``), else
an LLM extractor. The extraction is then normalised by question/answer type and
compared to the gold ``answer`` string by exact equality, both sides stripped:

- ``multi_choice``: a letter written as ``(X)`` anywhere, or exactly ``X``, maps to
  ``choices[idx]``; anything else maps to the choice with the smallest
  Levenshtein distance (the first one on ties);
- ``integer``: ``str(int(float(x)))``;
- ``float``: ``str(round(float(x), int(precision)))``; ``precision`` is stored as a
  float (``1.0``/``2.0``) and must be cast: ``round(x, 2.0)`` raises, which is
  how one harness scores all 40 float items wrong;
- ``list``: ``str(x)`` of the extracted list (``[2014, 2016]``);
- a value that does not convert scores wrong.

Our rule-based extractor replaces the LLM (documented, not official): after the
quick paths it takes the project's final answer (last ``\\boxed{}``/``<answer>``,
else an "answer is" phrase, else the last line); for multiple choice a written
option letter (``B``, ``(B) 12``, ``option B``) is kept as the letter; an answer
written as an equation (``x = 14``, ``AB \\approx 4.2``) is read by its right-hand
side for numeric and list types, and for multiple choice when that side is a
choice's text; for numeric types thousands separators, units, ``%`` and LaTeX
are removed and a LaTeX expression is evaluated (``\\frac{3}{2}`` -> ``1.5``);
for lists the items are read into a list (``2014, 2016``, ``[2014, 2016]`` and
the set braces ``\\{2014, 2016\\}`` -> ``[2014, 2016]``). A float item without a
precision rounds to the gold's number of decimals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from mmr1.eval.scoring.latex_value import latex_value
from mmr1.eval.scoring.text import clean_answer, final_answer, nearest_choice
from mmr1.prompts import CHOICE_LETTERS
from mmr1.rewards.normalize import parse_choice_letter, strip_trailing_unit

_PAREN_LETTER = re.compile(r"\(([a-zA-Z])\)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_LIST_ITEM_SPLIT = re.compile(r"\s*,\s*")
# "=" (not "<=", ">=", "!=", "=="), "\approx" or "≈": an equation's right-hand side follows.
_EQUALS = re.compile(r"(?<![<>!=])=(?!=)|\\approx|\u2248")
_LEFT_RIGHT = re.compile(r"\\left|\\right")
_BRACKETS = {"[": "]", "(": ")", "{": "}"}


def _choices(row: Mapping[str, Any]) -> list[str]:
    return [str(choice) for choice in row.get("choices") or []]


def _precision(row: Mapping[str, Any]) -> int:
    """``int(precision)``; without one, the number of decimals of the gold answer."""
    precision = row.get("precision")
    if isinstance(precision, int | float) and not math.isnan(precision):
        return int(precision)
    gold = str(row.get("answer", ""))
    return len(gold.split(".", 1)[1]) if "." in gold else 0


def _plain_number(text: str) -> str | None:
    """``text`` as a plain decimal string (separators, units, %, LaTeX removed), or None."""
    text = text.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    text = strip_trailing_unit(_THOUSANDS.sub("", text)).strip()
    if _NUMBER.fullmatch(text):
        return text
    value = latex_value(text)
    if isinstance(value, float):
        return repr(value)
    return None


def _right_hand_side(text: str) -> str | None:
    """The text after the last ``=``/``\\approx`` of an equation, or None."""
    parts = _EQUALS.split(text)
    if len(parts) < 2 or not parts[-1].strip():
        return None
    return parts[-1].strip()


def _wrapped(text: str) -> bool:
    """True when the first character opens a bracket that the last character closes."""
    if len(text) < 2 or _BRACKETS.get(text[0]) != text[-1]:
        return False
    depth = 0
    for index, char in enumerate(text):
        if char in _BRACKETS:
            depth += 1
        elif char in _BRACKETS.values():
            depth -= 1
            if depth == 0:
                return index == len(text) - 1
    return False


def _as_list(text: str) -> list[Any] | None:
    """``"[2014, 2016]"`` / ``"2014, 2016"`` / ``"\\{2014, 2016\\}"`` -> ``[2014, 2016]``.

    Outer brackets that wrap the whole text (``[]``, ``()``, ``{}``, LaTeX
    ``\\{ \\}``, with or without ``\\left``/``\\right``) are removed; None for a
    single item.
    """
    inner = _LEFT_RIGHT.sub("", text).replace("\\{", "{").replace("\\}", "}").strip()
    while _wrapped(inner):  # "[[2014, 2016]]" too, but not "(1, 2), (3, 4)"
        inner = inner[1:-1].strip()
    parts = [part for part in _LIST_ITEM_SPLIT.split(inner) if part]
    if len(parts) < 2:
        return None
    items: list[Any] = []
    for part in parts:
        part = part.strip().strip("'\"")
        try:
            number = float(part)
        except ValueError:
            items.append(part)
            continue
        items.append(int(number) if number.is_integer() and "." not in part else number)
    return items


def mathvista_extract(response: str, row: Mapping[str, Any]) -> str:
    """Rule-based extraction of the answer from ``response`` (quick paths, then boxed)."""
    text = response.strip()
    question_type = row.get("question_type")
    answer_type = row.get("answer_type")
    choices = _choices(row)
    # Official quick paths.
    if question_type == "multi_choice" and text in choices:
        return text
    if answer_type == "integer":
        try:
            return str(int(text))
        except ValueError:
            pass
    if answer_type == "float":
        try:
            return str(float(text))
        except ValueError:
            pass
    answer = clean_answer(final_answer(text))
    right = _right_hand_side(answer)
    if question_type == "multi_choice":
        if answer in choices:
            return answer
        letter = parse_choice_letter(answer)
        if letter is not None and CHOICE_LETTERS.index(letter) < len(choices):
            return letter
        return right if right in choices else answer
    if right is not None and answer_type in ("integer", "float", "list"):
        answer = right
    if answer_type in ("integer", "float"):
        return _plain_number(answer) or answer
    if answer_type == "list":
        items = _as_list(answer)
        return str(items) if items is not None else answer
    return answer


def mathvista_normalize(extracted: str, row: Mapping[str, Any]) -> str | None:
    """The official normalisation of an extraction (rules in the module doc); None if invalid."""
    extracted = str(extracted).strip()
    if row.get("question_type") == "multi_choice":
        choices = _choices(row)
        if not choices:
            return None
        letters = _PAREN_LETTER.findall(extracted)
        if letters:
            extracted = letters[0].upper()
        options = CHOICE_LETTERS[: len(choices)]
        if len(extracted) == 1 and extracted in options:
            return choices[options.index(extracted)]
        return nearest_choice(extracted, choices)
    answer_type = row.get("answer_type")
    try:
        if answer_type == "integer":
            return str(int(float(extracted)))
        if answer_type == "float":
            return str(round(float(extracted), _precision(row)))
    except (ValueError, OverflowError):
        return None
    if answer_type == "list":
        items = _as_list(extracted)
        return str(items) if items is not None else extracted
    return extracted


def mathvista_correct(extracted: str, row: Mapping[str, Any]) -> bool:
    """Official MathVista correctness of an extraction against ``row["answer"]``.

    Like the official ``safe_equal``, both sides are stripped before the exact
    comparison (a gold or a choice text with stray whitespace still matches).
    """
    normalized = mathvista_normalize(extracted, row)
    return normalized is not None and normalized.strip() == str(row.get("answer", "")).strip()
