"""Official benchmark scoring rules (docs/BENCHMARKS.md), on rows in each benchmark's schema:
ChartQA, MathVista and MathVision (LogicVista and MathVerse: test_eval_scoring_choices.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mmr1.eval.scoring import (
    chartqa_extract,
    chartqa_relaxed,
    chartqa_relaxed_any,
    latex_value,
    levenshtein,
    mathvision_correct,
    mathvision_equal,
    mathvision_extract,
    mathvista_correct,
    mathvista_extract,
    mathvista_normalize,
    nearest_choice,
    normalize_answer,
    relaxed_match,
)
from mmr1.eval.scoring.text import answer_phrase

# ------------------------------------------------------------------------ ChartQA


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("105", "100", True),  # exactly +5%: inclusive
        ("95", "100", True),  # exactly -5%
        ("105.1", "100", False),  # just over, above the gold
        ("94.9", "100", False),  # just over, below the gold
        ("21", "20", True),  # 1/20 = 0.05 exactly
        ("-105", "-100", True),  # |gold| in the denominator
        ("-106", "-100", False),
        ("45%", "0.45", True),  # a trailing % divides by 100
        ("0.45", "45%", True),
        ("45", "45%", False),  # 45 vs 0.45
        ("0", "0", True),  # zero gold: string comparison
        ("0.0", "0", False),
        ("0.01", "0", False),
        ("1,000", "1000", False),  # "1,000" does not parse
        ("1,000", "1,000", True),  # ... but equal strings match
        ("$12", "12", False),
        ("Yes", "yes", True),  # case-insensitive
        ("yes.", "yes", False),  # no other normalisation
        ("<think>read the bars</think><answer>\\boxed{105}</answer>", "100", True),
        ("The bars say \\boxed{45\\%}", "0.45", True),
        ("\\boxed{\\text{Yes}}", "Yes", True),
    ],
)
def test_chartqa_relaxed_accuracy(prediction: str, gold: str, expected: bool) -> None:
    assert chartqa_relaxed(prediction, gold) is expected


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        # Inclusive on both sides, in exact arithmetic (floats give 0.050000000000000044).
        ("1.05", "1", True),
        ("0.95", "1", True),
        ("1.0501", "1", False),
        ("0.9499", "1", False),
        ("0.76", "0.8", True),
        ("0.84", "0.8", True),
        ("0.7599", "0.8", False),
        ("0.8401", "0.8", False),
        ("-1.05", "-1", True),
        ("-0.95", "-1", True),
        # Percentages are divided by exactly 100 before the comparison.
        ("105%", "1", True),
        ("95%", "1", True),
        ("105.01%", "1", False),
        ("1.05", "100%", True),
        ("76%", "0.8", True),
        ("75.99%", "0.8", False),
        ("84%", "80%", True),
        ("84.01%", "80%", False),
    ],
)
def test_chartqa_five_percent_boundary_is_inclusive(
    prediction: str, gold: str, expected: bool
) -> None:
    assert chartqa_relaxed(prediction, gold) is expected
    assert relaxed_match(prediction, gold) is expected


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("1e3", "1000", True),  # float() reads exponents, so the exact parse does too
        ("1.05e2", "100", True),
        ("-0.5", "-0.5", True),
        ("-0.5", "0.5", False),  # 200% off
        (".5", "0.5", True),
        ("12.", "12", True),
        ("12", " 12 ", True),  # the gold parses with its stray whitespace, as in float()
        ("1e-999", "0", False),  # beyond a float's range: the float value (0), zero gold
        ("0", "0.0", False),  # zero gold: string comparison
        # Non-finite values are never correct, not even against themselves.
        ("nan", "nan", False),
        ("NaN", "5", False),
        ("inf", "inf", False),
        ("Infinity", "1e400", False),
        ("inf", "0", False),
        ("5", "nan", False),
        ("nan%", "nan%", False),
    ],
)
def test_chartqa_number_forms(prediction: str, gold: str, expected: bool) -> None:
    assert relaxed_match(prediction, gold) is expected


def test_chartqa_extracts_the_box_else_the_answer_phrase_else_the_whole_response() -> None:
    assert chartqa_extract("so \\boxed{12.5}") == "12.5"
    assert chartqa_extract("<answer> 12.5 </answer>") == "12.5"
    assert chartqa_extract("  12.5 \n") == "12.5"
    assert chartqa_extract("the answer is 12.5") == "12.5"
    assert chartqa_extract("The bars differ by 3.\nAnswer: 45%") == "45%"
    assert chartqa_extract("First the answer is 3. Then the answer is $12$.") == "12"
    assert chartqa_extract("The answer is \\text{Yes}.") == "Yes"
    # The box beats a later phrase; no phrase: the whole response.
    assert chartqa_extract("\\boxed{7} so the answer is 9") == "7"
    assert chartqa_extract("Yes") == "Yes"
    assert chartqa_relaxed("Reading the chart, the answer is 10.5.", "10") is True
    assert chartqa_relaxed("Reading the chart, the answer is 10.6.", "10") is False
    assert chartqa_relaxed("So the answer is: yes", "Yes") is True


def test_answer_phrase_is_case_insensitive_and_keeps_positions() -> None:
    assert answer_phrase("The Answer Is: 12") == "12"
    assert answer_phrase("ANSWER: B") == "B"
    assert answer_phrase("First the answer is 3. The answers are A and C.") == "A and C"
    # "İ" lowers to two characters: the search must still cut at the right place.
    assert answer_phrase("İstanbul: the ANSWER is 7.") == "7"
    assert answer_phrase("İİİ the answer is B because A fails.") == "B because A fails"
    assert answer_phrase("no phrase here") is None


def test_chartqa_max_over_golds() -> None:
    assert chartqa_relaxed_any("\\boxed{7}", ["5", "7"]) is True
    assert chartqa_relaxed_any("\\boxed{7.3}", ["5", "7"]) is True  # 4.3% off the second
    assert chartqa_relaxed_any("\\boxed{8}", ["5", "7"]) is False
    assert chartqa_relaxed_any("\\boxed{8}", []) is False


# ------------------------------------------------------------------------ MathVista


def mathvista_row(**fields: Any) -> dict[str, Any]:
    """A MathVista testmini row (exact column set; images omitted)."""
    row: dict[str, Any] = {
        "pid": "1",
        "question": "What is the value?",
        "image": "images/1.jpg",
        "choices": None,
        "unit": None,
        "precision": None,
        "answer": "",
        "question_type": "free_form",
        "answer_type": "integer",
        "metadata": {
            "category": "math-targeted-vqa",
            "context": "synthetic scene",
            "grade": "elementary school",
            "img_height": 480,
            "img_width": 640,
            "language": "english",
            "skills": ["arithmetic reasoning"],
            "source": "CLEVR-Math",
            "split": "testmini",
            "task": "math word problem",
        },
        "query": "Hint: ...\nQuestion: What is the value?",
    }
    row.update(fields)
    return row


FLOAT_P1 = mathvista_row(answer_type="float", precision=1.0, answer="1.2")
FLOAT_P2 = mathvista_row(answer_type="float", precision=2.0, answer="0.45")
INTEGER = mathvista_row(answer_type="integer", answer="1000")
LIST = mathvista_row(answer_type="list", answer="[2014, 2016]")
MC_NUMBERS = mathvista_row(
    question_type="multi_choice", answer_type="text", choices=["3", "5", "7", "9"], answer="7"
)
MC_WORDS = mathvista_row(
    question_type="multi_choice",
    answer_type="text",
    choices=["larger than", "equal to", "smaller than"],
    answer="equal to",
)


def test_mathvista_float_precision_is_cast_to_int() -> None:
    # round(x, 1.0) raises TypeError; the official normalisation uses int(precision).
    assert mathvista_normalize("1.23", FLOAT_P1) == "1.2"
    assert mathvista_correct("1.23", FLOAT_P1) is True
    assert mathvista_correct("1.26", FLOAT_P1) is False  # rounds to 1.3
    assert mathvista_normalize("0.449", FLOAT_P2) == "0.45"
    assert mathvista_correct("0.449", FLOAT_P2) is True
    assert mathvista_correct("0.444", FLOAT_P2) is False
    assert mathvista_correct("0.5", FLOAT_P2) is False  # "0.5" != "0.45"


def test_mathvista_float_from_responses() -> None:
    assert mathvista_correct(mathvista_extract("\\boxed{1.23}", FLOAT_P1), FLOAT_P1) is True
    assert mathvista_correct(mathvista_extract("1.2", FLOAT_P1), FLOAT_P1) is True  # quick path
    response = "<think>..</think><answer>\\boxed{\\frac{9}{20}}</answer>"
    assert mathvista_extract(response, FLOAT_P2) == "0.45"
    assert mathvista_correct(mathvista_extract(response, FLOAT_P2), FLOAT_P2) is True
    # Without a precision, the gold's number of decimals is used.
    no_precision = mathvista_row(answer_type="float", precision=None, answer="2.5")
    assert mathvista_correct("2.54", no_precision) is True


def test_mathvista_integer() -> None:
    assert mathvista_correct("1000.0", INTEGER) is True  # str(int(float(x)))
    assert mathvista_correct("1,000", INTEGER) is False  # the normalisation does not parse it
    assert mathvista_extract("so \\boxed{1,000}", INTEGER) == "1000"  # ... the extractor does
    assert mathvista_correct(mathvista_extract("\\boxed{1000 g}", INTEGER), INTEGER) is True
    assert mathvista_correct(mathvista_extract("1000", INTEGER), INTEGER) is True
    assert mathvista_correct(mathvista_extract("\\boxed{999}", INTEGER), INTEGER) is False
    assert mathvista_correct("many", INTEGER) is False


def test_mathvista_list_answers() -> None:
    assert mathvista_correct("[2014, 2016]", LIST) is True
    assert mathvista_correct(mathvista_extract("\\boxed{[2014, 2016]}", LIST), LIST) is True
    assert mathvista_extract("\\boxed{2014,2016}", LIST) == "[2014, 2016]"
    assert mathvista_correct(mathvista_extract("\\boxed{2014,2016}", LIST), LIST) is True
    assert mathvista_correct(mathvista_extract("\\boxed{[2014, 2015]}", LIST), LIST) is False
    assert mathvista_correct(mathvista_extract("\\boxed{2016, 2014}", LIST), LIST) is False


def test_mathvista_set_braces_are_a_list() -> None:
    for response in (
        "\\boxed{\\{2014, 2016\\}}",
        "\\boxed{\\left\\{2014, 2016\\right\\}}",
        "\\boxed{\\{2014,2016\\}}",
        "\\boxed{[[2014, 2016]]}",
        "\\boxed{years = 2014, 2016}",
    ):
        assert mathvista_extract(response, LIST) == "[2014, 2016]", response
        assert mathvista_correct(mathvista_extract(response, LIST), LIST) is True, response
    assert mathvista_correct(mathvista_extract("\\boxed{\\{2014, 2015\\}}", LIST), LIST) is False
    assert mathvista_correct(mathvista_extract("\\boxed{\\{2016, 2014\\}}", LIST), LIST) is False
    assert mathvista_normalize("\\{2014, 2016\\}", LIST) == "[2014, 2016]"  # judge extractions
    # Brackets that do not wrap the whole answer stay.
    pairs = mathvista_row(answer_type="list", answer="['(1', '2)', '(3', '4)']")
    assert mathvista_extract("\\boxed{(1, 2), (3, 4)}", pairs) == "['(1', '2)', '(3', '4)']"


def test_mathvista_equation_compares_its_right_hand_side() -> None:
    row = mathvista_row(answer_type="integer", answer="14")
    assert mathvista_extract("so \\boxed{x = 14}", row) == "14"
    assert mathvista_correct(mathvista_extract("\\boxed{x = 14}", row), row) is True
    assert mathvista_correct(mathvista_extract("\\boxed{x=14.0}", row), row) is True
    assert mathvista_correct(mathvista_extract("\\boxed{x = 15}", row), row) is False
    assert mathvista_correct(mathvista_extract("\\boxed{14 = x}", row), row) is False  # rhs: x
    # Only "=" and approximations: an inequality is not an answer of the type.
    assert mathvista_extract("\\boxed{x \\leq 14}", row) == "x \\leq 14"
    assert mathvista_extract("\\boxed{x <= 14}", row) == "x <= 14"
    floating = mathvista_row(answer_type="float", precision=1.0, answer="4.2")
    assert mathvista_correct(mathvista_extract("\\boxed{AB \\approx 4.24}", floating), floating)
    assert (
        mathvista_correct(mathvista_extract("\\boxed{AB \\approx 4.26}", floating), floating)
        is False
    )
    # Multiple choice: the right-hand side counts only when it is a choice's text.
    assert mathvista_extract("\\boxed{x = 7}", MC_NUMBERS) == "7"
    assert mathvista_correct(mathvista_extract("\\boxed{x = 7}", MC_NUMBERS), MC_NUMBERS) is True
    assert mathvista_extract("\\boxed{x = 8}", MC_NUMBERS) == "x = 8"
    assert mathvista_correct(mathvista_extract("\\boxed{x = 5}", MC_NUMBERS), MC_NUMBERS) is False


def test_mathvista_letters_map_to_choice_texts() -> None:
    assert mathvista_normalize("C", MC_NUMBERS) == "7"
    assert mathvista_normalize("(C)", MC_NUMBERS) == "7"
    assert mathvista_normalize("(c) seven", MC_NUMBERS) == "7"
    assert mathvista_correct(mathvista_extract("\\boxed{C}", MC_NUMBERS), MC_NUMBERS) is True
    assert mathvista_correct(mathvista_extract("\\boxed{(C) 7}", MC_NUMBERS), MC_NUMBERS) is True
    assert mathvista_correct(mathvista_extract("\\boxed{B}", MC_NUMBERS), MC_NUMBERS) is False
    # A letter past the last option is not a letter: nearest choice instead.
    assert mathvista_normalize("E", MC_NUMBERS) == "3"


def test_mathvista_nearest_choice_by_levenshtein() -> None:
    assert mathvista_extract("equal to", MC_WORDS) == "equal to"  # quick path
    assert mathvista_normalize("equal", MC_WORDS) == "equal to"
    assert mathvista_normalize("equel to", MC_WORDS) == "equal to"
    assert mathvista_correct("smaller", MC_WORDS) is False
    assert mathvista_correct(mathvista_extract("\\boxed{\\text{equal}}", MC_WORDS), MC_WORDS)
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert nearest_choice("ab", ["abc", "abd"]) == "abc"  # first on ties


def test_mathvista_gold_with_stray_whitespace_still_matches() -> None:
    # The official safe_equal compares stripped strings on both sides.
    integer = mathvista_row(answer_type="integer", answer=" 1000\n")
    assert mathvista_correct("1000", integer) is True
    assert mathvista_correct(mathvista_extract("\\boxed{1000}", integer), integer) is True
    assert mathvista_correct("999", integer) is False
    floating = mathvista_row(answer_type="float", precision=1.0, answer="1.2 ")
    assert mathvista_correct("1.23", floating) is True
    choice = mathvista_row(
        question_type="multi_choice",
        answer_type="text",
        choices=["3 ", "5", "7 ", "9"],
        answer="7",
    )
    assert mathvista_correct(mathvista_extract("\\boxed{C}", choice), choice) is True
    assert mathvista_correct(mathvista_extract("\\boxed{A}", choice), choice) is False
    text = mathvista_row(answer_type="text", answer=" yes ")
    assert mathvista_correct("yes", text) is True


# ------------------------------------------------------------------------ MathVision


def mathvision_row(options: list[str], answer: str, **fields: Any) -> dict[str, Any]:
    """A MathVision row (exact column set; images omitted)."""
    row: dict[str, Any] = {
        "id": "7",
        "question": "<image1>\nWhat is the length of the side?",
        "options": options,
        "image": "images/7.jpg",
        "answer": answer,
        "solution": None,
        "level": 2,
        "subject": "metric geometry - length",
    }
    row.update(fields)
    return row


def test_mathvision_sqrt_equals_its_rounded_value() -> None:
    free = mathvision_row([], "3.46")
    assert mathvision_correct("so the side is \\boxed{2\\sqrt{3}}", free) is True
    assert mathvision_correct("\\boxed{2 \\sqrt 3}", free) is True
    assert mathvision_correct("\\boxed{3.47}", free) is False
    assert mathvision_correct("\\boxed{3.46}", mathvision_row([], "2\\sqrt{3}")) is True


def test_mathvision_fractions() -> None:
    half = mathvision_row([], "\\frac{1}{2}")
    for response in (
        "\\boxed{0.5}",
        "\\boxed{1/2}",
        "\\boxed{\\dfrac12}",
        "\\boxed{\\tfrac{1}{2}}",
    ):
        assert mathvision_correct(response, half) is True, response
    assert mathvision_correct("\\boxed{0.51}", half) is False
    assert normalize_answer("0.5") == "\\frac{1}{2}"
    assert normalize_answer("3/4") == "\\frac{3}{4}"
    assert normalize_answer("\\dfrac{3}{4}") == "\\frac{3}{4}"
    assert normalize_answer(".25") == "0.25"


def test_mathvision_cleaning_keeps_the_value() -> None:
    assert mathvision_extract("\\boxed{x = 5}", mathvision_row([], "5")) == "5"
    assert mathvision_extract("\\boxed{AB \\approx 4.24}", mathvision_row([], "4.24")) == "4.24"
    assert mathvision_equal("5\\text{ cm}", "5")
    assert mathvision_equal("5 cm", "5")
    assert mathvision_equal("30^\\circ", "30")
    assert mathvision_equal("30°", "30")
    assert mathvision_equal("\\left(1, 2\\right)", "(1,2)")
    assert mathvision_equal("(1.001, 2)", "(1, 2)")  # tuples element-wise, 2 decimals
    assert not mathvision_equal("(1, 3)", "(1, 2)")
    assert not mathvision_equal("(1, 2, 3)", "(1, 2)")
    assert not mathvision_equal("", "5")
    assert not mathvision_equal("x+1", "2")


def test_mathvision_thousands_separator_is_one_number() -> None:
    thousand = mathvision_row([], "1000")
    assert mathvision_correct("\\boxed{1,000}", thousand) is True
    assert mathvision_correct("\\boxed{1{,}000}", thousand) is True
    assert mathvision_correct("\\boxed{1,000 \\text{ cm}}", thousand) is True
    assert mathvision_correct("\\boxed{2,000}", thousand) is False
    assert mathvision_correct("\\boxed{1,000}", mathvision_row([], "1")) is False
    assert normalize_answer("-12,345.5") == "-12345.5"
    # Not groups of three digits, or inside brackets: still tuples.
    assert normalize_answer("1,2") == "1,2" and normalize_answer("1,00") == "1,00"
    assert mathvision_equal("1, 2", "(1, 2)") and not mathvision_equal("1,00", "100")
    assert mathvision_equal("(1,000, 2)", "(1, 0, 2)")


def test_mathvision_letter_answer_matches_option_text() -> None:
    row = mathvision_row(["2", "4", "6", "8", "10"], "C")
    assert mathvision_correct("\\boxed{6}", row) is True
    assert mathvision_correct("\\boxed{C}", row) is True
    assert mathvision_correct("\\boxed{(c)}", row) is True
    assert mathvision_correct("\\boxed{8}", row) is False
    assert mathvision_correct("So the answer is (C).", row) is True  # letter ending, no box
    assert mathvision_correct("Therefore the answer is 6.", row) is True  # "the answer is"


def test_mathvision_options_drawn_in_the_image() -> None:
    row = mathvision_row(["A", "B", "C", "D", "E"], "D")
    assert mathvision_correct("\\boxed{D}", row) is True
    assert mathvision_correct("Looking at the figure, the answer is D.", row) is True
    assert mathvision_correct("\\boxed{B}", row) is False
    assert mathvision_correct("\\boxed{4}", row) is False


def test_latex_value_is_a_closed_grammar() -> None:
    assert latex_value("2\\sqrt{3}") == pytest.approx(3.4641016)
    assert latex_value("\\frac{\\sqrt{3}}{2}") == pytest.approx(0.8660254)
    assert latex_value("\\sqrt[3]{8}") == pytest.approx(2.0)
    assert latex_value("3\\pi") == pytest.approx(9.4247780)
    assert latex_value("2^{10}") == 1024.0
    assert latex_value("5!") == 120.0
    assert latex_value("(1, \\frac{1}{2})") == (1.0, 0.5)
    for text in ("x+1", "e", "__import__('os')", "9^{9^{9}}", "1/0", "200!", "1" * 300):
        assert latex_value(text) is None, text
