"""The built-in synthetic benchmark: held-out generator items stored as RL records.

Source: the RL-record parquet file or dataset directory the catalog registered
(kind ``benchmark``; the evaluate flow resolves the catalog ref to its path).
The split is ignored (one split). Each record is one item: ``id``, ``problem``
(already holding its ``<image>`` placeholder), ``choices``, ``answer`` (an option
letter for multiple choice, else a short canonical answer), images as bytes (or
paths relative to the dataset directory), ``type`` (the task family) and
``difficulty``.

Scoring: the project's verifier on the extracted final answer, exactly the
RL accuracy reward (:func:`mmr1.rewards.is_correct`). Accuracy overall, per
family and per difficulty. Prompts: ``mmr1`` is the MMR1 evaluation prompt;
``official`` is the generator's own prompt, the training prompt its items are
posed with in SFT and RL (:func:`mmr1.prompts.training_prompt`). A model that
only ever saw the generator's prompt (the demo's tiny model) is evaluated with
``official``: on the unseen evaluation prompt it scores near chance.

Bad rows: a record whose image file is missing, or whose id repeats an earlier
one, is an invalid item (scored wrong, counted; see ``base``). Records are
validated by :func:`mmr1.data.io.iter_rl_dataset` as they are read, and one
that fails validation is still an error: this benchmark is written by the
project itself, so such a file is corrupt rather than a source with an odd row.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mmr1.data.io import iter_rl_dataset
from mmr1.eval.benchmarks.base import Benchmark, with_placeholders
from mmr1.eval.benchmarks.rows import BenchmarkDataError
from mmr1.prompts import training_prompt
from mmr1.rewards import extract_final_answer, is_correct
from schemas.eval import BenchmarkSpec, EvalItem, ItemScore
from schemas.records import IMAGE_PLACEHOLDER, RLRecord


class SyntheticAdapter(Benchmark):
    """The synthetic benchmark (RL-record parquet), scored by the RL verifier."""

    name: ClassVar[str] = "synthetic"
    default_split: ClassVar[str] = "test"
    breakdown_keys: ClassVar[tuple[str, ...]] = ("family", "difficulty")

    def load(self, spec: BenchmarkSpec) -> list[EvalItem]:
        """All records (the first ``spec.limit``) of the RL dataset at ``spec.source``."""
        if spec.name != self.name:
            raise ValueError(f"spec for {spec.name!r} given to the {self.name!r} adapter")
        path = Path(spec.source).expanduser()
        root = path if path.is_dir() else path.parent
        items: list[EvalItem] = []
        seen: set[str] = set()
        try:
            for position, record in enumerate(iter_rl_dataset(path)):
                if spec.limit is not None and position >= spec.limit:
                    break
                where = f"{path}: row {position}"
                item = self._item(record, where, root)
                if item.item_id in seen:
                    item = item.model_copy(
                        update={
                            "item_id": f"{record.id}#row{position}",
                            "invalid": f"{where}: field 'id': duplicate id {record.id!r}",
                        }
                    )
                seen.add(item.item_id)
                items.append(item)
        except FileNotFoundError as exc:
            raise BenchmarkDataError(str(exc)) from None
        self.check_invalid(spec, items)
        return items

    def _item(self, record: RLRecord, where: str, root: Path) -> EvalItem:
        """The record as an item; invalid (text only) when an image file is missing."""
        images: list[bytes] = []
        invalid = None
        for i, image in enumerate(record.images):
            if image.bytes is not None:
                images.append(image.bytes)
                continue
            file = Path(image.path or "")
            file = file if file.is_absolute() else root / file
            if not image.path or not file.is_file():
                invalid = f"{where}: field 'images[{i}]': no bytes and no file at {str(file)!r}"
                images = []
                break
            images.append(file.read_bytes())
        question = record.problem
        if question.count(IMAGE_PLACEHOLDER) != len(images):
            question = with_placeholders(question, len(images))
        return EvalItem(
            item_id=record.id,
            question=question,
            images=images,
            choices=record.choices,
            answer=record.answer,
            answer_type="multi_choice" if record.choices else "free_form",
            tags={
                "family": record.type,
                "difficulty": "unknown" if record.difficulty is None else str(record.difficulty),
            },
            row=record.model_dump(exclude={"images"}),
            invalid=invalid,
        )

    def official_prompt(self, item: EvalItem) -> str:
        """The generator's prompt: instruction first, then the question and its options."""
        return training_prompt(item.question, item.choices)

    def rule_score(self, item: EvalItem, response: str) -> ItemScore:
        extracted = extract_final_answer(response) or ""
        return ItemScore(
            item_id=item.item_id,
            correct=bool(extracted) and is_correct(extracted, item.answer, item.choices),
            extracted=extracted,
            scorer="rule",
        )
