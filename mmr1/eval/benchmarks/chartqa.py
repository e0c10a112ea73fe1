"""ChartQA (test: 1250 human + 1250 augmented questions).

Two layouts are read, row by row:

- ``HuggingFaceM4/ChartQA``: ``query``, ``label`` (a list of gold answers),
  ``human_or_machine`` (0/``human`` or 1/``machine``), ``image``;
- the lmms-lab copy: ``question``, ``answer``, ``type`` (``human_test`` /
  ``augmented_test``), ``image``.

Items have no id in either layout: ``chartqa-<row position>``. The official
prompt is the question followed by "Answer the question using a single word or
phrase." (the short-answer instruction of the common ChartQA harnesses).

Scoring: relaxed accuracy (:mod:`mmr1.eval.scoring.chartqa`), max over the gold
answers. The overall number is the mean of the human and augmented accuracies
(equal to the mean over all 2500 questions on the full test split).
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
from mmr1.eval.scoring.chartqa import chartqa_extract, chartqa_relaxed_any
from schemas.eval import EvalItem, ItemScore

SHORT_ANSWER = "Answer the question using a single word or phrase."
_HALVES = {
    "0": "human",
    "human": "human",
    "human_test": "human",
    "1": "augmented",
    "machine": "augmented",
    "augmented": "augmented",
    "augmented_test": "augmented",
}


def _half(row: SourceRow, column: str) -> str:
    value = text_field(row, column).strip().lower()
    if value not in _HALVES:
        raise row.error(column, f"{value!r} is neither human nor augmented ({sorted(_HALVES)})")
    return _HALVES[value]


def gold_answers(item: EvalItem) -> list[str]:
    """All gold answers of an item: the ``label`` list (HuggingFaceM4), else ``answer``."""
    labels = item.row.get("label")
    if isinstance(labels, list) and labels:
        return [str(label) for label in labels]
    if labels is not None and not isinstance(labels, list):
        return [str(labels)]
    return [item.answer]


class ChartQAAdapter(RowBenchmark):
    """ChartQA with relaxed accuracy, averaged over the human and augmented halves."""

    name: ClassVar[str] = "chartqa"
    default_split: ClassVar[str] = "test"
    breakdown_keys: ClassVar[tuple[str, ...]] = ("type",)
    macro_over: ClassVar[str | None] = "type"
    question_columns: ClassVar[tuple[str, ...]] = ("query", "question")

    def make_item(self, row: SourceRow) -> EvalItem:
        if "query" in row.data or "label" in row.data:  # HuggingFaceM4 layout
            question = text_field(row, "query")
            label = row.data.get("label")
            golds = [label] if isinstance(label, str) else text_list(row, "label")
            if not any(gold.strip() for gold in golds):
                raise row.error("label", "no gold answer" if not golds else "empty")
            half = _half(row, "human_or_machine")
        else:  # lmms-lab layout
            question = text_field(row, "question")
            golds = [gold_text(row, "answer")]
            half = _half(row, "type")
        images = row_images(row, self.image_columns)
        return EvalItem(
            item_id=f"chartqa-{row.position}",
            question=with_placeholders(question, len(images)),
            images=images,
            choices=None,
            answer=golds[0],
            answer_type="short_answer",
            tags={"type": half},
            row=row_without(row, self.image_columns),
        )

    def row_tags(self, row: SourceRow) -> dict[str, str | list[str]]:
        """The half (``human``/``augmented``) of either layout, ``unknown`` if unreadable."""
        column = "human_or_machine" if "human_or_machine" in row.data else "type"
        value = str(row.data.get(column)).strip().lower()
        return {"type": _HALVES.get(value, "unknown")}

    def official_prompt(self, item: EvalItem) -> str:
        return f"{item.question}\n{SHORT_ANSWER}"

    def rule_score(self, item: EvalItem, response: str) -> ItemScore:
        return ItemScore(
            item_id=item.item_id,
            correct=chartqa_relaxed_any(response, gold_answers(item)),
            extracted=chartqa_extract(response),
            scorer="rule",
        )
