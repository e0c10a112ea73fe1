"""Final-answer extraction (mmr1.rewards.extract): boxes, answer blocks, edge cases."""

from __future__ import annotations

import time

import pytest

from mmr1.rewards import extract_final_answer
from mmr1.rewards.extract import find_answer_block, last_boxed


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # Nested braces are extracted whole.
        (r"<answer>\boxed{\frac{\sqrt{3}}{2}}</answer>", r"\frac{\sqrt{3}}{2}"),
        (r"so \boxed{\frac{\sqrt{3}}{2}}.", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{x^{2^{3}} + {1}}", r"x^{2^{3}} + {1}"),
        # Several boxes: the last one.
        (r"\boxed{1} then \boxed{2} and finally \boxed{3}", "3"),
        (r"<answer>\boxed{1} or \boxed{2}</answer>", "2"),
        # A box inside <answer> wins over a later box outside it.
        (r"<answer>\boxed{7}</answer> P.S. \boxed{8}", "7"),
        # Box outside an answer block that has none: the box anywhere.
        (r"<think>so \boxed{12}</think><answer>twelve</answer>", "12"),
        # No box: the answer block content, stripped.
        ("<think>hmm</think><answer>  B  </answer>", "B"),
        ("<answer>\n a cat \n</answer>", "a cat"),
        # The last answer block is the one that counts.
        ("<answer>A</answer> text <answer>C</answer>", "C"),
        # No box, no answer block.
        ("The answer is 5.", None),
        ("", None),
        # Unbalanced box is skipped; an earlier balanced one is used.
        (r"\boxed{4} and then \boxed{5", "4"),
        (r"\boxed{5", None),
        (r"<answer>\boxed{5</answer>", r"\boxed{5"),
        # A balanced box after an unbalanced one is still found.
        (r"\boxed{oops \boxed{6}", "6"),
        # Escaped braces do not count.
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{\}}", r"\}"),
        # \fbox is accepted too, and whitespace before the brace.
        (r"\fbox{42}", "42"),
        (r"\boxed {42}", "42"),
        # Nested box: outer wins, then unwrapped.
        (r"\boxed{\boxed{5}}", "5"),
        (r"\boxed{\boxed{5} + 1}", r"\boxed{5} + 1"),
        # Empty box / empty answer block: no answer.
        (r"\boxed{}", None),
        ("<answer>   </answer>", None),
        # Unclosed <answer> (truncated generation) is not a block, a box still counts.
        (r"<answer>\boxed{9}", "9"),
        ("<answer>9", None),
        # Multiple-choice and text answers in boxes.
        (r"<answer>\boxed{A}</answer>", "A"),
        (r"<answer>\boxed{\text{Yes}}</answer>", r"\text{Yes}"),
    ],
)
def test_extract_final_answer(response: str, expected: str | None) -> None:
    assert extract_final_answer(response) == expected


def test_find_answer_block_returns_last_closed_block() -> None:
    assert find_answer_block("<answer>1</answer><answer>2</answer>") == "2"
    assert find_answer_block("<answer>1</answer><answer>2") is None
    assert find_answer_block("no tags") is None


def test_last_boxed_ignores_stray_closing_braces() -> None:
    assert last_boxed(r"}} \boxed{3} }") == "3"


def test_extraction_is_linear_on_adversarial_input() -> None:
    # 50k unclosed boxes: a quadratic scan would take seconds.
    response = r"\boxed{" * 50_000 + "x"
    start = time.perf_counter()
    assert extract_final_answer(response) is None
    long_answer = "<answer>" + r"\boxed{" + "1" * 100_000 + "}</answer>"
    assert extract_final_answer(long_answer) == "1" * 100_000
    assert time.perf_counter() - start < 1.0
