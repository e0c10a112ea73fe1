"""Answer normalisation: text answers and multiple-choice letters.

Pure string functions, no math-verify. :mod:`mmr1.rewards.verify` decides which
comparison applies; this module only turns an answer into a canonical form.

Text rules (``normalize_text``), in order: strip surrounding ``$``/``\\(\\)``/``\\[\\]``,
unwrap ``\\text{}``-like commands (keeping their content), drop LaTeX spacing
commands, remove a trailing unit word from :data:`UNIT_WORDS` when a number
precedes it, lowercase, collapse whitespace, strip trailing ``.``/``,``/``;``.
Nothing else: no article removal, no containment, no fuzzy matching.
"""

from __future__ import annotations

import re

# Wrappers whose argument is kept as plain text.
_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mathsf|mbox|operatorname|boxed|fbox)"
    r"\s*\{([^{}]*)\}"
)
_SPACING = re.compile(r"\\[,;:!> ]|~|\\quad|\\qquad")
_WHITESPACE = re.compile(r"\s+")

# Units removed from the end of an answer when a number precedes them ("5 cm" -> "5").
# Deliberately small: a unit is only dropped, never converted.
UNIT_WORDS: frozenset[str] = frozenset(
    {
        "mm", "cm", "m", "km", "in", "inch", "inches", "ft", "feet", "foot", "yd", "yards",
        "mile", "miles", "meter", "meters", "metre", "metres", "centimeters", "kilometers",
        "mg", "g", "kg", "gram", "grams", "kilograms", "lb", "lbs", "pounds",
        "ml", "l", "liter", "liters", "litres",
        "s", "sec", "secs", "second", "seconds", "min", "mins", "minute", "minutes",
        "h", "hr", "hrs", "hour", "hours", "day", "days", "week", "weeks", "year", "years",
        "degree", "degrees", "deg", "°", "^\\circ", "^{\\circ}",
        "unit", "units", "sq units", "square units", "cubic units",
        "dollar", "dollars", "cent", "cents", "yuan", "people", "students",
        "cm^2", "m^2", "km^2", "mm^2", "cm^3", "m^3", "cm²", "m²", "cm³", "m³",
    }
)  # fmt: skip
# A one-letter unit needs a space before it: "5 m" is five metres, "5m" may be 5 * m.
_LETTER_UNITS = sorted(u for u in UNIT_WORDS if len(u) == 1 and u.isalpha())
_OTHER_UNITS = sorted((u for u in UNIT_WORDS if u not in _LETTER_UNITS), key=len, reverse=True)
_UNIT_SUFFIX = re.compile(
    r"(?<=[0-9.)}])(?:\s+(?:"
    + "|".join(map(re.escape, _LETTER_UNITS))
    + r")|\s*(?:"
    + "|".join(map(re.escape, _OTHER_UNITS))
    + r"))\s*$",
)

# Multiple-choice letter forms: "A", "(A)", "[A]", "A.", "A)", "A:", "(A) text", "A. text".
_LETTER_PREFIX = re.compile(
    r"^(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is|:)?\s*)?", re.IGNORECASE
)
_LETTER_ALONE = re.compile(r"^[(\[]?([A-Za-z])[)\]]?[.:]?$")
_LETTER_WITH_TEXT = re.compile(r"^(?:\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Za-z])[.):])\s+\S")


def strip_math_delimiters(text: str) -> str:
    """Remove whitespace, surrounding ``$...$``/``$$...$$``/``\\(...\\)``/``\\[...\\]``."""
    text = text.strip()
    changed = True
    while changed and text:
        changed = False
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if (
                len(text) >= len(left) + len(right)
                and text.startswith(left)
                and text.endswith(right)
            ):
                text = text[len(left) : len(text) - len(right)].strip()
                changed = True
                break
    return text


def unwrap_text_commands(text: str) -> str:
    """``\\text{a \\mathrm{b}}`` -> ``a b``: unwrap innermost-first until nothing changes."""
    for _ in range(8):  # nesting deeper than 8 is not an answer worth normalising
        new = _WRAPPERS.sub(r"\1", text)
        if new == text:
            break
        text = new
    return text


def strip_trailing_unit(text: str) -> str:
    """``"5 cm"`` -> ``"5"``; ``"m"`` and ``"5 apples"`` are unchanged."""
    return _UNIT_SUFFIX.sub("", text).strip()


def normalize_text(text: str) -> str:
    """Canonical form for exact text comparison (rules in the module docstring)."""
    text = strip_math_delimiters(text)
    text = unwrap_text_commands(text)
    text = _SPACING.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = text.rstrip(".,; ").strip()
    text = strip_trailing_unit(text)
    text = text.lower()
    return strip_math_delimiters(text).rstrip(".,; ").strip()


def clean_math(text: str) -> str:
    """Light clean-up before math-verify: delimiters, trailing ``.``, outer whitespace."""
    text = strip_math_delimiters(text)
    return text.rstrip(" .").strip()


def parse_choice_letter(text: str) -> str | None:
    """The upper-case option letter written in ``text``, or None.

    Accepts ``A``, ``(A)``, ``[A]``, ``A.``, ``A)``, ``A:``, ``\\text{A}``,
    ``\\boxed{A}``, ``option A``, ``answer: (B)`` and a letter label followed by
    text (``(A) 12 cm``, ``B. the red one``). A lone lower-case letter counts
    (``b``); a letter followed by text without punctuation (``A cat``) does not.
    """
    text = unwrap_text_commands(strip_math_delimiters(text))
    text = _WHITESPACE.sub(" ", text).strip()
    text = _LETTER_PREFIX.sub("", text, count=1).strip()
    match = _LETTER_ALONE.match(text)
    if match is not None:
        return match.group(1).upper()
    match = _LETTER_WITH_TEXT.match(text)
    if match is not None:
        return next(g for g in match.groups() if g).upper()
    return None


def strip_choice_label(choice: str, index: int) -> str:
    """``"B. 12 cm"`` at index 1 -> ``"12 cm"``: drop a label that names this option's letter."""
    letter = chr(ord("A") + index)
    match = _LETTER_WITH_TEXT.match(choice.strip())
    if match is not None and next(g for g in match.groups() if g).upper() == letter:
        return choice.strip()[match.end() - 1 :].strip()
    return choice.strip()


def choice_letter(index: int) -> str:
    """0 -> ``"A"``, 1 -> ``"B"``, ..."""
    return chr(ord("A") + index)
