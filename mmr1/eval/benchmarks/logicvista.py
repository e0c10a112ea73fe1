"""LogicVista (448 rows; hub copy ``lscpku/LogicVista``, split ``test``).

Source: the hub id or a local copy. Columns read: ``question`` (options are
usually inline in the text), ``answer`` (letters, multi-select as ``A, C``),
``image`` (else ``images``/``decoded_image``), ``skill`` (inductive, numerical,
deductive, spatial, mechanical; a list counts in each group). The item id is the
first of ``id``/``question_id``/``qid``/``imagename`` present, else the row
position. The official prompt is the question as given.

Scoring: :mod:`mmr1.eval.scoring.logicvista`, the chosen letters as an exact set
against ``answer.split(", ")``. Accuracy overall and per skill.
"""

from __future__ import annotations

from typing import ClassVar

from mmr1.eval.benchmarks.base import (
    RowBenchmark,
    row_images,
    row_without,
    tag_value,
    text_field,
    with_placeholders,
)
from mmr1.eval.benchmarks.rows import SourceRow
from mmr1.eval.scoring.logicvista import logicvista_correct, logicvista_extract
from schemas.eval import EvalItem, ItemScore

ID_COLUMNS = ("id", "question_id", "qid", "imagename")


class LogicVistaAdapter(RowBenchmark):
    """LogicVista with letter-set scoring."""

    name: ClassVar[str] = "logicvista"
    default_split: ClassVar[str] = "test"
    breakdown_keys: ClassVar[tuple[str, ...]] = ("skill",)
    image_columns: ClassVar[tuple[str, ...]] = ("image", "images", "decoded_image")

    def make_item(self, row: SourceRow) -> EvalItem:
        column = next((c for c in ID_COLUMNS if row.data.get(c) is not None), None)
        item_id = text_field(row, column) if column else f"logicvista-{row.position}"
        answer = text_field(row, "answer").strip()
        if not answer:
            raise row.error("answer", "empty")
        images = row_images(row, self.image_columns)
        return EvalItem(
            item_id=item_id,
            question=with_placeholders(text_field(row, "question"), len(images)),
            images=images,
            choices=None,  # options are inline in the question text
            answer=answer,
            answer_type="letters",
            tags={"skill": tag_value(row.data.get("skill"))},
            row=row_without(row, self.image_columns),
        )

    def official_prompt(self, item: EvalItem) -> str:
        return item.question

    def score(self, item: EvalItem, response: str) -> ItemScore:
        letters = logicvista_extract(response)
        return ItemScore(
            item_id=item.item_id,
            correct=logicvista_correct(response, item.answer),
            extracted=", ".join(sorted(letters)),
            scorer="rule",
        )
