"""Official scoring rules of LogicVista and MathVerse (docs/BENCHMARKS.md); ChartQA, MathVista
and MathVision are in test_eval_scoring.py."""

from __future__ import annotations

from typing import Any

import pytest

from mmr1.eval.scoring import (
    choice_letters,
    inline_choices,
    latex_form,
    logicvista_correct,
    logicvista_extract,
    mathverse_correct,
    numbered_options,
)

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
