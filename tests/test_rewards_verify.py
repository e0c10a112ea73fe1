"""Binary answer verification (mmr1.rewards.verify), normalisation and guards."""

from __future__ import annotations

import threading
import time

import pytest

from mmr1.rewards import is_correct
from mmr1.rewards.guards import MAX_ANSWER_CHARS, guard_reason, numeric_value
from mmr1.rewards.normalize import normalize_text, parse_choice_letter
from mmr1.rewards.verify import check_answer, looks_like_text, signal_timeout


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        # Numbers and LaTeX through math-verify (a box left in the prediction is fine).
        (r"\boxed{\frac{1}{2}}", "0.5", True),
        (r"\boxed{50\%}", "0.5", True),
        (r"\frac{1}{2}", "0.5", True),
        (r"\dfrac{1}{2}", "0.5", True),
        ("0.5", r"\frac{1}{2}", True),
        (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt3}{2}", True),
        (r"\sqrt{8}", r"2\sqrt{2}", True),
        ("1,000", "1000", True),
        ("1000", "1,000", True),
        ("12,345,678", "12345678", True),
        ("-3", "-3", True),
        ("-3", "3", False),
        ("3", "-3", False),
        ("2", "3", False),
        ("12.0", "12", True),
        ("1.0000001", "1", False),
        # Percent.
        (r"50\%", "0.5", True),
        ("50%", "0.5", True),
        ("0.5", r"50\%", True),
        (r"25\%", "0.3", False),
        # Degrees.
        (r"30^\circ", "30", True),
        (r"30^{\circ}", "30", True),
        ("30°", "30", True),
        (r"60^\circ", "30", False),
        # Equations, intervals, tuples, sets.
        ("x = 3", "3", True),
        ("x=3", "3", True),
        ("x = 4", "3", False),
        ("(1, 2)", "(1,2)", True),
        ("[1, 2)", "[1,2)", True),
        ("[1, 2]", "(1,2)", False),
        (r"\{2, 1\}", r"\{1,2\}", True),
        ("x^2+1", "1+x^2", True),
        # Units, trailing period, delimiters.
        ("5 cm", "5", True),
        (r"5\text{ cm}", "5", True),
        ("10.", "10", True),
        ("$7$", "7", True),
        (r"\(7\)", "7", True),
        # Text: normalised exact match, nothing looser.
        ("Yes", "No", False),
        ("No", "Yes", False),
        ("yes", "Yes", True),
        ("YES.", "yes", True),
        (r"\text{Yes}", "yes", True),
        ("a cat", "a dog", False),
        ("a  Cat", "A cat", True),
        ("dog", "god", False),  # SymPy would call d*o*g == g*o*d
        ("ab", "ba", False),
        ("the cat", "cat", False),  # no containment
        ("cat", "the cat", False),
        ("triangle", "right triangle", False),
        ("five", "5", False),
        # Guards and empties.
        ("", "5", False),
        ("   ", "5", False),
        ("5" + " " * 5, "5", True),
    ],
)
def test_is_correct_table(prediction: str, gold: str, expected: bool) -> None:
    assert is_correct(prediction, gold) is expected


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("A", "A", True),
        ("(A)", "A", True),
        ("A.", "A", True),
        ("A)", "A", True),
        ("A:", "A", True),
        ("[A]", "A", True),
        ("a", "A", True),
        (r"\text{A}", "A", True),
        (r"\textbf{A}", "A", True),
        (r"\boxed{A}", "A", True),
        ("$A$", "A", True),
        ("option A", "A", True),
        ("Option (A)", "A", True),
        ("The answer is B", "B", True),
        ("answer: (C)", "C", True),
        ("A) some text", "A", True),
        ("(B) 12 cm", "B", True),
        ("C. the red one", "C", True),
        ("B", "A", False),
        ("(B)", "A", False),
        ("A cat", "A", False),  # a letter then words without a label is not a choice
        ("AB", "A", False),
        ("5", "A", False),
        ("A", "(A)", True),
        ("A", "A.", True),
    ],
)
def test_choice_letters_without_choices(prediction: str, gold: str, expected: bool) -> None:
    assert is_correct(prediction, gold) is expected


CHOICES = ["3 cm", r"\frac{1}{2}", "The red one", "7"]


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("B", "B", True),
        ("the red one", "C", True),  # choice text -> its letter
        ("The Red One.", "C", True),
        ("3 cm", "A", True),
        ("3", "A", True),  # unit dropped by normalisation
        ("0.5", "B", True),  # math-equal to exactly one choice
        ("7", "D", True),
        ("7", "C", False),
        ("the blue one", "C", False),
        ("red", "C", False),  # no containment
        ("C", "The red one", True),  # gold given as choice text
        ("the red one", "The red one", True),
        ("D", "The red one", False),
        ("(C) The red one", "C", True),
        ("E", "A", False),
    ],
)
def test_choice_text_maps_to_letter(prediction: str, gold: str, expected: bool) -> None:
    assert is_correct(prediction, gold, CHOICES) is expected


def test_labelled_choices_are_stripped() -> None:
    choices = ["A. blue", "B. red", "C. green"]
    assert is_correct("red", "B", choices)
    assert not is_correct("red", "A", choices)


def test_lowercase_gold_without_choices_is_math_not_a_letter() -> None:
    assert check_answer("x", "x").correct
    assert check_answer("x", "x").rule != "choice"
    assert not is_correct("y", "x")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (r"9^{9^{9^{9^{9}}}}", "power_tower"),
        ("2**3**4**5", "power_tower"),
        (r"9^{9^{9}}", "huge_exponent"),
        (r"3^{3^{20}}", "huge_exponent"),
        ("10^{1000000}", "huge_exponent"),
        ("2^(10^7)", "huge_exponent"),
        ("100000!", "huge_factorial"),
        (r"(10^{6})!", "huge_factorial"),
        ("1" * (MAX_ANSWER_CHARS + 1), "too_long"),
        ("+".join(["x^2"] * 30), "too_many_powers"),
        ("x^2 + y^2", None),
        (r"e^{x^2}", None),
        (r"2^{2023}", None),
        (r"2^{2^{10}}", None),
        ("5!", None),
        (r"\frac{\sqrt{3}}{2}", None),
    ],
)
def test_guards(answer: str, reason: str | None) -> None:
    assert guard_reason(answer) == reason


def test_guarded_prediction_is_wrong_fast() -> None:
    start = time.perf_counter()
    verdict = check_answer(r"9^{9^{9^{9^{9}}}}", "1")
    assert verdict == (False, False, "guard:power_tower")
    assert not is_correct("1" * 100_000, "1")
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("expr", "value"),
    [("9^{9}", 9.0**9), ("2*10^5", 2e5), ("(1+2)^3", 27.0), ("2^3^2", 512.0), ("x^2", None)],
)
def test_numeric_value(expr: str, value: float | None) -> None:
    assert numeric_value(expr) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"$\text{Yes}.$", "yes"),
        ("  A   Cat ", "a cat"),
        (r"5\,\text{cm}", "5"),
        ("5 apples", "5 apples"),
        ("m", "m"),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    ("text", "letter"),
    [("(b)", "B"), ("D.", "D"), ("option C", "C"), ("A cat", None), ("12", None), ("", None)],
)
def test_parse_choice_letter(text: str, letter: str | None) -> None:
    assert parse_choice_letter(text) == letter


@pytest.mark.parametrize(
    ("gold", "is_text"),
    [("Yes", True), (r"\text{east}", True), (r"\frac{\sqrt{3}}{2}", False), ("2x+1", False),
     (r"\sin x", False), ("5 cm", False), ("log(2)", False)],
)  # fmt: skip
def test_looks_like_text(gold: str, is_text: bool) -> None:
    assert looks_like_text(gold) is is_text


def test_signal_timeout_only_in_main_thread() -> None:
    assert signal_timeout(5.0) == 2
    assert signal_timeout(0.5) == 1
    assert signal_timeout(None) is None
    seen: list[int | None] = []
    thread = threading.Thread(target=lambda: seen.append(signal_timeout(5.0)))
    thread.start()
    thread.join()
    assert seen == [None]


def test_is_correct_works_in_a_thread() -> None:
    """math-verify's signal timeout would raise off the main thread; we pass None there."""
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(is_correct(r"\frac{1}{2}", "0.5")))
    thread.start()
    thread.join(timeout=30)
    assert results == [True]


def test_math_verify_signal_timeout_is_reported_inline() -> None:
    # Expanding a 5-variable 24th power takes many seconds of pure-Python SymPy; the
    # per-operation alarm (1 s for timeout_s=2) interrupts it.
    start = time.perf_counter()
    verdict = check_answer("(a+b+c+d+e)^{24}", "1", timeout_s=2.0)
    elapsed = time.perf_counter() - start
    assert verdict.correct is False
    assert verdict.timed_out is True
    assert elapsed < 30.0  # the alarm fired (timed_out); loose for a busy machine


def test_quick_verdict_agrees_with_check_answer() -> None:
    """Where quick_verdict decides (no math-verify), it gives check_answer's exact verdict."""
    from mmr1.rewards.verify import quick_verdict

    pairs = [
        ("5", "5", None), ("1,000", "1000", None), ("12.0", "12", None), ("-3", "3", None),
        ("2", "3", None), ("0.5", r"\frac{1}{2}", None), (r"\frac{1}{2}", "0.5", None),
        ("Yes", "No", None), ("yes", "Yes", None), ("a cat", "a dog", None), ("B", "B", None),
        ("(B)", "A", None), ("7", "D", CHOICES), ("0.5", "B", CHOICES),
        ("the red one", "C", CHOICES), ("3", "A", CHOICES), (r"9^{9^{9^{9}}}", "1", None),
        ("", "5", None), ("x = 3", "3", None),
        ("[1, 2)", "[1,2)", None), (r"50\%", "0.5", None), ("5 cm", "5", None), ("10.", "10", None),
        ("1.0000001", "1", None), ("3", "x", None), ("x", "x", None),
    ]  # fmt: skip
    decided = 0
    for prediction, gold, choices in pairs:
        quick = quick_verdict(prediction, gold, choices)
        if quick is not None:
            decided += 1
            assert quick == check_answer(prediction, gold, choices), (prediction, gold)
    # Letters, text, plain numbers and guards are settled; LaTeX, sets, decimals are not.
    assert quick_verdict("(B)", "A") == (False, False, "choice")
    assert quick_verdict("1,000", "1000") == (True, False, "math")
    assert quick_verdict(r"9^{9^{9^{9}}}", "1") == (False, False, "guard:power_tower")
    assert quick_verdict(r"\frac{1}{2}", "0.5") is None
    assert quick_verdict("1.0000001", "1") is None  # math-verify's rounding decides
    assert quick_verdict("0.5", "B", CHOICES) is None  # a choice compared by math-verify
    assert 14 <= decided < len(pairs)
