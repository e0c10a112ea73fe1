"""Numeric value of a short LaTeX answer, without ``eval`` and without SymPy.

MathVision compares two answers numerically when their strings differ: both
sides are read as LaTeX, evaluated, and compared after rounding to 2 decimals
(tuples element-wise). :func:`latex_value` is that reader, a recursive-descent
parser over a small, closed grammar, so no input can run code:

    sequence := expr (',' expr)*            -- a tuple when there is a comma
    expr     := term (('+' | '-') term)*
    term     := unary (('*' | '/' | \\cdot | \\times | \\div | implicit) unary)*
    unary    := ('+' | '-') unary | power
    power    := postfix ('^' argument)?     -- right-associative
    postfix  := atom '!'*
    atom     := number | \\pi | (expr) | {expr} | [expr]
              | \\frac arg arg | \\sqrt[n]? arg | \\sin|\\cos|\\tan|\\ln|\\exp arg

``2\\sqrt{3}`` is ``2 * sqrt(3)``; an unbraced argument is one digit, as in
LaTeX (``\\frac12`` is one half). Letters other than these commands (variables)
make the answer non-numeric: the result is None. Work is bounded: at most
:data:`MAX_CHARS` characters, :data:`MAX_DEPTH` nesting levels, exponents up to
:data:`MAX_EXPONENT` and factorials up to 170 (larger values are None, never
computed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

MAX_CHARS = 200
MAX_DEPTH = 40
MAX_EXPONENT = 1000.0

Value = float | tuple[float, ...]

_TOKEN = re.compile(r"\d+(?:\.\d*)?|\.\d+|\\[A-Za-z]+|\S")
_DROP = re.compile(r"\\left|\\right|\\[,;:! ]|\\quad|\\qquad|~")
_UNICODE = {"√": "\\sqrt", "π": "\\pi", "×": "*", "·": "*", "÷": "/", "−": "-"}
_MULTIPLY = {"*", "\\cdot", "\\times"}
_DIVIDE = {"/", "\\div"}
_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "\\sin": math.sin,
    "\\cos": math.cos,
    "\\tan": math.tan,
    "\\ln": math.log,
    "\\exp": math.exp,
}
_FRACTIONS = {"\\frac", "\\dfrac", "\\tfrac"}
_OPEN_CLOSE = {"(": ")", "{": "}", "[": "]"}


class _NotNumeric(Exception):
    """The text is not a number expression of the grammar (or its value is out of bounds)."""


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    # ---------------------------------------------------------------- token access
    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _NotNumeric
        self.pos += 1
        return token

    def expect(self, token: str) -> None:
        if self.take() != token:
            raise _NotNumeric

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _NotNumeric

    # ---------------------------------------------------------------- grammar
    def sequence(self) -> Value:
        values = [self.expr()]
        while self.peek() == ",":
            self.take()
            values.append(self.expr())
        if self.pos != len(self.tokens):
            raise _NotNumeric
        return values[0] if len(values) == 1 else tuple(values)

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            sign = self.take()
            rhs = self.term()
            value = value + rhs if sign == "+" else value - rhs
        return value

    def term(self) -> float:
        value = self.unary()
        while True:
            token = self.peek()
            if token in _MULTIPLY:
                self.take()
                value *= self.unary()
            elif token in _DIVIDE:
                self.take()
                divisor = self.unary()
                if divisor == 0:
                    raise _NotNumeric
                value /= divisor
            elif token is not None and _starts_atom(token):
                value *= self.unary()  # implicit product: 2\sqrt{3}, 3\pi, 2(1+1)
            else:
                return value

    def unary(self) -> float:
        if self.peek() in ("+", "-"):
            sign = self.take()
            self.enter()
            value = self.unary()
            self.depth -= 1
            return -value if sign == "-" else value
        return self.power()

    def power(self) -> float:
        base = self.postfix()
        if self.peek() != "^":
            return base
        self.take()
        self.enter()
        exponent = self.argument(signed=True)
        self.depth -= 1
        if abs(exponent) > MAX_EXPONENT:
            raise _NotNumeric
        try:
            return _finite(math.pow(base, exponent))
        except (OverflowError, ValueError):  # overflow, or a negative base to a fraction
            raise _NotNumeric from None

    def postfix(self) -> float:
        value = self.atom()
        while self.peek() == "!":
            self.take()
            if value < 0 or value != int(value) or value > 170:
                raise _NotNumeric
            value = float(math.factorial(int(value)))
        return value

    def atom(self) -> float:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return float(token)
        if token == "\\pi":
            return math.pi
        if token in _OPEN_CLOSE:
            return self.group(token)
        if token in _FRACTIONS:
            numerator = self.argument()
            denominator = self.argument()
            if denominator == 0:
                raise _NotNumeric
            return numerator / denominator
        if token == "\\sqrt":
            root = 2.0
            if self.peek() == "[":
                self.take()
                root = self.group("[")
            radicand = self.argument()
            if radicand < 0 or root == 0:
                raise _NotNumeric
            return _finite(radicand ** (1.0 / root))
        if token in _FUNCTIONS:
            argument = self.argument() if self.peek() in ("(", "{") else self.unary()
            try:
                return _finite(_FUNCTIONS[token](argument))
            except (OverflowError, ValueError):
                raise _NotNumeric from None
        raise _NotNumeric  # a variable, an unknown command, a stray symbol

    def group(self, opener: str) -> float:
        self.enter()
        value = self.expr()
        self.expect(_OPEN_CLOSE[opener])
        self.depth -= 1
        return value

    def argument(self, *, signed: bool = False) -> float:
        """A command argument: a braced group, else one digit, else one atom."""
        token = self.peek()
        if token == "{":
            self.take()
            return self.group("{")
        if token is not None and token[0].isdigit() and len(token) > 1:
            self.tokens[self.pos] = token[1:]  # \frac12: the argument is the digit "1"
            return float(token[0])
        if signed and token in ("+", "-"):
            return self.unary()
        return self.postfix()


def _starts_atom(token: str) -> bool:
    if token[0].isdigit() or token[0] == "." or token in ("(", "{"):
        return True
    return token.startswith("\\") and token not in _MULTIPLY | _DIVIDE


def _finite(value: float) -> float:
    if math.isnan(value) or math.isinf(value):
        raise _NotNumeric
    return value


def latex_value(text: str) -> Value | None:
    """The number (or tuple of numbers) ``text`` denotes, or None when it is not numeric.

    >>> round(latex_value("2\\\\sqrt{3}"), 4)
    3.4641
    >>> latex_value("(1, \\\\frac{1}{2})")
    (1.0, 0.5)
    >>> latex_value("x + 1") is None
    True
    """
    if len(text) > MAX_CHARS:
        return None
    for old, new in _UNICODE.items():
        text = text.replace(old, new)
    text = _DROP.sub(" ", text).strip().strip("$").strip()
    tokens = _TOKEN.findall(text)
    if not tokens:
        return None
    # "(1, 2)" / "[1, 2]": a tuple written with brackets.
    if len(tokens) > 2 and tokens[0] in "([" and tokens[-1] in ")]" and _wraps(tokens):
        inner = tokens[1:-1]
        if "," in inner:
            tokens = inner
    try:
        return _Parser(tokens).sequence()
    except (_NotNumeric, ZeroDivisionError, RecursionError):
        return None


def _wraps(tokens: list[str]) -> bool:
    """True when the first bracket closes at the last token (``(1)+(2)`` is not wrapped)."""
    depth = 0
    for i, token in enumerate(tokens):
        if token in "([{":
            depth += 1
        elif token in ")]}":
            depth -= 1
            if depth == 0:
                return i == len(tokens) - 1
    return False


def rounded_equal(a: Value, b: Value, digits: int = 2) -> bool:
    """Equal after rounding to ``digits`` decimals; tuples element-wise, same length."""
    left = a if isinstance(a, tuple) else (a,)
    right = b if isinstance(b, tuple) else (b,)
    return len(left) == len(right) and all(
        round(x, digits) == round(y, digits) for x, y in zip(left, right, strict=True)
    )
