"""Official benchmark scoring rules (docs/BENCHMARKS.md), on rows in each benchmark's schema."""

from __future__ import annotations

from typing import Any

import pytest

from mmr1.eval.scoring import (
    chartqa_extract,
    chartqa_relaxed,
    chartqa_relaxed_any,
    choice_letters,
    inline_choices,
    latex_form,
    latex_value,
    levenshtein,
    logicvista_correct,
    logicvista_extract,
    mathverse_correct,
    mathvision_correct,
    mathvision_equal,
    mathvision_extract,
    mathvista_correct,
    mathvista_extract,
    mathvista_normalize,
    nearest_choice,
    normalize_answer,
    numbered_options,
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


# ------------------------------------------------------------------------ LogicVista


def test_logicvista_multi_select_is_an_exact_set() -> None:
    assert logicvista_correct("\\boxed{A}", "A, C") is False  # the single-letter harness bug
    assert logicvista_correct("\\boxed{C, A}", "A, C") is True
    assert logicvista_correct("\\boxed{A, C}", "A, C") is True
    assert logicvista_correct("\\boxed{a, c}", "A, C") is True  # case-insensitive
    assert logicvista_correct("So the answer is A and C.", "A, C") is True
    assert logicvista_correct("\\boxed{A, B, C}", "A, C") is False
    assert logicvista_correct("\\boxed{A}", "A") is True
    assert logicvista_correct("\\boxed{B}", "b") is True
    assert logicvista_correct("\\boxed{(B) 12 cm}", "B") is True
    assert logicvista_correct("I cannot tell.", "B") is False


def test_logicvista_choice_letters() -> None:
    assert choice_letters("(A) and (C)") == frozenset({"A", "C"})
    assert choice_letters("a/c") == frozenset({"A", "C"})
    assert choice_letters("option B") == frozenset({"B"})
    assert choice_letters("a cat") == frozenset()


@pytest.mark.parametrize(
    ("response", "letters"),
    [
        # Boxed: lists, compact runs, labelled forms.
        ("\\boxed{ABC}", "ABC"),
        ("\\boxed{AC}", "AC"),
        ("\\boxed{(AC)}", "AC"),
        ("\\boxed{A, C}", "AC"),
        ("\\boxed{A,\\ C}", "AC"),
        ("\\boxed{(A) and (C)}", "AC"),
        ("\\boxed{\\text{A and C}}", "AC"),
        ("\\boxed{options A and C}", "AC"),
        ("\\boxed{AA}", ""),  # not distinct: not a run
        ("\\boxed{ABCDEF}", ""),  # longer than 5: not a run
        ("\\boxed{ace}", ""),  # lower case: a word, not a run
        # An <answer> block written as a sentence is read through its phrase.
        ("<answer>The answer is D</answer>", "D"),
        # No box: the letters right after the last "answer is" phrase.
        ("The answer is B because A is wrong.", "B"),
        ("A fails, so the answer is B because A is wrong.", "B"),
        ("Answer: B, since C fails", "B"),
        ("The correct options are A and C.", "AC"),
        ("The answer is (B) 12 cm as measured.", "B"),
        ("The answer is B - the red one.", "B"),
        ("Final answer: a/c", "AC"),
        ("The answer is not clear from A or B.", ""),
        # Last resort, the last line, only when it is itself an answer.
        ("A triangle has three sides.\nB", "B"),
        ("Checking each option.\nTherefore, B.", "B"),
        ("Checking each option.\nA and C are correct.", "AC"),
        ("Checking each option.\nSo A is wrong.", ""),
        ("A triangle has three sides, so B and C fit.", ""),
        ("I cannot tell.", ""),
    ],
)
def test_logicvista_extraction(response: str, letters: str) -> None:
    assert logicvista_extract(response) == frozenset(letters)


def test_logicvista_never_reads_prose_capitals_or_reduces_to_one_letter() -> None:
    # The old last fallback collected every standalone capital: {A, B} here.
    assert logicvista_correct("The answer is B because A is wrong.", "B") is True
    assert logicvista_correct("\\boxed{ABC}", "A, B, C") is True
    assert logicvista_correct("\\boxed{ABC}", "A, C") is False
    assert logicvista_correct("\\boxed{AC}", "A, C") is True
    assert logicvista_correct("\\boxed{(A) and (C)}", "A, C") is True
    assert logicvista_correct("The answer is A.", "A, C") is False
    assert logicvista_correct("\\boxed{A}", "A, C") is False
    assert logicvista_correct("\\boxed{c, a}", "a, c") is True


@pytest.mark.parametrize(
    ("response", "letters"),
    [
        # A chat role label in front of the answer.
        ("ASSISTANT: D", "D"),
        ("Assistant: (B)", "B"),
        ("ASSISTANT: D\nThe shapes turn clockwise, so the last one points up.", "D"),
        # The answer on its own line, the explanation below it.
        ("D\n\nExplanation: each row adds a dot; A has too many, B too few.", "D"),
        ("**(B)**\nBecause the pattern alternates between A and C.", "B"),
        ("Looking at the options.\nA, C\nBoth keep the symmetry.", "AC"),
        ("Option D\nIt completes the rotation.", "D"),
        # A concluding mention of a labelled option.
        ("Each row gains one side. The pattern suggests figure D.", "D"),
        ("The pattern suggests figure D because the rotation continues.", "D"),
        ("At first it suggests figure A, but the colours rule it out. So option C.", "C"),
        ("The missing piece must be shape (E), matching the others.", "E"),
        # Negative controls: prose capitals and descriptions choose nothing.
        ("Figure A shows a triangle and figure B shows a square.", ""),
        ("The pattern suggests figure D and E are alike.", ""),
        ("This is figure A, which has three dots.", ""),
        ("ASSISTANT: I am not sure, A or B both fit.", ""),
        ("A triangle and a square.\nNeither fits well.", ""),
        ("The answer is 3.", ""),  # letters expected, a number chooses nothing
    ],
)
def test_logicvista_extraction_of_conversational_answers(response: str, letters: str) -> None:
    assert logicvista_extract(response) == frozenset(letters)


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        ("\\boxed{3}", "3", True),
        ("The answer is 3.", "3", True),
        ("So option 3.", "3", True),
        ("(3) twelve dots", "3", True),
        ("The pattern suggests figure 3.", "3", True),
        ("\\boxed{3, 5}", "3, 5", True),
        ("\\boxed{5 and 3}", "3, 5", True),
        ("\\boxed{3}", "3, 5", False),  # still an exact set
        ("\\boxed{35}", "3, 5", False),  # thirty-five, not two options
        ("\\boxed{4}", "3", False),
        ("\\boxed{C}", "3", False),  # numbered options: a letter chooses nothing
        ("There are 3 circles and 5 squares.", "3", False),  # prose numbers are not read
        ("\\boxed{3}", "C", False),  # lettered options: a number chooses nothing
    ],
)
def test_logicvista_numbered_options(response: str, gold: str, expected: bool) -> None:
    assert logicvista_correct(response, gold) is expected


def test_logicvista_numbered_options_come_from_the_gold() -> None:
    assert numbered_options("3") and numbered_options("2, 4") and numbered_options("12")
    assert not numbered_options("C") and not numbered_options("A, 3")
    assert not numbered_options("123") and not numbered_options("")
    assert logicvista_extract("\\boxed{3}", numeric=True) == frozenset({"3"})
    assert choice_letters("options 2 and 4", numeric=True) == frozenset({"2", "4"})
    assert choice_letters("options 2 and 4") == frozenset()


# ------------------------------------------------------------------------ MathVerse


def mathverse_row(question: str, answer: str, question_type: str) -> dict[str, Any]:
    """A MathVerse testmini row (exact column set; images omitted)."""
    return {
        "sample_index": "1",
        "problem_index": "1",
        "problem_version": "Text Lite",
        "question": question,
        "image": "images_version_1-4/image_1.png",
        "answer": answer,
        "question_type": question_type,
        "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry"},
        "query_wo": "...",
        "query_cot": "...",
        "question_for_eval": question,
    }


MV_CHOICE = mathverse_row(
    "As shown in the figure, find the angle.\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°",
    "B",
    "multi-choice",
)


def test_mathverse_multi_choice_letters() -> None:
    assert inline_choices(MV_CHOICE["question"]) == ["30°", "45°", "60°", "90°"]
    assert mathverse_correct("\\boxed{B}", MV_CHOICE) is True
    assert mathverse_correct("The answer is (B).", MV_CHOICE) is True
    assert mathverse_correct("\\boxed{A}", MV_CHOICE) is False
    assert mathverse_correct("\\boxed{45°}", MV_CHOICE) is True  # an option's text
    vision_only = mathverse_row("", "B", "multi-choice")
    assert mathverse_correct("\\boxed{B}", vision_only) is True
    assert mathverse_correct("\\boxed{C}", vision_only) is False


@pytest.mark.parametrize(
    ("options", "gold", "response", "expected"),
    [
        ("A:\u221a3\nB:2\u221a3\nC:3\nD:\u03c0", "A", "\\boxed{\\sqrt{3}}", True),
        ("A:\u221a3\nB:2\u221a3\nC:3\nD:\u03c0", "A", "\\boxed{\\sqrt3}", True),
        ("A:\u221a3\nB:2\u221a3\nC:3\nD:\u03c0", "B", "\\boxed{2\\sqrt{3}}", True),
        ("A:\u221a3\nB:2\u221a3\nC:3\nD:\u03c0", "D", "\\boxed{\\pi}", True),
        ("A:\u221a3\nB:2\u221a3\nC:3\nD:\u03c0", "A", "\\boxed{2\\sqrt{3}}", False),
        ("A:\u221a3\nB:2\u221a3\nC:3\nD:\u03c0", "A", "\\boxed{3}", False),
        ("A:\\sqrt{3}\nB:\\sqrt{2}\nC:\\pi", "A", "\\boxed{\u221a3}", True),
        ("A:\\sqrt{3}\nB:\\sqrt{2}\nC:\\pi", "C", "\\boxed{\u03c0}", True),
        ("A:\\sqrt{3}\nB:\\sqrt{2}\nC:\\pi", "B", "\\boxed{\u221a3}", False),
        ("A:\u221a23\nB:\u221a2", "A", "\\boxed{\\sqrt{23}}", True),  # the root of 23
        ("A:30^{\\circ}\nB:45^{\\circ}", "B", "\\boxed{45\u00b0}", True),
        ("A:30\u00b0\nB:45\u00b0", "B", "\\boxed{45^\\circ}", True),
        ("A:30\u00b0\nB:45\u00b0", "B", "\\boxed{30^{\\circ}}", False),
        ("A:\\frac{\u03c0}{2}\nB:\u03c0", "A", "\\boxed{\\dfrac{\\pi}{2}}", True),
    ],
)
def test_mathverse_latex_and_unicode_forms_of_one_option(
    options: str, gold: str, response: str, expected: bool
) -> None:
    row = mathverse_row(f"Find the value.\nChoices:\n{options}", gold, "multi-choice")
    assert mathverse_correct(response, row) is expected


def test_latex_form() -> None:
    assert latex_form("2\u221a3 + \u03c0") == "2\\sqrt{3} + \\pi"
    assert latex_form("\u221a23") == "\\sqrt{23}"  # Unicode: the whole number is under the root
    assert latex_form("\\sqrt23") == "\\sqrt{2}3"  # LaTeX: one digit, as TeX reads it
    assert latex_form("30^{\\circ}") == latex_form("30\u00b0") == "30^\\circ"
    assert latex_form("\\tfrac{1}{2} \u00d7 4") == "\\frac{1}{2} \\times 4"


@pytest.mark.parametrize(
    ("question", "options"),
    [
        ("Find x.\nChoices: A: 3 B: 4 C: 5 D: 6", ["3", "4", "5", "6"]),
        ("Find x.\nChoices:\nA. 3 B. 4 C. 5 D. 6", ["3", "4", "5", "6"]),
        ("Find x. Choices: (A) 3 cm (B) 4 cm (C) 5 cm", ["3 cm", "4 cm", "5 cm"]),
        ("Find x.\nChoices:\nA:30\u00b0\nB:45\u00b0\nPlease answer.", ["30\u00b0", "45\u00b0"]),
        ("Find x.\nChoices: A:1.5 B:2.5", ["1.5", "2.5"]),
        ("Find x.\nChoices: A: 3 C: 4", None),  # not A, B, C... in order
        ("Find x.\nChoices: three or four", None),
        ("Find x. A: 3 B: 4", None),  # no Choices heading
    ],
)
def test_mathverse_inline_choices(question: str, options: list[str] | None) -> None:
    assert inline_choices(question) == options


def test_mathverse_options_on_one_line_map_texts_to_letters() -> None:
    for question in (
        "Find x.\nChoices: A: 3 B: 4 C: 5 D: 6",
        "Find x. Choices: A. 3 B. 4 C. 5 D. 6",
    ):
        row = mathverse_row(question, "C", "multi-choice")
        assert mathverse_correct("\\boxed{5}", row) is True
        assert mathverse_correct("\\boxed{C}", row) is True
        assert mathverse_correct("\\boxed{4}", row) is False
        assert mathverse_correct("\\boxed{6}", row) is False


def test_mathverse_free_form_uses_math_verification() -> None:
    row = mathverse_row("Find the length of AB.", "2", "free-form")
    assert mathverse_correct("\\boxed{2}", row) is True
    assert mathverse_correct("\\boxed{\\sqrt{4}}", row) is True
    assert mathverse_correct("so the answer is 2.", row) is True
    assert mathverse_correct("\\boxed{3}", row) is False
    half = mathverse_row("Find the ratio.", "\\frac{1}{2}", "free-form")
    assert mathverse_correct("\\boxed{0.5}", half) is True
    root = mathverse_row("Find AB.", "2\u221a3", "free-form")
    assert mathverse_correct("\\boxed{2\\sqrt{3}}", root) is True
    assert mathverse_correct("\\boxed{2\\sqrt{2}}", root) is False
