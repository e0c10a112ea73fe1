"""MathVista (``AI4Math/MathVista``, split ``testmini``: 1000 rows).

Source: the hub id, or a local copy of the split (parquet/jsonl, the official
``testmini.json``, a ``save_to_disk`` directory). Columns read: ``pid`` (item id),
``question``, ``decoded_image`` (else ``image``, a path relative to the data
file's directory or its parent), ``choices``, ``precision``, ``answer`` (the choice
TEXT for multiple choice), ``question_type`` (``multi_choice``|``free_form``),
``answer_type`` (``text``|``integer``|``float``|``list``), ``metadata`` (breakdown
tags) and, for the official prompt, ``query``.

Scoring: :mod:`mmr1.eval.scoring.mathvista` (official normalisation, rule-based
extraction). Accuracy over all items; breakdowns by question_type, answer_type,
language, source, category, task, context, grade and skills (multi-label).
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
    text_list,
    with_placeholders,
)
from mmr1.eval.benchmarks.rows import SourceRow
from mmr1.eval.scoring.mathvista import mathvista_correct, mathvista_extract
from schemas.eval import EvalItem, ItemScore

QUESTION_TYPES = ("multi_choice", "free_form")
ANSWER_TYPES = ("text", "integer", "float", "list")
METADATA_TAGS = ("language", "source", "category", "task", "context", "grade", "skills")


class MathVistaAdapter(RowBenchmark):
    """MathVista testmini: multiple choice maps letters to choice texts; typed free-form."""

    name: ClassVar[str] = "mathvista"
    default_split: ClassVar[str] = "testmini"
    breakdown_keys: ClassVar[tuple[str, ...]] = ("question_type", "answer_type", *METADATA_TAGS)
    image_columns: ClassVar[tuple[str, ...]] = ("decoded_image", "image")
    official_columns: ClassVar[tuple[str, ...]] = ("query",)
    id_columns: ClassVar[tuple[str, ...]] = ("pid",)

    def make_item(self, row: SourceRow) -> EvalItem:
        item_id = text_field(row, "pid")
        question_type = text_field(row, "question_type")
        if question_type not in QUESTION_TYPES:
            raise row.error("question_type", f"{question_type!r} is not one of {QUESTION_TYPES}")
        answer_type = text_field(row, "answer_type")
        if answer_type not in ANSWER_TYPES:
            raise row.error("answer_type", f"{answer_type!r} is not one of {ANSWER_TYPES}")
        answer = gold_text(row, "answer")
        choices = text_list(row, "choices")
        if question_type == "multi_choice" and not choices:
            raise row.error("choices", "a multi_choice row needs its choices")
        metadata = row.data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise row.error("metadata", f"expected an object, got {type(metadata).__name__}")
        images = row_images(row, self.image_columns)
        data = row_without(row, ["decoded_image"])
        data["answer"], data["choices"] = answer, choices or None
        tags = self.row_tags(row)
        return EvalItem(
            item_id=item_id,
            question=with_placeholders(text_field(row, "question", default=""), len(images)),
            images=images,
            choices=choices or None,
            answer=answer,
            answer_type=answer_type if question_type == "free_form" else question_type,
            tags=tags,
            row=data,
        )

    def row_tags(self, row: SourceRow) -> dict[str, str | list[str]]:
        """Question and answer type, then the ``metadata`` tags (skills is multi-label)."""
        metadata = row.data.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        tags = {
            "question_type": tag_value(row.data.get("question_type")),
            "answer_type": tag_value(row.data.get("answer_type")),
        }
        tags.update({key: tag_value(metadata.get(key)) for key in METADATA_TAGS})
        return tags

    def official_prompt(self, item: EvalItem) -> str:
        """The dataset's ``query`` (hint, question, choices), after the image."""
        return self.row_query(item, "query")

    def rule_score(self, item: EvalItem, response: str) -> ItemScore:
        extracted = mathvista_extract(response, item.row)
        return ItemScore(
            item_id=item.item_id,
            correct=mathvista_correct(extracted, item.row),
            extracted=extracted,
            scorer="rule",
        )


__all__ = ["MathVistaAdapter"]
