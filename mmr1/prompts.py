"""The prompt contracts of MMR1 (docs/METHOD.md section 3), in our own words.

Training prompt: reasoning inside ``<think></think>``, final answer inside
``<answer></answer>`` with the key result in ``\\boxed{}``. Like the released
code, the instruction is prepended to the user text rather than sent as a
system turn. Evaluation prompt: step by step, one ``\\boxed{}``; for multiple
choice, a single letter in the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from schemas.records import IMAGE_PLACEHOLDER

TRAIN_INSTRUCTION = (
    "Look carefully at the image and read the question. Reason it out step by step, "
    "then check your work and reconsider anything doubtful. Write all of your reasoning "
    "between <think> and </think>. After that, give the final answer between <answer> and "
    "</answer>, with the key result written inside \\boxed{}."
)

EVAL_INSTRUCTION = (
    "Solve the problem step by step. Write the final answer in a single \\boxed{}. "
    "If the question offers lettered options, put only the letter of the chosen option in the box."
)

CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

Segment = tuple[Literal["text"], str] | tuple[Literal["image"], int]
"""One piece of a prompt: ``("text", "some words")`` or ``("image", index_into_images)``."""


def format_choices(choices: Sequence[str]) -> str:
    """Render options as ``(A) text`` lines, one per line, in letter order."""
    if len(choices) > len(CHOICE_LETTERS):
        raise ValueError(f"at most {len(CHOICE_LETTERS)} choices are supported, got {len(choices)}")
    return "\n".join(f"({CHOICE_LETTERS[i]}) {text}" for i, text in enumerate(choices))


def question_text(problem: str, choices: Sequence[str] | None = None) -> str:
    """The problem text followed by its options, if any."""
    if not choices:
        return problem
    return f"{problem}\nOptions:\n{format_choices(choices)}"


def training_prompt(problem: str, choices: Sequence[str] | None = None) -> str:
    """User text for SFT/RL: the training instruction, then the question."""
    return f"{TRAIN_INSTRUCTION}\n\n{question_text(problem, choices)}"


def evaluation_prompt(problem: str, choices: Sequence[str] | None = None) -> str:
    """User text for benchmark evaluation: the question, then the evaluation instruction."""
    return f"{question_text(problem, choices)}\n\n{EVAL_INSTRUCTION}"


def split_prompt(prompt: str, n_images: int) -> list[Segment]:
    """Split ``prompt`` at its ``<image>`` placeholders.

    Returns text and image segments in reading order; the k-th placeholder
    becomes ``("image", k)``. Empty text between placeholders is dropped, all
    other text (whitespace and newlines included) is kept verbatim.

    Raises ``ValueError`` naming both counts when the number of placeholders
    differs from ``n_images``.
    """
    pieces = prompt.split(IMAGE_PLACEHOLDER)
    n_placeholders = len(pieces) - 1
    if n_placeholders != n_images:
        raise ValueError(
            f"prompt has {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but "
            f"{n_images} image(s) were given; each image needs exactly one placeholder"
        )
    segments: list[Segment] = []
    for index, text in enumerate(pieces):
        if index > 0:
            segments.append(("image", index - 1))
        if text:
            segments.append(("text", text))
    return segments
