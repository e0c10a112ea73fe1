"""The patched LaTeX parser (mmr1.rewards.fastparse) gives exactly the stock results."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import sympy
from latex2sympy2_extended.latex2sympy2 import latex2sympy
from math_verify.grader import should_treat_as_complex

from mmr1.rewards import fastparse
from mmr1.rewards.verify import check_answer

HAND_PICKED = [
    "12", "0012", "-7", "1,000", "12,345.5", "3.14159265358979323846", "0.50", ".5", "5.",
    "1e5", "2.5e-3", r"\frac{1}{2}", r"\dfrac{12}{40}", r"\tfrac34", r"\frac{\sqrt{3}}{2}",
    r"2\sqrt{2}", r"\sqrt[3]{27}", r"50\%", r"0.5\%", r"30^\circ", r"30^{\circ}", r"\pi",
    r"3\pi/4", r"e^{i\pi}", r"x^2+2x+1", r"(x+1)^2", r"x = 3", r"y=2x+1", r"x \leq 5",
    r"1 < x < 2", r"[3, 7)", r"(-\infty, 2] \cup [5, \infty)", r"\{1, 2, 3\}",
    r"\{2014, 2016\}", "(1, 2)", "1, 2, 3", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
    r"\sin(x)", r"\log_2 8", r"\ln e", r"5!", r"\binom{5}{2}", r"\text{east}", r"\text{A}",
    r"\mathrm{cm}", r"12\text{ cm}", r"\$5", r"5\%\text{ of }20", r"a_1 + a_2", r"\overline{AB}",
    r"\angle ABC", r"3 + 4i", r"\infty", r"-\infty", r"\emptyset", r"x \in \mathbb{R}",
    # Not valid LaTeX for the grammar: both parsers must fail the same way.
    r"\frac{1}{", "}", r"\sqrt", "x^", "((1)", r"\boxed{3", "3 +* 4", "", "   ",
    "１２", "²", "٣",  # non-ASCII digits must not take the integer fast path
]  # fmt: skip


def generated(n: int, seed: int) -> Iterator[str]:
    """Seeded random answers: numbers, fractions, powers, roots, sets, intervals, typos."""
    rng = random.Random(seed)
    atoms = ["x", "y", r"\pi", "e", "a", r"\theta", "n"]

    def number() -> str:
        roll = rng.random()
        if roll < 0.4:
            return str(rng.randint(0, 10 ** rng.randint(1, 9)))
        if roll < 0.6:
            return f"{rng.randint(0, 999)}.{rng.randint(0, 99999)}"
        if roll < 0.7:
            return f"{rng.randint(1, 999)},{rng.randint(0, 999):03d}"
        return str(rng.randint(-50, 50))

    def expr(depth: int = 0) -> str:
        roll = rng.random()
        if depth > 2 or roll < 0.3:
            return number() if rng.random() < 0.6 else rng.choice(atoms)
        sub = expr(depth + 1)
        forms = [
            rf"\frac{{{sub}}}{{{expr(depth + 1)}}}",
            rf"\sqrt{{{sub}}}",
            f"{sub}^{{{expr(depth + 1)}}}",
            f"{sub} + {expr(depth + 1)}",
            rf"{sub} \cdot {expr(depth + 1)}",
            f"({sub})",
            rf"{sub}\%",
            rf"\sin({sub})",
            f"x = {sub}",
        ]
        return rng.choice(forms)

    for _ in range(n):
        roll = rng.random()
        if roll < 0.6:
            text = expr()
        elif roll < 0.75:
            low, high = sorted(rng.sample(range(-30, 30), 2))
            text = f"{rng.choice('[(')}{low}, {high}{rng.choice('])')}"
        elif roll < 0.85:
            text = r"\{" + ", ".join(expr(2) for _ in range(rng.randint(1, 3))) + r"\}"
        else:  # a typo somewhere
            text = expr()
            cut = rng.randrange(len(text) + 1)
            text = text[:cut] + rng.choice(["{", "}", "\\", "^", "("]) + text[cut:]
        yield text


def parse_all(texts: list[str]) -> list[tuple[str, str]]:
    """What math-verify's parser call returns for each text: ("ok", srepr) or the error."""
    out = []
    for text in texts:
        try:
            expr = latex2sympy(
                text,
                is_real=not should_treat_as_complex(text),
                convert_degrees=False,
                normalization_config=None,
            )
            out.append(("ok", sympy.srepr(expr)))
        except Exception as exc:
            out.append((type(exc).__name__, str(exc)))
    return out


def clear_parse_caches() -> None:
    """Forget cached parses, so the next run really parses again."""
    from math_verify.parser import parse_latex_cached

    from mmr1.rewards import verify

    verify._parse_boxed.cache_clear()
    parse_latex_cached.cache_clear()


@pytest.fixture
def stock_then_fast() -> Iterator[None]:
    fastparse.uninstall()
    clear_parse_caches()
    try:
        yield
    finally:
        assert fastparse.install()
        clear_parse_caches()


def test_first_math_verify_use_installs_the_fast_parser() -> None:
    from mmr1.rewards.verify import math_verify_api

    math_verify_api()
    assert fastparse.installed()


def test_fast_parser_matches_stock_parser(stock_then_fast: None) -> None:
    texts = HAND_PICKED + list(generated(150, seed=3))
    stock = parse_all(texts)
    assert fastparse.install()
    fast = parse_all(texts)
    mismatches = [(t, s, f) for t, s, f in zip(texts, stock, fast, strict=True) if s != f]
    assert mismatches == []
    assert sum(kind == "ok" for kind, _ in stock) > 120  # the corpus mostly parses
    assert sum(kind != "ok" for kind, _ in stock) > 30  # and has errors to agree on


def test_fast_parser_same_verdicts(stock_then_fast: None) -> None:
    pairs = [
        (r"\dfrac{24}{80}", r"\frac{3}{10}"),
        (r"[-3, 7)", "[-3,7)"),
        (r"(-3, 7]", "[-3,7)"),
        (r"\sqrt{45}", r"3\sqrt{5}"),
        (r"\sqrt{46}", r"3\sqrt{5}"),
        (r"37\%", "0.37"),
        (r"38\%", "0.37"),
        (r"x = 14", "14"),
        (r"\{1, 2\}", r"\{2, 1\}"),
        ("0.333333", r"\frac{1}{3}"),
    ]
    stock = [check_answer(p, g, timeout_s=None) for p, g in pairs]
    assert fastparse.install()
    clear_parse_caches()
    fast = [check_answer(p, g, timeout_s=None) for p, g in pairs]
    assert fast == stock
    assert [v.correct for v in fast] == [True, True, False, True, False, True, False, True,
                                         True, True]  # fmt: skip


def test_install_is_idempotent_and_reversible(stock_then_fast: None) -> None:
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    stock_method = _Latex2Sympy.parse_number
    assert not fastparse.installed()
    assert fastparse.install() and fastparse.install()
    assert _Latex2Sympy.parse_number is not stock_method
    fastparse.uninstall()
    assert _Latex2Sympy.parse_number is stock_method
