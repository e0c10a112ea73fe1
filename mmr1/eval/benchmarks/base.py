"""The benchmark adapter interface and the implementation the table benchmarks share.

An adapter maps one benchmark's rows to :class:`EvalItem` records (``load``),
builds a generation request per item (``build_request``), scores one response
by the benchmark's rule (``score``) and aggregates item scores into the
official overall accuracy and its breakdowns (``aggregate``).

:class:`RowBenchmark` implements everything but the per-row mapping
(``make_item``), the scorer (``rule_score``) and the official prompt: rows come
from :func:`mmr1.eval.benchmarks.rows.iter_rows`, images are kept encoded, and
the ``mmr1`` prompt is :func:`mmr1.prompts.evaluation_prompt` of the item's
question and choices.

Bad rows never stop a benchmark (docs/BENCHMARKS.md, "Bad rows"). A row that
cannot be read or that ``make_item`` refuses (an empty gold answer, a missing
field, an unreadable image, a duplicate id) becomes an *invalid* item:
``EvalItem.invalid`` holds the reason (file, row, field, problem), the item
keeps what could be read (id, question, images, breakdown tags), it is still
sent to the model (as the official scripts do) and it is always scored wrong;
``BenchmarkScore.n_invalid`` counts such items. Only a source where *every*
row is invalid is an error: then nothing was read (wrong layout, missing
image folder).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from mmr1.data.io import decode_image
from mmr1.eval.benchmarks.rows import BenchmarkDataError, SourceRow, iter_rows
from mmr1.prompts import evaluation_prompt
from schemas.eval import BenchmarkScore, BenchmarkSpec, EvalItem, ItemScore
from schemas.generation import GenerationRequest
from schemas.records import IMAGE_PLACEHOLDER, ImageData

_NUMBERED_PLACEHOLDER = re.compile(r"<image\s*\d*>")
logger = logging.getLogger(__name__)


@runtime_checkable
class BenchmarkAdapter(Protocol):
    """What the evaluate flow calls for each benchmark.

    ``name`` and ``default_split`` are read-only attributes (class constants in
    the implementations).
    """

    @property
    def name(self) -> str:
        """The registry name (``BenchmarkSpec.name``)."""
        ...

    @property
    def default_split(self) -> str:
        """The split evaluated when ``BenchmarkSpec.split`` is None."""
        ...

    def load(self, spec: BenchmarkSpec) -> list[EvalItem]:
        """The items of ``spec.split`` (default: ``default_split``) of ``spec.source``."""
        ...

    def build_request(self, item: EvalItem, prompt_style: str) -> GenerationRequest:
        """A request with ``request_id = item.item_id`` and the images decoded to RGB."""
        ...

    def score(self, item: EvalItem, response: str) -> ItemScore:
        """Score one model response by the benchmark's rule."""
        ...

    def aggregate(
        self, items: Sequence[EvalItem], scores: Sequence[ItemScore], split: str
    ) -> BenchmarkScore:
        """The official overall accuracy plus breakdowns."""
        ...


# ------------------------------------------------------------------ row fields


def required(row: SourceRow, name: str) -> Any:
    """``row.data[name]``; a missing or null value is an error naming file, row and field."""
    value = row.data.get(name)
    if value is None:
        problem = "missing" if name not in row.data else "null"
        raise row.error(name, f"{problem} (columns: {sorted(row.data)})")
    return value


def as_text(row: SourceRow, name: str, value: Any) -> str:
    """A scalar (or a list, as ``str(list)``: MathVista list answers) as text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return str(list(value))
    raise row.error(name, f"expected text, got {type(value).__name__}")


def text_field(row: SourceRow, name: str, *, default: str | None = None) -> str:
    """A text field; required unless ``default`` is given (used for missing/null values)."""
    value = row.data.get(name)
    if value is None:
        if default is not None:
            return default
        return as_text(row, name, required(row, name))
    return as_text(row, name, value)


def gold_text(row: SourceRow, name: str) -> str:
    """The gold answer field, stripped; missing, null or empty is an error (an invalid row)."""
    answer = text_field(row, name).strip()
    if not answer:
        raise row.error(name, "empty")
    return answer


def text_list(row: SourceRow, name: str) -> list[str]:
    """A list of texts (null or missing: empty); a JSON-encoded list string is accepted."""
    value = row.data.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise row.error(name, "a string that is not a JSON list") from None
    if not isinstance(value, list | tuple):
        raise row.error(name, f"expected a list, got {type(value).__name__}")
    return [as_text(row, f"{name}[{i}]", item) for i, item in enumerate(value)]


def tag_value(value: Any) -> str | list[str]:
    """A breakdown tag: lists stay lists (multi-label), missing values become ``unknown``."""
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    if value is None or (isinstance(value, str) and not value.strip()):
        return "unknown"
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types: bytes dropped (None), NaN -> None, others -> ``str``."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview | Image.Image):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


def row_without(row: SourceRow, columns: Iterable[str]) -> dict[str, Any]:
    """The row as JSON-able values, without ``columns`` (the image columns)."""
    drop = set(columns)
    return {key: jsonable(value) for key, value in row.data.items() if key not in drop}


# ------------------------------------------------------------------ images


def row_images(row: SourceRow, columns: Sequence[str]) -> list[bytes]:
    """Encoded images of the first of ``columns`` that holds a value.

    Accepts ``{bytes, path}`` dicts (``datasets`` storage), raw bytes, PIL images,
    paths (relative ones against the data file's directory, then its parent:
    the hub layout ``data/*.parquet`` + ``images/``), or a list of those.
    """
    for name in columns:
        value = row.data.get(name)
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        items = value if isinstance(value, list | tuple) else [value]
        return [_image_bytes(row, f"{name}[{i}]", item) for i, item in enumerate(items)]
    raise row.error("/".join(columns), "no image")


def _image_bytes(row: SourceRow, field: str, item: Any) -> bytes:
    if isinstance(item, Image.Image):  # a decoded datasets Image() value
        if item.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
            item = item.convert("RGB")  # PNG cannot hold CMYK/YCbCr
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return buffer.getvalue()
    data: Any = None
    path: Any = None
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
    elif isinstance(item, str):
        path = item
    elif isinstance(item, dict):
        data, path = item.get("bytes"), item.get("path")
    else:
        raise row.error(field, f"expected bytes, a path or {{bytes, path}}, got {type(item)}")
    if data is None:
        if not path:
            raise row.error(field, "an image with neither bytes nor a path")
        data = _read_image_file(row, field, str(path))
    data = bytes(data)
    try:
        with Image.open(io.BytesIO(data)):
            pass  # reads the header only: catches non-images at load time
    except (UnidentifiedImageError, OSError) as exc:
        raise row.error(field, f"not a readable image: {exc}") from None
    return data


def _read_image_file(row: SourceRow, field: str, name: str) -> bytes:
    path = Path(name).expanduser()
    candidates = [path] if path.is_absolute() or row.root is None else [row.root / path]
    if row.root is not None and not path.is_absolute():
        candidates.append(row.root.parent / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.read_bytes()
    looked = ", ".join(str(candidate) for candidate in candidates)
    raise row.error(field, f"image file {name!r} not found (looked in {looked})")


def with_placeholders(text: str, n_images: int) -> str:
    """``text`` with exactly ``n_images`` ``<image>`` placeholders.

    Numbered placeholders (``<image1>``) become ``<image>``. When the count then
    differs from ``n_images`` (none in the text, as in MathVista), the
    placeholders are removed and ``n_images`` lines of ``<image>`` are put first.
    """
    text = _NUMBERED_PLACEHOLDER.sub(IMAGE_PLACEHOLDER, text)
    if text.count(IMAGE_PLACEHOLDER) == n_images:
        return text
    text = text.replace(IMAGE_PLACEHOLDER, "").strip()
    return "\n".join([IMAGE_PLACEHOLDER] * n_images + [text])


# ------------------------------------------------------------------ aggregation


def summarize(
    benchmark: str,
    split: str,
    items: Sequence[EvalItem],
    scores: Sequence[ItemScore],
    *,
    keys: Sequence[str],
    macro_over: str | None = None,
    scorer: str = "rule",
) -> BenchmarkScore:
    """Accuracy overall and per tag group (multi-label tags count in each of their groups).

    ``macro_over``: the overall accuracy is the mean of that key's group accuracies
    (for the official MathVerse/ChartQA numbers, whose groups are equally sized on
    the full split); else the mean over items. Raises ``ValueError`` when the
    scores do not cover exactly the items.
    """
    by_id = {score.item_id: score for score in scores}
    item_ids = {item.item_id for item in items}
    missing = sorted(item_ids - set(by_id))
    unknown = sorted(set(by_id) - item_ids)
    if missing or unknown or len(by_id) != len(scores):
        raise ValueError(
            f"{benchmark}: scores do not match the items (missing {missing[:5]}, "
            f"unknown {unknown[:5]}, {len(scores) - len(by_id)} duplicate scores)"
        )
    scorers = sorted({score.scorer for score in scores}) or [scorer]
    tallies: dict[str, dict[str, list[int]]] = {key: {} for key in keys}
    n_correct = 0
    for item in items:
        correct = int(by_id[item.item_id].correct)
        n_correct += correct
        for key in keys:
            value = item.tags.get(key, "unknown")
            for group in value if isinstance(value, list) else [value]:
                tally = tallies[key].setdefault(group, [0, 0])
                tally[0] += 1
                tally[1] += correct
    breakdown = {
        key: {group: tally[1] / tally[0] for group, tally in sorted(groups.items())}
        for key, groups in tallies.items()
    }
    counts = {
        key: {group: tally[0] for group, tally in sorted(groups.items())}
        for key, groups in tallies.items()
    }
    if macro_over is not None and breakdown.get(macro_over):
        groups = breakdown[macro_over]
        accuracy = sum(groups.values()) / len(groups)
    else:
        accuracy = n_correct / len(items) if items else 0.0
    invalid = {item.item_id: item.invalid for item in items if item.invalid is not None}
    return BenchmarkScore(
        benchmark=benchmark,
        split=split,
        scorer="+".join(scorers),
        n_items=len(items),
        n_correct=n_correct,
        accuracy=accuracy,
        macro_over=macro_over,
        breakdown=breakdown,
        counts=counts,
        n_invalid=len(invalid),
        invalid=invalid,
    )


# ------------------------------------------------------------------ shared implementation


class Benchmark(ABC):
    """What every adapter shares: prompts, requests and aggregation; subclasses load and score."""

    name: ClassVar[str]
    default_split: ClassVar[str]
    #: Tag keys reported in ``BenchmarkScore.breakdown``.
    breakdown_keys: ClassVar[tuple[str, ...]] = ()
    #: Breakdown key whose group accuracies are averaged for the overall number.
    macro_over: ClassVar[str | None] = None

    @abstractmethod
    def load(self, spec: BenchmarkSpec) -> list[EvalItem]:
        """Items of the spec's split, in source order; errors name the file, row and field."""

    def check_invalid(self, spec: BenchmarkSpec, items: Sequence[EvalItem]) -> None:
        """Log the invalid rows; refuse a source where no row at all could be read."""
        reasons = [item.invalid for item in items if item.invalid is not None]
        if not reasons:
            return
        shown = "; ".join(reasons[:3])
        if len(reasons) > 3:
            shown += f"; ... ({len(reasons) - 3} more)"
        if len(reasons) == len(items):
            raise BenchmarkDataError(
                f"{spec.source}: none of the {len(items)} rows is a valid {self.name} row "
                f"(wrong source or layout?): {shown}"
            )
        logger.warning(
            "%s: %d of %d rows are invalid and will be scored wrong: %s",
            self.name,
            len(reasons),
            len(items),
            shown,
        )

    def official_prompt(self, item: EvalItem) -> str:
        """The benchmark's own prompt (default: the MMR1 evaluation prompt)."""
        return evaluation_prompt(item.question, item.choices)

    def build_request(self, item: EvalItem, prompt_style: str) -> GenerationRequest:
        """``mmr1``: evaluation_prompt(question, choices); ``official``: the benchmark's prompt.

        An invalid item whose row lacks what the official prompt needs gets the
        ``mmr1`` prompt of what could be read (it is scored wrong either way).
        """
        if prompt_style == "mmr1":
            prompt = evaluation_prompt(item.question, item.choices)
        elif prompt_style == "official":
            try:
                prompt = self.official_prompt(item)
            except ValueError:
                if item.invalid is None:
                    raise
                prompt = evaluation_prompt(item.question, item.choices)
        else:
            raise ValueError(f"unknown prompt_style {prompt_style!r} (expected mmr1 or official)")
        if prompt.count(IMAGE_PLACEHOLDER) != len(item.images):
            raise ValueError(
                f"{self.name} item {item.item_id}: prompt has {prompt.count(IMAGE_PLACEHOLDER)} "
                f"{IMAGE_PLACEHOLDER} placeholders for {len(item.images)} images"
            )
        images = [decode_image(ImageData(bytes=data)) for data in item.images]
        return GenerationRequest(prompt=prompt, images=images, request_id=item.item_id)

    def score(self, item: EvalItem, response: str) -> ItemScore:
        """Score one response by the benchmark's rule; an invalid item is always wrong."""
        if item.invalid is not None:
            return ItemScore(item_id=item.item_id, correct=False, extracted="", scorer="rule")
        return self.rule_score(item, response)

    @abstractmethod
    def rule_score(self, item: EvalItem, response: str) -> ItemScore:
        """Score one response to a valid item by the benchmark's rule."""

    def aggregate(
        self, items: Sequence[EvalItem], scores: Sequence[ItemScore], split: str
    ) -> BenchmarkScore:
        """Overall accuracy (see ``macro_over``) and the ``breakdown_keys`` breakdowns."""
        return summarize(
            self.name, split, items, scores, keys=self.breakdown_keys, macro_over=self.macro_over
        )


class RowBenchmark(Benchmark):
    """A benchmark read as rows (hub or local files); subclasses map rows and score."""

    #: Columns holding the image, in order of preference.
    image_columns: ClassVar[tuple[str, ...]] = ("image",)
    #: Row columns the official prompt needs (checked at load for prompt_style "official").
    official_columns: ClassVar[tuple[str, ...]] = ()
    #: Columns holding the item id, in order of preference; none: ``<name>-<row position>``.
    id_columns: ClassVar[tuple[str, ...]] = ()
    #: Columns holding the question text of an invalid item, in order of preference.
    question_columns: ClassVar[tuple[str, ...]] = ("question",)

    def hub_subset(self, split: str) -> str | None:
        """The hub config name for ``split`` when ``spec.subset`` is None."""
        return None

    def load(self, spec: BenchmarkSpec) -> list[EvalItem]:
        """Items of the spec's split, in source order, bad rows included as invalid items.

        Raises ``BenchmarkDataError`` when the source cannot be read at all or
        when every row is invalid (the message names the first rows and why).
        """
        if spec.name != self.name:
            raise ValueError(f"spec for {spec.name!r} given to the {self.name!r} adapter")
        split = spec.split or self.default_split
        subset = spec.subset or self.hub_subset(split)
        items: list[EvalItem] = []
        first_seen: dict[str, str] = {}
        for row in iter_rows(spec.source, split, subset=subset, limit=spec.limit):
            item = self._read_row(row, official=spec.prompt_style == "official")
            if item.item_id in first_seen:
                reason = (
                    f"{row.where}: duplicate item id {item.item_id!r} "
                    f"(first at {first_seen[item.item_id]})"
                )
                item = item.model_copy(  # an invalid row keeps its first reason
                    update={
                        "item_id": f"{item.item_id}#row{row.position}",
                        "invalid": item.invalid or reason,
                    }
                )
            first_seen[item.item_id] = row.where
            items.append(item)
        self.check_invalid(spec, items)
        return items

    def _read_row(self, row: SourceRow, *, official: bool) -> EvalItem:
        """``make_item(row)``, or an invalid item with the reason it could not be made."""
        if row.problem is not None:
            return self.invalid_item(row, f"{row.where}: {row.problem}")
        try:
            if official:
                for column in self.official_columns:
                    required(row, column)
            return self.make_item(row)
        except BenchmarkDataError as exc:
            return self.invalid_item(row, str(exc))
        except ValidationError as exc:  # a value make_item passed on that EvalItem refuses
            problem = "; ".join(
                f"field '{'.'.join(map(str, error['loc']))}': {error['msg']}"
                for error in exc.errors()[:3]
            )
            return self.invalid_item(row, f"{row.where}: {problem}")

    @abstractmethod
    def make_item(self, row: SourceRow) -> EvalItem:
        """One source row as an item (raise ``row.error(field, problem)`` on bad input)."""

    def row_id(self, row: SourceRow) -> str:
        """The first scalar of ``id_columns`` present, else ``<name>-<row position>``."""
        for column in self.id_columns:
            value = row.data.get(column)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
                return str(value)
        return f"{self.name}-{row.position}"

    def row_tags(self, row: SourceRow) -> dict[str, str | list[str]]:
        """Breakdown tags read leniently (``unknown`` if missing); default: same-named columns."""
        return {key: tag_value(row.data.get(key)) for key in self.breakdown_keys}

    def invalid_item(self, row: SourceRow, reason: str) -> EvalItem:
        """An item for a row that could not be read, with what could be (id, text, images, tags).

        It is scored wrong whatever the answer; it still goes to the model, text
        only when its images cannot be read.
        """
        try:
            images = row_images(row, self.image_columns)
        except BenchmarkDataError:
            images = []
        question = next(
            (
                value
                for column in self.question_columns
                if isinstance(value := row.data.get(column), str) and value.strip()
            ),
            "",
        )
        gold = row.data.get("answer")
        return EvalItem(
            item_id=self.row_id(row),
            question=with_placeholders(question, len(images)),
            images=images,
            answer=gold if isinstance(gold, str) else "",
            answer_type="invalid",
            tags=self.row_tags(row),
            row=row_without(row, self.image_columns),
            invalid=reason,
        )

    def row_query(self, item: EvalItem, column: str) -> str:
        """The item's official query column, after its image placeholders."""
        query = item.row.get(column)
        if not isinstance(query, str) or not query.strip():
            raise ValueError(
                f"{self.name} item {item.item_id}: no {column!r} in its row, which the official "
                "prompt needs (use prompt_style 'mmr1')"
            )
        return with_placeholders(query, len(item.images))
