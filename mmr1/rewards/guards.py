"""Cheap pre-parse guards against answers that would blow up symbolic verification.

math-verify hands answers to SymPy, which may evaluate ``9^{9^{9}}`` or
``(10^6)!`` exactly: big-integer arithmetic in C that no signal interrupts.
The hard bound is the per-item deadline enforced by the parent process in
:mod:`mmr1.rewards.pool`; these guards only reject the obvious cases early, in
linear time, so they cost neither a worker kill nor a deadline. Each guard is
conservative: a rare legitimate answer it rejects (``1^{10^{9}}``) is scored
wrong, never crashes anything.

Guards (``guard_reason`` returns the first that fires):

* ``too_long``: more than :data:`MAX_ANSWER_CHARS` characters. A final answer is
  short; a 100k-character "answer" is a degenerate generation.
* ``too_many_powers``: more than :data:`MAX_POWER_OPERATORS` ``^``/``**``.
* ``power_tower``: exponents nested more than :data:`MAX_EXPONENT_DEPTH` deep
  (``a^{b^{c^{d}}}`` is depth 3).
* ``huge_exponent``: an exponent that is a plain number expression (digits,
  ``+ - * / ^``, braces, parentheses) whose value exceeds :data:`MAX_EXPONENT`.
* ``huge_factorial``: a factorial of an integer literal, or of a number-only group
  such as ``(10^{6})!``, above :data:`MAX_FACTORIAL`.
"""

from __future__ import annotations

import math
import re

MAX_ANSWER_CHARS = 1000
MAX_POWER_OPERATORS = 24
MAX_EXPONENT_DEPTH = 2
MAX_EXPONENT = 100_000  # 10^{100000} has 100k digits: still milliseconds for SymPy
MAX_FACTORIAL = 20_000

_POWER = re.compile(r"\^|\*\*")
_FACTORIAL_ARG = re.compile(r"(?:(\d+)|([)}]))\s*!")
_NUMERIC_TOKENS = re.compile(r"\s*(\d+(?:\.\d*)?|\*\*|\\cdot|\\times|[-+*/^(){}])")


def _group_end(text: str, start: int) -> int:
    """Index just past the group that opens at ``text[start]`` (``{`` or ``(``)."""
    close = "}" if text[start] == "{" else ")"
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == text[start]:
            depth += 1
        elif ch == close:
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _exponent_end(text: str, start: int) -> int:
    """End of the exponent that begins at ``start`` (just after ``^`` or ``**``).

    A braced/parenthesised group, a ``\\command``, a run of digits, or one
    character; a following ``^``/``**`` continues the exponent (``2^3^4`` is
    right-associative, so ``3^4`` is the exponent).
    """
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return i
    if text[i] in "{(":
        end = _group_end(text, i)
    elif text[i] == "\\":
        match = re.compile(r"\\[A-Za-z]+").match(text, i)
        end = match.end() if match else i + 2
    elif text[i].isdigit():
        end = i
        while end < len(text) and (text[end].isdigit() or text[end] == "."):
            end += 1
    else:
        end = i + 1
    rest = text[end:].lstrip(" ")
    if rest.startswith("^") or rest.startswith("**"):
        op_at = len(text) - len(rest)
        return _exponent_end(text, op_at + (1 if rest[0] == "^" else 2))
    return end


def _exponents(text: str) -> list[str]:
    """The top-level exponents of ``text``, each as its source text (braces stripped)."""
    out: list[str] = []
    pos = 0
    while True:
        match = _POWER.search(text, pos)
        if match is None:
            return out
        end = _exponent_end(text, match.end())
        exponent = text[match.end() : end].strip()
        if exponent[:1] == "{" and _group_end(exponent, 0) == len(exponent):
            exponent = exponent[1:-1]
        out.append(exponent)
        pos = max(end, match.end())


def exponent_depth(text: str, cap: int = MAX_EXPONENT_DEPTH + 1) -> int:
    """How deeply exponents nest, at most ``cap``: ``x^2`` -> 1, ``e^{x^2}`` -> 2."""
    if cap <= 0:
        return 0
    return max((1 + exponent_depth(e, cap - 1) for e in _exponents(text)), default=0)


def numeric_value(expr: str) -> float | None:
    """Value of a plain number expression (``9^{9}``, ``2*10^5``), or None if it has symbols.

    Overflow gives ``inf``. Recursive descent over +, -, *, /, ^ (right-assoc), groups.
    """
    tokens: list[str] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        match = _NUMERIC_TOKENS.match(expr, pos)
        if match is None or match.end() == pos:
            return None
        tokens.append(match.group(1))
        pos = match.end()
        while pos < len(expr) and expr[pos] == " ":
            pos += 1
    if not tokens or len(tokens) > 200:
        return None
    index = 0

    def peek() -> str | None:
        return tokens[index] if index < len(tokens) else None

    def take() -> str:
        nonlocal index
        index += 1
        return tokens[index - 1]

    def atom() -> float:
        tok = take()
        if tok in "({":
            value = additive()
            if take() not in ")}":
                raise ValueError
            return value
        if tok == "-":
            return -power()
        if tok == "+":
            return power()
        return float(tok)

    def power() -> float:
        base = atom()
        if peek() in ("^", "**"):
            take()
            exponent = power()
            try:
                return math.pow(abs(base), exponent) if base != 0 else 0.0
            except OverflowError:
                return math.inf
        return base

    def multiplicative() -> float:
        value = power()
        while peek() in ("*", "/", "\\cdot", "\\times"):
            op = take()
            rhs = power()
            value = value / rhs if op == "/" and rhs else value * rhs
        return value

    def additive() -> float:
        value = multiplicative()
        while peek() in ("+", "-"):
            op = take()
            rhs = multiplicative()
            value = value + rhs if op == "+" else value - rhs
        return value

    try:
        value = additive()
    except (ValueError, IndexError, TypeError):
        return None
    return value if index == len(tokens) else None


def _has_huge_exponent(text: str, level: int = 0) -> bool:
    for exponent in _exponents(text):
        value = numeric_value(exponent)
        if value is not None and (math.isnan(value) or abs(value) > MAX_EXPONENT):
            return True
        if level < MAX_EXPONENT_DEPTH and _has_huge_exponent(exponent, level + 1):
            return True
    return False


def guard_reason(answer: str) -> str | None:
    """Why ``answer`` must not be parsed (a guard name from the module docstring), or None."""
    if len(answer) > MAX_ANSWER_CHARS:
        return "too_long"
    if len(_POWER.findall(answer)) > MAX_POWER_OPERATORS:
        return "too_many_powers"
    if "^" in answer or "**" in answer:
        if exponent_depth(answer) > MAX_EXPONENT_DEPTH:
            return "power_tower"
        if _has_huge_exponent(answer):
            return "huge_exponent"
    if "!" in answer and _has_huge_factorial(answer):
        return "huge_factorial"
    return None


def _has_huge_factorial(text: str) -> bool:
    """A ``!`` after an integer literal or a number-only group, ``(10^6)!``, that is too big."""
    for match in _FACTORIAL_ARG.finditer(text):
        if match.group(1) is not None:
            value: float | None = float(match.group(1)) if len(match.group(1)) < 10 else math.inf
        else:
            close = match.end(2) - 1
            open_at = _group_start(text, close)
            value = numeric_value(text[open_at + 1 : close]) if open_at is not None else None
        if value is not None and value > MAX_FACTORIAL:
            return True
    return False


def _group_start(text: str, close: int) -> int | None:
    """Index of the bracket that opens the group closed at ``text[close]``, or None."""
    opener = "(" if text[close] == ")" else "{"
    depth = 0
    for i in range(close, -1, -1):
        if text[i] == text[close]:
            depth += 1
        elif text[i] == opener:
            depth -= 1
            if depth == 0:
                return i
    return None
