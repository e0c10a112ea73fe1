"""MathVision (``MathLLMs/MathVision``, splits ``test`` (3040 rows) and ``testmini`` (304)).

Source: the hub id or a local copy of a split. Columns read: ``id``,
``question`` (with ``<image1>``, which becomes ``<image>``), ``options`` (5 texts
or empty), ``decoded_image`` (else ``image``, a path), ``answer`` (an option
letter for multiple choice), ``level`` (1-5), ``subject``. Options that are
literally ``A``..``E`` (the choices are drawn in the image) are not rendered.

Scoring: the official rule-based protocol, :mod:`mmr1.eval.scoring.mathvision`.
Accuracy overall, per level and per subject. The official prompt is the
MathVision instruction (answer in one ``\\boxed{}``, one letter for multiple
choice), then the question and its options.
"""

from __future__ import annotations

from typing import ClassVar

from mmr1.eval.benchmarks.base import (
    RowBenchmark,
    gold_text,
    row_images,
    row_without,
    text_field,
    text_list,
    with_placeholders,
)
from mmr1.eval.benchmarks.rows import SourceRow
from mmr1.eval.scoring.mathvision import mathvision_correct, mathvision_extract
from mmr1.prompts import CHOICE_LETTERS, question_text
from schemas.eval import EvalItem, ItemScore

OFFICIAL_INSTRUCTION = (
    'Please solve the problem and put your answer in one "\\boxed{}". '
    'If it is a multiple choice question, only one letter is allowed in the "\\boxed{}".'
)


def options_in_image(options: list[str]) -> bool:
    """True for options that are just their own letters (``A``..``E``): nothing to render."""
    return bool(options) and options == list(CHOICE_LETTERS[: len(options)])


class MathVisionAdapter(RowBenchmark):
    """MathVision test/testmini with the official rule-based scorer."""

    name: ClassVar[str] = "mathvision"
    default_split: ClassVar[str] = "test"
    breakdown_keys: ClassVar[tuple[str, ...]] = ("level", "subject")
    image_columns: ClassVar[tuple[str, ...]] = ("decoded_image", "image")
    id_columns: ClassVar[tuple[str, ...]] = ("id",)

    def make_item(self, row: SourceRow) -> EvalItem:
        item_id = text_field(row, "id")
        options = text_list(row, "options")
        answer = gold_text(row, "answer")
        if options and (len(answer) != 1 or answer not in CHOICE_LETTERS[: len(options)]):
            raise row.error("answer", f"{answer!r} is not an option letter of {options}")
        images = row_images(row, self.image_columns)
        data = row_without(row, self.image_columns)
        data["options"], data["answer"] = options, answer
        return EvalItem(
            item_id=item_id,
            question=with_placeholders(text_field(row, "question"), len(images)),
            images=images,
            choices=None if not options or options_in_image(options) else options,
            answer=answer,
            answer_type="multi_choice" if options else "free_form",
            tags=self.row_tags(row),
            row=data,
        )

    def official_prompt(self, item: EvalItem) -> str:
        return f"{OFFICIAL_INSTRUCTION}\n{question_text(item.question, item.choices)}"

    def rule_score(self, item: EvalItem, response: str) -> ItemScore:
        return ItemScore(
            item_id=item.item_id,
            correct=mathvision_correct(response, item.row),
            extracted=mathvision_extract(response, item.row),
            scorer="rule",
        )
