"""LogicVista (448 rows; hub copy ``lscpku/LogicVista``, split ``test``).

Source: the hub id or a local copy. Columns read: ``question`` (options are
usually inline in the text), ``answer`` (letters, multi-select as ``A, C``),
``image`` (else ``images``/``decoded_image``), ``skill`` (inductive, numerical,
deductive, spatial, mechanical; a list counts in each group). The item id is the
first of ``id``/``question_id``/``qid``/``imagename`` present, else the row
position. The official prompt is the question as given. A row with an empty
``answer`` (the hub copy has one) is an invalid item, scored wrong.

Scoring: :mod:`mmr1.eval.scoring.logicvista`, the chosen letters (option
numbers when the gold is a number: "Select from 1-5") as an exact set against
``answer.split(", ")``. Accuracy overall and per skill.
"""

from __future__ import annotations

from typing import ClassVar

from mmr1.eval.benchmarks.base import (
    RowBenchmark,
    gold_text,
    row_images,
    row_without,
    text_field,
    with_placeholders,
)
from mmr1.eval.benchmarks.rows import SourceRow
from mmr1.eval.scoring.logicvista import (
    logicvista_correct,
    logicvista_extract,
    numbered_options,
)
from schemas.eval import EvalItem, ItemScore

ID_COLUMNS = ("id", "question_id", "qid", "imagename")


class LogicVistaAdapter(RowBenchmark):
    """LogicVista with letter-set scoring."""

    name: ClassVar[str] = "logicvista"
    default_split: ClassVar[str] = "test"
    breakdown_keys: ClassVar[tuple[str, ...]] = ("skill",)
    image_columns: ClassVar[tuple[str, ...]] = ("image", "images", "decoded_image")
    id_columns: ClassVar[tuple[str, ...]] = ID_COLUMNS

    def make_item(self, row: SourceRow) -> EvalItem:
        answer = gold_text(row, "answer")  # the hub copy has one row with an empty answer
        images = row_images(row, self.image_columns)
        return EvalItem(
            item_id=self.row_id(row),
            question=with_placeholders(text_field(row, "question"), len(images)),
            images=images,
            choices=None,  # options are inline in the question text
            answer=answer,
            answer_type="letters",
            tags=self.row_tags(row),
            row=row_without(row, self.image_columns),
        )

    def official_prompt(self, item: EvalItem) -> str:
        return item.question

    def rule_score(self, item: EvalItem, response: str) -> ItemScore:
        letters = logicvista_extract(response, numbered_options(item.answer))
        return ItemScore(
            item_id=item.item_id,
            correct=logicvista_correct(response, item.answer),
            extracted=", ".join(sorted(letters)),
            scorer="rule",
        )
