"""LogicVista's official scoring (Xiao et al., 2024): the chosen letters as an exact set.

Official rule: extract the option letters the response chooses (an LLM in the
original) and compare them, case-insensitively, as a set with
``answer.split(", ")``. A multi-select gold ``A, C`` needs exactly ``{A, C}``:
``A`` alone is wrong, ``C, A`` is right. Reducing both sides to one letter (a
harness bug) would score ``A`` correct for ``A, C``. Accuracy overall and per skill.

Rule-based extraction (our stand-in for the LLM): the boxed/``<answer>`` content,
else the text after an "answer is"/"options are" phrase, else the last line.
From that text: a list of letter forms (``A, C``, ``(A) and (C)``, ``a/c``) gives
those letters; else a single labelled option (``(B) 12 cm``, ``option B``);
else the standalone capital letters ``A``-``H`` in it.
"""

from __future__ import annotations

import re

from mmr1.eval.scoring.text import answer_phrase, clean_answer, last_line
from mmr1.rewards import extract_final_answer
from mmr1.rewards.normalize import parse_choice_letter

_SEPARATORS = re.compile(r"\s*(?:,|;|/|&|\+|\band\b)\s*|\s+", re.IGNORECASE)
_LETTER_FORM = re.compile(r"^[(\[]?([A-Za-z])[)\]]?[.:]?$")
_CAPITAL = re.compile(r"(?<![A-Za-z])([A-H])(?![A-Za-z])")


def choice_letters(text: str) -> frozenset[str]:
    """The option letters written in a short answer text, upper-cased (empty if none)."""
    text = clean_answer(text)
    pieces = [piece for piece in _SEPARATORS.split(text) if piece]
    forms = [_LETTER_FORM.match(piece) for piece in pieces]
    if pieces and all(form is not None for form in forms):
        return frozenset(form.group(1).upper() for form in forms if form is not None)
    letter = parse_choice_letter(text)
    if letter is not None:
        return frozenset({letter})
    return frozenset(_CAPITAL.findall(text))


def logicvista_extract(response: str) -> frozenset[str]:
    """The set of letters ``response`` chooses (extraction order in the module doc)."""
    candidate = extract_final_answer(response)
    if candidate is None:
        candidate = answer_phrase(response) or last_line(response)
    return choice_letters(candidate)


def gold_letters(gold: str) -> frozenset[str]:
    """``answer.split(", ")``, stripped and upper-cased: the official gold set."""
    return frozenset(part.strip().upper() for part in str(gold).split(", "))


def logicvista_correct(response: str, gold: str) -> bool:
    """Official LogicVista correctness: the extracted letter set equals the gold set exactly."""
    letters = logicvista_extract(response)
    return bool(letters) and letters == gold_letters(gold)
