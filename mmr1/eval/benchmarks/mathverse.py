"""MathVerse (``AI4Math/MathVerse``, config and split ``testmini``: 3940 rows).

3940 rows = 788 problems x 5 versions (Text Dominant, Text Lite, Vision
Intensive, Vision Dominant, Vision Only). Source: the hub id (the hub config
defaults to the split name), or a local copy of the split. Columns read:
``sample_index`` (item id), ``problem_version``, ``question`` (empty for Vision
Only: the question is in the image), ``image``, ``answer`` (an option letter for
multiple choice), ``question_type`` (``multi-choice``|``free-form``), ``metadata``
(subject, subfield) and, for the official prompt, ``query_cot``. The
``testmini_text_only`` ablation is not part of the score.

Scoring: the rule-based default of :mod:`mmr1.eval.scoring.mathverse` (the
official protocol needs an LLM judge). The overall number is the mean of the
per-version accuracies (equal to the accuracy over all 3940 rows, the versions
being equally sized); breakdowns by version, subject, subfield, question_type.
"""

from __future__ import annotations

from typing import ClassVar

from mmr1.eval.benchmarks.base import (
    RowBenchmark,
    gold_text,
    row_images,
    row_without,
    tag_value,
    text_field,
    with_placeholders,
)
from mmr1.eval.benchmarks.rows import SourceRow
from mmr1.eval.scoring.mathverse import mathverse_correct, mathverse_extract
from schemas.eval import EvalItem, ItemScore

QUESTION_TYPES = ("multi-choice", "free-form")
#: Prompt text of a Vision Only row, whose question is only in the image.
IMAGE_ONLY_QUESTION = "The question and its options, if any, are shown in the image."


class MathVerseAdapter(RowBenchmark):
    """MathVerse testmini, scored by the rule-based default, averaged over the 5 versions."""

    name: ClassVar[str] = "mathverse"
    default_split: ClassVar[str] = "testmini"
    breakdown_keys: ClassVar[tuple[str, ...]] = ("version", "subject", "subfield", "question_type")
    macro_over: ClassVar[str | None] = "version"
    official_columns: ClassVar[tuple[str, ...]] = ("query_cot",)
    id_columns: ClassVar[tuple[str, ...]] = ("sample_index",)

    def hub_subset(self, split: str) -> str | None:
        return split  # the hub configs are named after their splits

    def make_item(self, row: SourceRow) -> EvalItem:
        item_id = text_field(row, "sample_index")
        question_type = text_field(row, "question_type")
        if question_type not in QUESTION_TYPES:
            raise row.error("question_type", f"{question_type!r} is not one of {QUESTION_TYPES}")
        answer = gold_text(row, "answer")
        metadata = row.data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise row.error("metadata", f"expected an object, got {type(metadata).__name__}")
        images = row_images(row, self.image_columns)
        question = text_field(row, "question", default="").strip() or IMAGE_ONLY_QUESTION
        return EvalItem(
            item_id=item_id,
            question=with_placeholders(question, len(images)),
            images=images,
            choices=None,  # options are written in the question (or the image)
            answer=answer,
            answer_type=question_type,
            tags=self.row_tags(row),
            row=row_without(row, self.image_columns),
        )

    def row_tags(self, row: SourceRow) -> dict[str, str | list[str]]:
        """Version, subject and subfield (from ``metadata``) and question type."""
        metadata = row.data.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        return {
            "version": tag_value(row.data.get("problem_version")),
            "subject": tag_value(metadata.get("subject")),
            "subfield": tag_value(metadata.get("subfield")),
            "question_type": tag_value(row.data.get("question_type")),
        }

    def official_prompt(self, item: EvalItem) -> str:
        """The dataset's chain-of-thought query ``query_cot``, after the image."""
        return self.row_query(item, "query_cot")

    def rule_score(self, item: EvalItem, response: str) -> ItemScore:
        return ItemScore(
            item_id=item.item_id,
            correct=mathverse_correct(response, item.row),
            extracted=mathverse_extract(response),
            scorer="rule",
        )
