"""Is an extracted answer correct? Binary, no partial credit (docs/METHOD.md section 4).

``check_answer(prediction, gold, choices)`` applies, in order:

1. **Guards** (:mod:`mmr1.rewards.guards`): an empty prediction, or one that is too
   long or would blow up SymPy, is wrong.
2. **Multiple choice**, when the gold is an upper-case option letter (``A``,
   ``(B)``, ``C.``) or ``choices`` are given and the gold is a letter or one
   choice's text. The prediction is reduced to a letter (``(A)``, ``A) 12 cm``,
   ``\\text{A}``, ``option A``), or, when choices are known, mapped to the one
   choice whose normalised text equals it (else the one choice math-verify finds
   equal to it). Correct iff the letters are equal.
3. **Normalised text**: exact equality after :func:`normalize_text` (case,
   whitespace, ``\\text{}``, ``$``, trailing period, a trailing unit word).
4. **math-verify**, unless the gold reads as words (``Yes``, ``east``): SymPy would
   turn ``dog``/``god`` into the same product of symbols. Gold and prediction
   are each parsed as ``\\boxed{...}`` and compared with ``verify(gold, pred)``;
   math-verify handles ``\\frac{1}{2}``/``0.5``, ``50\\%``/``0.5``, ``1,000``,
   ``30^\\circ``, ``x = 3``/``3``, intervals and sets.
   Two plain decimals (``1,000`` vs ``1000``) are compared exactly first,
   skipping the ~10 ms LaTeX parse when the answer is already decided.

There is deliberately no containment, substring or token-overlap rule: ``Yes``
vs ``No`` and ``a cat`` vs ``a dog`` are wrong.

Timeouts: math-verify bounds each parse/compare with ``signal.alarm``, which
raises in any thread but the main one. We pass its timeout only in the main
thread (``timeout_s // 2`` seconds per operation, at least 1; alarms take whole
seconds) and ``None`` elsewhere; a thread caller must bound time itself, which
is what :func:`mmr1.rewards.score.score_batch` does (worker processes, or a
helper thread under a deadline).

:func:`quick_verdict` applies the same rules but stops where math-verify would
be needed: what it decides costs microseconds and needs no deadline, so
:func:`~mmr1.rewards.score.score_batch` settles those items in the calling
process and sends only the rest to workers. math-verify (and SymPy) is imported
on first use, with :mod:`mmr1.rewards.fastparse` (a faster, result-identical
LaTeX parser) installed.
"""

from __future__ import annotations

import functools
import re
import sys
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

from mmr1.rewards import fastparse
from mmr1.rewards.guards import MAX_ANSWER_CHARS, guard_reason
from mmr1.rewards.normalize import (
    choice_letter,
    clean_math,
    normalize_text,
    parse_choice_letter,
    strip_choice_label,
    strip_math_delimiters,
    unwrap_text_commands,
)

# Words that may appear in a mathematical gold without making it a text answer.
MATH_WORDS: frozenset[str] = frozenset(
    {
        "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan",
        "sinh", "cosh", "tanh", "log", "ln", "lg", "exp", "sqrt", "pi", "inf", "infty",
        "mod", "gcd", "lcm", "max", "min", "det", "deg",
    }
)  # fmt: skip
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
_UPPER_LETTER_GOLD = re.compile(r"^[(\[]?[A-Z][)\]]?[.:]?$")
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")

#: ``(gold, prediction) -> equal``: how the rules below compare two math answers.
MathEqual = Callable[[str, str], bool]


class NeedsMathVerify(Exception):
    """Raised by :func:`quick_verdict`'s comparison where math-verify would be needed."""


class Verdict(NamedTuple):
    """Outcome of one check. ``rule`` names what decided it (for debugging and tests)."""

    correct: bool
    timed_out: bool = False
    rule: str = ""


def signal_timeout(timeout_s: float | None) -> int | None:
    """math-verify's per-operation timeout: whole seconds in the main thread, else None."""
    if timeout_s is None or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, int(timeout_s // 2))


def looks_like_text(answer: str) -> bool:
    """True when ``answer`` contains a word of 2+ letters that is not a math word or command.

    ``Yes``, ``a cat``, ``\\text{east}`` are text; ``\\frac{\\sqrt{3}}{2}``, ``2x+1``,
    ``\\sin x``, ``5 cm`` (unit dropped) are not.
    """
    stripped = _LATEX_COMMAND.sub(" ", normalize_text(answer))
    return any(word.lower() not in MATH_WORDS for word in _WORD.findall(stripped))


@functools.cache
def math_verify_api() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """math-verify's ``parse`` and ``verify``, imported on first use (SymPy takes ~0.5 s),
    with :mod:`mmr1.rewards.fastparse` installed. Answers settled by
    :func:`quick_verdict` never import it."""
    from math_verify import parse, verify

    fastparse.install()
    return parse, verify


def is_math_verify_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is math-verify's ``TimeoutException`` (a BaseException)."""
    errors = sys.modules.get("math_verify.errors")  # not imported: cannot be its exception
    return errors is not None and isinstance(exc, errors.TimeoutException)


@functools.lru_cache(maxsize=8192)
def _parse_boxed(answer: str, timeout: int | None) -> tuple:
    """math-verify parse of ``\\boxed{answer}``; () when unparseable. Timeouts propagate.

    Cached because one gold is checked against every rollout of its prompt and
    rollouts often repeat answers; exceptions (timeouts) are not cached.
    """
    parse, _ = math_verify_api()
    try:
        return tuple(parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout, raise_on_error=True))
    except Exception:  # any parser failure means "not a math answer" (timeouts propagate)
        return ()


def plain_number(answer: str) -> Fraction | None:
    """Exact value of a plain decimal (``-12``, ``1,000``, ``0.50``), else None."""
    text = clean_math(answer)
    if len(text) > 40 or not _PLAIN_NUMBER.match(text):
        return None
    return Fraction(text.replace(",", ""))


def number_verdict(gold: str, prediction: str) -> bool | None:
    """Decide two plain decimals without math-verify, or None when it must decide.

    Two plain decimals with equal exact values are equal, and two plain
    integers with different values are not (math-verify agrees on both, after
    spending milliseconds in its LaTeX parser). Anything else is math-verify's
    call: it rounds decimals, so ``3.1415927`` vs ``3.141593`` is not decided here.
    """
    gold_number, pred_number = plain_number(gold), plain_number(prediction)
    if gold_number is None or pred_number is None:
        return None
    if gold_number == pred_number:
        return True
    if (
        gold_number.denominator == 1
        and pred_number.denominator == 1
        and "." not in gold + prediction
    ):
        return False
    return None


def math_equal(gold: str, prediction: str, timeout: int | None) -> bool:
    """math-verify equivalence of two answers (gold first: ``verify`` is not symmetric).

    :func:`number_verdict` first, then math-verify. Raises math-verify's
    ``TimeoutException`` when an operation hits ``timeout``.
    """
    decided = number_verdict(gold, prediction)
    if decided is not None:
        return decided
    gold_parsed = _parse_boxed(clean_math(gold), timeout)
    if not gold_parsed:
        return False
    pred_parsed = _parse_boxed(clean_math(prediction), timeout)
    if not pred_parsed:
        return False
    _, verify = math_verify_api()
    for gold_item in gold_parsed:
        for pred_item in pred_parsed:
            try:
                if verify(gold_item, pred_item, timeout_seconds=timeout, raise_on_error=True):
                    return True
            except Exception:  # a failed comparison is "not equal" (timeouts propagate)
                continue
    return False


def _number_only(gold: str, prediction: str) -> bool:
    """:data:`MathEqual` of :func:`quick_verdict`: decided numbers, else NeedsMathVerify."""
    decided = number_verdict(gold, prediction)
    if decided is None:
        raise NeedsMathVerify
    return decided


def _choice_texts(choices: Sequence[str]) -> list[str]:
    return [strip_choice_label(str(choice), i) for i, choice in enumerate(choices)]


def _match_choice(answer: str, choices: Sequence[str], equal: MathEqual) -> str | None:
    """The letter of the single choice equal to ``answer`` (text, else math), or None."""
    texts = _choice_texts(choices)
    target = normalize_text(answer)
    if not target:
        return None
    hits = [i for i, text in enumerate(texts) if normalize_text(text) == target]
    if not hits and not looks_like_text(answer) and guard_reason(answer) is None:
        hits = [
            i for i, text in enumerate(texts) if not looks_like_text(text) and equal(text, answer)
        ]
    return choice_letter(hits[0]) if len(hits) == 1 else None


def gold_choice_letter(gold: str, choices: Sequence[str] | None, equal: MathEqual) -> str | None:
    """The option letter the gold names, or None when the gold is not multiple choice.

    Without choices only an upper-case letter form counts (``A``, ``(B)``, ``C.``),
    so a lower-case variable ``x`` stays a math answer. With choices, a letter in
    range counts, and so does a gold equal to one choice's text.
    """
    cleaned = unwrap_text_commands(strip_math_delimiters(gold)).strip()
    if not choices:
        return parse_choice_letter(gold) if _UPPER_LETTER_GOLD.match(cleaned) else None
    letter = parse_choice_letter(gold)
    if letter is not None and ord(letter) - ord("A") < len(choices):
        return letter
    return _match_choice(gold, choices, equal)


def prediction_choice_letter(
    prediction: str, choices: Sequence[str] | None, equal: MathEqual
) -> str | None:
    """The option letter the prediction names: a letter form, else a choice's text."""
    letter = parse_choice_letter(prediction)
    if letter is not None or not choices:
        return letter
    return _match_choice(prediction, choices, equal)


def _decide(prediction: str, gold: str, choices: Sequence[str] | None, equal: MathEqual) -> Verdict:
    """The rules of the module docstring, comparing math answers with ``equal``."""
    if not prediction or not prediction.strip():
        return Verdict(False, rule="empty")
    reason = guard_reason(prediction)
    if reason is not None:
        return Verdict(False, rule=f"guard:{reason}")
    letter = gold_choice_letter(gold, choices, equal)
    if letter is not None:
        predicted = prediction_choice_letter(prediction, choices, equal)
        return Verdict(predicted == letter, rule="choice")
    normalized = normalize_text(prediction)
    if normalized and normalized == normalize_text(gold):
        return Verdict(True, rule="text")
    if looks_like_text(gold):
        return Verdict(False, rule="text")
    if guard_reason(gold) is not None:
        return Verdict(False, rule="guard:gold")
    return Verdict(equal(gold, prediction), rule="math")


def check_answer(
    prediction: str,
    gold: str,
    choices: Sequence[str] | None = None,
    *,
    timeout_s: float | None = 5.0,
) -> Verdict:
    """Compare an extracted answer with the gold (rules in the module docstring)."""
    timeout = signal_timeout(timeout_s)
    try:
        # str(gold): datasets sometimes hold numeric golds.
        return _decide(prediction, str(gold), choices, lambda g, p: math_equal(g, p, timeout))
    except BaseException as exc:
        if is_math_verify_timeout(exc):
            return Verdict(False, timed_out=True, rule="timeout")
        raise


def quick_verdict(
    prediction: str, gold: str, choices: Sequence[str] | None = None
) -> Verdict | None:
    """:func:`check_answer`'s verdict when it needs no math-verify call, else None.

    Pure string work, linear in the input: safe to run without a deadline. Long
    golds or choices (over :data:`MAX_ANSWER_CHARS` characters) are left to the
    bounded path, None.
    """
    gold = str(gold)
    if len(gold) > MAX_ANSWER_CHARS or sum(len(str(c)) for c in choices or ()) > MAX_ANSWER_CHARS:
        return None
    try:
        return _decide(prediction, gold, choices, _number_only)
    except NeedsMathVerify:
        return None


def verify_item(
    prediction: str, gold: str, choices: list[str] | None, timeout_s: float | None
) -> Verdict:
    """One task of :func:`~mmr1.rewards.score.score_batch`'s workers: :func:`check_answer`."""
    return check_answer(prediction, gold, choices, timeout_s=timeout_s)


def is_correct(
    prediction: str,
    gold: str,
    choices: list[str] | None = None,
    *,
    timeout_s: float | None = 5.0,
) -> bool:
    """True iff ``prediction`` (an extracted final answer) matches ``gold``.

    ``choices`` are the option texts in letter order (``["3", "5", "7"]`` or
    ``["A. 3", ...]``) when the question is multiple choice. ``timeout_s`` bounds
    each math-verify operation in the main thread only (see the module docstring).

    >>> is_correct("\\\\frac{1}{2}", "0.5")
    True
    >>> is_correct("Yes", "No")
    False
    """
    return check_answer(prediction, gold, choices, timeout_s=timeout_s).correct
