"""Shared answer-extraction helpers of the benchmark scorers.

The first step is always the project's one extractor,
:func:`mmr1.rewards.extract_final_answer` (the last ``\\boxed{}``, else the
``<answer>`` block). The helpers here are the fallbacks the official protocols
use when a response has no box: a "the answer is ..." phrase, the last line,
and the nearest option by Levenshtein distance
(:func:`mmr1.edit_distance.levenshtein`, re-exported here) for free text.
"""

from __future__ import annotations

import re

from mmr1.edit_distance import levenshtein
from mmr1.rewards import extract_final_answer
from mmr1.rewards.normalize import strip_math_delimiters, unwrap_text_commands

# "the answer is X", "final answer: X", "the correct options are A and C", "Answer: B".
# Only where a phrase ends matters, so no "final"/"correct" prefix is matched. A
# case-insensitive search is ~5x slower than a plain one, so the lowered text is
# searched (same positions unless lowering changes the length; then the slow one).
_PHRASE = r"(?:answer|option|choice)s?\s*(?:is|are|should\s+be|:)\s*:?"
_ANSWER_PHRASE = re.compile(_PHRASE, re.IGNORECASE)
_ANSWER_PHRASE_LOWER = re.compile(_PHRASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_MARKDOWN = re.compile(r"\*\*|__")


def clean_answer(text: str) -> str:
    """Strip markdown bold, math delimiters, ``\\text{}`` wrappers and a trailing period."""
    text = _MARKDOWN.sub("", text).strip()
    text = unwrap_text_commands(strip_math_delimiters(text))
    return text.strip().rstrip(".").strip()


def answer_phrase(response: str) -> str | None:
    """Text after the last "answer is" / "answer:" phrase, up to the line or sentence end."""
    lowered = response.lower()
    if len(lowered) == len(response):
        matches = list(_ANSWER_PHRASE_LOWER.finditer(lowered))
    else:
        matches = list(_ANSWER_PHRASE.finditer(response))
    if not matches:
        return None
    rest = response[matches[-1].end() :].strip()
    rest = rest.split("\n", 1)[0]
    end = _SENTENCE_END.search(rest)
    if end is not None:
        rest = rest[: end.start()]
    rest = clean_answer(rest)
    return rest or None


def last_line(response: str) -> str:
    """The last non-blank line of ``response``, cleaned (empty string for a blank response)."""
    lines = [line for line in response.strip().splitlines() if line.strip()]
    return clean_answer(lines[-1]) if lines else ""


def final_answer(response: str) -> str:
    """Boxed/answer-block answer, else an "answer is" phrase, else the last line.

    The rule-based stand-in for the LLM extractors of MathVista and MathVerse.
    """
    boxed = extract_final_answer(response)
    if boxed is not None:
        return clean_answer(boxed)
    return answer_phrase(response) or last_line(response)


def nearest_choice(text: str, choices: list[str]) -> str:
    """The choice with the smallest Levenshtein distance to ``text`` (first one on ties)."""
    if not choices:
        raise ValueError("nearest_choice needs at least one choice")
    distances = [levenshtein(text, choice) for choice in choices]
    return choices[distances.index(min(distances))]
