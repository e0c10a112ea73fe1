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
3. the last line, read the same way (conservative: it must *be* an answer);
4. the last line that holds nothing but a choice (``D``, ``**(D)**``, ``A, C``,
   ``ASSISTANT: D``): the answer given first and explained below it;
5. the last concluding mention of a labelled option, a verb or connective
   followed by ``figure``/``option``/``choice``/``shape``... and one label
   (``the pattern suggests figure D``, ``so option B.``, ``must be choice 3``).

An answer text is cut where an explanation starts ("because", "since", "as",
a dash, or an affirming verb: "is correct", "are the answers"), so
``B because A is wrong`` reads ``B`` and ``A and C are correct`` reads ``{A, C}``;
``A is wrong`` chooses nothing. A chat role label in front (``ASSISTANT:``) is
dropped. What remains must be a list of letter forms (``A, C``, ``(A) and (C)``,
``a/c``, ``options A and C``, ``figure D``), a compact run of 2-5 distinct
capitals A-H (``ABC``; steps 1-3 only), or one labelled option (``(B) 12 cm``,
``option B``); anything else chooses nothing (scored wrong). Capital letters
scattered through prose are never collected: ``A`` there is usually an article
or an option being ruled out, and step 5 needs the option noun right before the
label.

Numbered options. Some questions number their options ("Select from 1-5") and
their gold is a number (``3``). When every gold part is a number of 1-2 digits
the same rules read option *numbers* instead of letters (``\boxed{3}``, ``(3)``,
``option 3``, ``3 and 5``; no compact runs: ``35`` is thirty-five, not two
choices), and letters choose nothing. The official scorer compares the
extracted text with the gold as a set, so such items can be right there too.
"""

from __future__ import annotations

import re

from mmr1.eval.scoring.text import answer_phrase, clean_answer, last_line
from mmr1.rewards import extract_final_answer
from mmr1.rewards.normalize import parse_choice_letter

_SEPARATORS = re.compile(r"\s*(?:,|;|/|&|\+|\band\b)\s*|\s+", re.IGNORECASE)
_LETTER_FORM = re.compile(r"^[(\[]?([A-Za-z])[)\]]?[.:]?$")
_NUMBER_FORM = re.compile(r"^[(\[]?(\d{1,2})[)\]]?[.:]?$")
_NUMBER_LABEL = re.compile(r"^(?:\((\d{1,2})\)|\[(\d{1,2})\]|(\d{1,2})[.):])\s+\S")
_COMPACT_RUN = re.compile(r"^[(\[]?([A-H]{2,5})[)\]]?$")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|~|\\quad|\\qquad")
_ROLE_LABEL = re.compile(r"^(?:assistant|gpt|model|bot|response|output)\s*:\s*", re.IGNORECASE)
# Where an explanation starts: the letters before it are the answer. A verb cuts
# only when it affirms ("A is correct"), never when it rules out ("A is wrong").
_EXPLANATION = re.compile(
    r"\s+(?:because|since|as|so|which|that|being)\b.*$"
    r"|\s+(?:is|are|was|were|(?:would|should|must|seems?\s+to)\s+be)\s+(?:the\s+)?(?:only\s+)?"
    r"(?:correct|right|true|valid|answers?|solutions?|best)\b.*$"
    r"|\s+[-\u2013\u2014]\s.*$",
    re.IGNORECASE | re.DOTALL,
)
_OPTION_NOUN = r"(?:options?|choices?|answers?|figures?|shapes?|images?|pictures?|diagrams?)"
_LEAD_WORDS = re.compile(
    r"^(?:(?:so|thus|hence|therefore)\b[,:]?\s*)?(?:the\s+)?(?:correct\s+)?"
    rf"(?:{_OPTION_NOUN}\b\s*:?\s*)?",
    re.IGNORECASE,
)
# Step 5: a concluding verb or connective, an option noun, one label (upper-case
# letter or 1-2 digit number) that is not followed by more labels.
_CONCLUSION = re.compile(
    r"\b(?:suggests?|indicates?|implies|points?\s+to|corresponds?\s+to|matches|fits|"
    r"completes|(?:should|must|would|will)\s+be|is\s+(?:most\s+)?likely|therefore|thus|"
    r"hence|so)\s*,?\s+(?:the\s+)?(?:correct\s+|right\s+|missing\s+|next\s+)?"
    r"(?:figure|option|choice|shape|image|picture|diagram)\s+"
    r"(?-i:\(?([A-H]|\d{1,2})\)?)"
    r"(?![\w(])(?!\s*(?:,|&|/|\band\b|\bor\b)\s*\(?(?-i:[A-H]|\d)\b)",
    re.IGNORECASE,
)


def _form_list(text: str, numeric: bool) -> frozenset[str]:
    """Labels of ``text`` when it is only a list of letter (or number) forms."""
    pieces = [piece for piece in _SEPARATORS.split(text) if piece]
    pattern = _NUMBER_FORM if numeric else _LETTER_FORM
    forms = [pattern.match(piece) for piece in pieces]
    if pieces and all(form is not None for form in forms):
        return frozenset(form.group(1).upper() for form in forms if form is not None)
    return frozenset()


def _label_list(text: str, numeric: bool) -> frozenset[str]:
    """Labels of ``text`` when it is a list of forms or (letters only) a compact run."""
    run = None if numeric else _COMPACT_RUN.match(text)
    if run is not None and len(set(run.group(1))) == len(run.group(1)):
        return frozenset(run.group(1))
    return _form_list(text, numeric)


def _labelled_option(text: str, numeric: bool) -> frozenset[str]:
    """One labelled option (``(B) 12 cm``, ``option B``, ``3. twelve``), else nothing."""
    if numeric:
        match = _NUMBER_LABEL.match(text)
        return frozenset({next(g for g in match.groups() if g)}) if match else frozenset()
    letter = parse_choice_letter(text)
    return frozenset({letter}) if letter is not None else frozenset()


def _answer_text(text: str) -> str:
    """``text`` without LaTeX spacing, markdown, a role label and the explanation after it."""
    text = clean_answer(_LATEX_SPACE.sub(" ", text))
    text = _ROLE_LABEL.sub("", text, count=1)
    return _EXPLANATION.sub("", text).strip().rstrip(".,;:").strip()


def choice_letters(text: str, numeric: bool = False) -> frozenset[str]:
    """The option labels a short answer text chooses, upper-cased (empty if none).

    Rules in the module doc: cut at the explanation, then a label list, a
    compact run or one labelled option. ``numeric``: option numbers, not letters.
    """
    text = _answer_text(text)
    stripped = _LEAD_WORDS.sub("", text, count=1).strip()
    return (
        _label_list(text, numeric)
        or _label_list(stripped, numeric)
        or _labelled_option(text, numeric)
        or _labelled_option(stripped, numeric)
    )


def _choice_line(response: str, numeric: bool) -> frozenset[str]:
    """Step 4: labels of the last line that holds nothing but a choice."""
    for line in reversed(response.splitlines()):
        text = _answer_text(line)
        letters = _form_list(text, numeric) or _form_list(
            _LEAD_WORDS.sub("", text, count=1).strip(), numeric
        )
        if letters:
            return letters
    return frozenset()


def _conclusion(response: str, numeric: bool) -> frozenset[str]:
    """Step 5: the label of the last concluding mention of an option."""
    for match in reversed(list(_CONCLUSION.finditer(response))):
        label = match.group(1)
        if label.isdigit() == numeric:
            return frozenset({label})
    return frozenset()


def logicvista_extract(response: str, numeric: bool = False) -> frozenset[str]:
    """The set of labels ``response`` chooses (extraction order in the module doc)."""
    final = extract_final_answer(response)
    if final is not None:
        letters = choice_letters(final, numeric)
        if not letters:
            phrase = answer_phrase(final)
            letters = choice_letters(phrase, numeric) if phrase else frozenset()
        return letters
    phrase = answer_phrase(response)
    if phrase is not None:
        letters = choice_letters(phrase, numeric)
        if letters:
            return letters
    return (
        choice_letters(last_line(response), numeric)
        or _choice_line(response, numeric)
        or _conclusion(response, numeric)
    )


def gold_letters(gold: str) -> frozenset[str]:
    """``answer.split(", ")``, stripped and upper-cased: the official gold set."""
    return frozenset(part.strip().upper() for part in str(gold).split(", "))


def numbered_options(gold: str) -> bool:
    """True when every gold part is an option number (``3``, ``2, 4``): read numbers."""
    return all(part.isdigit() and len(part) <= 2 for part in gold_letters(gold))


def logicvista_correct(response: str, gold: str) -> bool:
    """Official LogicVista correctness: the extracted label set equals the gold set exactly."""
    letters = logicvista_extract(response, numbered_options(gold))
    return bool(letters) and letters == gold_letters(gold)
