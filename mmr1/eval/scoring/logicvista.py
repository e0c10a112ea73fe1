"""LogicVista's official scoring (Xiao et al., 2024): the chosen letters as an exact set.

Official rule: extract the option letters the response chooses (an LLM in the
original) and compare them, case-insensitively, as a set with
``answer.split(", ")``. A multi-select gold ``A, C`` needs exactly ``{A, C}``:
``A`` alone is wrong, ``C, A`` is right. Reducing both sides to one letter (a
harness bug) would score ``A`` correct for ``A, C``. Accuracy overall and per skill.

Rule-based extraction (our stand-in for the LLM), first hit wins:

1. the boxed/``<answer>`` content (an ``<answer>`` block written as a sentence is
   read through its "answer is" phrase);
2. the text after the last "answer is" / "answer:" / "options are" phrase, up to
   the sentence end;
3. the last line, read the same way (conservative: it must *be* an answer).

An answer text is cut where an explanation starts ("because", "since", "as",
a dash, or an affirming verb: "is correct", "are the answers"), so
``B because A is wrong`` reads ``B`` and ``A and C are correct`` reads ``{A, C}``;
``A is wrong`` chooses nothing. What remains must be a list of letter forms
(``A, C``, ``(A) and (C)``, ``a/c``, ``options A and C``), a compact run of 2-5
distinct capitals A-H (``ABC``), or one labelled option (``(B) 12 cm``,
``option B``); anything else chooses nothing (scored wrong). Capital letters
scattered through prose are never collected: ``A`` there is usually an article
or an option being ruled out.
"""

from __future__ import annotations

import re

from mmr1.eval.scoring.text import answer_phrase, clean_answer, last_line
from mmr1.rewards import extract_final_answer
from mmr1.rewards.normalize import parse_choice_letter

_SEPARATORS = re.compile(r"\s*(?:,|;|/|&|\+|\band\b)\s*|\s+", re.IGNORECASE)
_LETTER_FORM = re.compile(r"^[(\[]?([A-Za-z])[)\]]?[.:]?$")
_COMPACT_RUN = re.compile(r"^[(\[]?([A-H]{2,5})[)\]]?$")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|~|\\quad|\\qquad")
# Where an explanation starts: the letters before it are the answer. A verb cuts
# only when it affirms ("A is correct"), never when it rules out ("A is wrong").
_EXPLANATION = re.compile(
    r"\s+(?:because|since|as|so|which|that|being)\b.*$"
    r"|\s+(?:is|are|was|were|(?:would|should|must|seems?\s+to)\s+be)\s+(?:the\s+)?(?:only\s+)?"
    r"(?:correct|right|true|valid|answers?|solutions?|best)\b.*$"
    r"|\s+[-\u2013\u2014]\s.*$",
    re.IGNORECASE | re.DOTALL,
)
_LEAD_WORDS = re.compile(
    r"^(?:(?:so|thus|hence|therefore)\b[,:]?\s*)?(?:the\s+)?(?:correct\s+)?"
    r"(?:(?:options?|choices?|answers?)\b\s*:?\s*)?",
    re.IGNORECASE,
)


def _letter_list(text: str) -> frozenset[str]:
    """Letters of ``text`` when it is only a list of letter forms or a compact run."""
    run = _COMPACT_RUN.match(text)
    if run is not None and len(set(run.group(1))) == len(run.group(1)):
        return frozenset(run.group(1))
    pieces = [piece for piece in _SEPARATORS.split(text) if piece]
    forms = [_LETTER_FORM.match(piece) for piece in pieces]
    if pieces and all(form is not None for form in forms):
        return frozenset(form.group(1).upper() for form in forms if form is not None)
    return frozenset()


def choice_letters(text: str) -> frozenset[str]:
    """The option letters a short answer text chooses, upper-cased (empty if none).

    Rules in the module doc: cut at the explanation, then a letter list, a
    compact run or one labelled option.
    """
    text = clean_answer(_LATEX_SPACE.sub(" ", text))
    text = _EXPLANATION.sub("", text).strip().rstrip(".,;:").strip()
    letters = _letter_list(text) or _letter_list(_LEAD_WORDS.sub("", text, count=1).strip())
    if letters:
        return letters
    letter = parse_choice_letter(text)
    return frozenset({letter}) if letter is not None else frozenset()


def logicvista_extract(response: str) -> frozenset[str]:
    """The set of letters ``response`` chooses (extraction order in the module doc)."""
    final = extract_final_answer(response)
    if final is not None:
        letters = choice_letters(final)
        if not letters:
            phrase = answer_phrase(final)
            letters = choice_letters(phrase) if phrase else frozenset()
        return letters
    phrase = answer_phrase(response)
    if phrase is not None:
        letters = choice_letters(phrase)
        if letters:
            return letters
    return choice_letters(last_line(response))


def gold_letters(gold: str) -> frozenset[str]:
    """``answer.split(", ")``, stripped and upper-cased: the official gold set."""
    return frozenset(part.strip().upper() for part in str(gold).split(", "))


def logicvista_correct(response: str, gold: str) -> bool:
    """Official LogicVista correctness: the extracted letter set equals the gold set exactly."""
    letters = logicvista_extract(response)
    return bool(letters) and letters == gold_letters(gold)
