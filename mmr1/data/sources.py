"""Ingest: read one configured source into the raw curation frame (``RAW_SCHEMA``).

A source is a Hugging Face dataset (``HubSource``), local files (``LocalSource``:
parquet, JSON lines, Arrow IPC/feather, a ``save_to_disk`` directory) or the
synthetic generator (``SyntheticSource``). Whatever the layout, every row comes
out with the same columns, and every row that was read either lands in the
kept frame or in the quarantine with a reason, so ``kept + quarantined ==
read`` (``limit`` counts rows read, unreadable ones included).

Row identity: ``source_row_id`` is the row's own ``id`` column (through the
column mapping) when present and non-null, else its 0-based position in the
source (across files, in sorted file order; for JSON lines every non-blank line
counts, unreadable ones included). ``row_id`` is ``"<source name>/<source_row_id>"``.
The ``source`` column is the configured source name; a ``source`` field in the
data itself is not read.

Layout coercion (after the column mapping ``source.columns``):

- ``images``: a list of ``{bytes, path}`` structs (MMR1-RL, HF ``List(Image())``),
  a single struct (HF ``Image()``, e.g. MathVista ``decoded_image``), a path or a
  list of paths, raw bytes or a list of them. PIL images put into a
  ``datasets.Dataset`` arrive as the ``Image()`` storage, i.e. the bytes
  ``datasets`` encoded them to (PNG for in-memory images), or a path. Images known
  only by path are read here: a relative path is resolved against ``image_root``,
  else the directory of the file that named it (hub datasets: the working
  directory).
- ``choices``: a list (items become strings), a JSON-encoded list, or null; an
  empty list or blank string means "not multiple choice" (null).
- ``answer`` / ``problem`` / ``type``: numbers and booleans become strings;
  ``type`` defaults to ``"unknown"``; ``difficulty`` is an integer or null.
- Placeholders: numbered ``<image1>``, ``<image2>`` ... become ``<image>``; a
  non-blank problem with no placeholder but k images gets k ``<image>`` lines
  prepended (benchmark layouts such as MathVista keep the image out of the text).

Quarantine reasons of this step:

- ``malformed_json``: a JSON line that does not parse or is not an object (a
  file cut mid-record ends in one); the detail names the file and line.
- ``invalid_utf8``: a JSON line that is not valid UTF-8, a text field holding
  lone surrogates (``"\\ud800"`` escapes) or binary text that is not UTF-8.
- ``invalid_field``: a field of the wrong shape (e.g. ``images`` is a number,
  ``choices`` is not a list); the detail names the field.
- ``duplicate_id``: a later row repeating an id already seen in this source
  (the first one wins, whatever its content; ``duplicate_of`` names it).
- ``image_missing``: an image with no bytes whose path does not exist or cannot
  be read, or an entry with neither bytes nor path.

A file that cannot be read at all (a parquet file with a cut footer, a missing
required column, an images column of an unknown type) raises ``SourceError``
naming the file: nothing was read from it, so there is nothing to count.

Batches: :class:`SourceBatches` reads a source ``batch_rows`` rows at a time
(parquet batches, Arrow record batches, ``datasets`` batches, runs of JSON
lines) and yields one ``StepResult`` per batch, so a source's images are never
all in memory; :func:`read_source` collects them. Duplicate ids are found across
batches through a :class:`~mmr1.data.batches.KeySet` of the ids seen, so the
result does not depend on ``batch_rows``. Batches always carry the ShareGPT
columns (null for record-layout rows); :func:`read_source` drops them when the
source had no ShareGPT row or file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mmr1.data.batches import DEFAULT_BATCH_ROWS, KeySet
from mmr1.data.coerce import (
    CHUNK_SCHEMA,
    IMAGES,
    PASSTHROUGH,
    RowError,
    SourceError,
    coerce_chunk,
    inline_image,
    py_id,
    py_text,
    python_row,
)
from mmr1.data.frame import RAW_SCHEMA, StepResult, ensure_raw_schema
from mmr1.data.io import parquet_files
from mmr1.data.sharegpt import conversation_fields
from mmr1.data.synthetic import iter_records
from schemas.curation import HubSource, LocalSource, SourceConfig, SyntheticSource
from schemas.records import IMAGE_PLACEHOLDER

__all__ = ["INGEST_REASONS", "SourceBatches", "SourceError", "frame_from_dataset", "read_source"]

INGEST_REASONS = (
    "malformed_json",
    "invalid_utf8",
    "invalid_field",
    "duplicate_id",
    "image_missing",
    "cot_no_answer",
)

#: Record fields a source column can be mapped to, besides ``difficulty`` (never mapped).
_FIELDS = ("id", "problem", "answer", "images", "choices", "type", "conversations")
#: Columns a ShareGPT row adds to the raw schema (``mmr1.data.sharegpt``).
SHAREGPT_COLUMNS = ("response", "problem_is_prompt")
_REQUIRED = ("problem", "answer")
_IMAGE_READ_THREADS = 8
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NUMBERED_PLACEHOLDER = r"<image\d+>"
_SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}


@dataclass
class _Chunks:
    """What the readers share with ``_finish``: where rows came from, and the layout seen.

    The readers yield coerced chunks (``CHUNK_SCHEMA`` frames of at most
    ``batch_rows`` rows) and register each file here as they open it.
    """

    batch_rows: int = DEFAULT_BATCH_ROWS
    files: list[str] = field(default_factory=list)
    roots: list[Path | None] = field(default_factory=list)
    position: str = "row"
    sharegpt: bool = False

    def add_file(self, label: str, root: Path | None) -> int:
        self.files.append(label)
        self.roots.append(root)
        return len(self.files) - 1


# ------------------------------------------------------------------------ entry points


def read_source(source: SourceConfig, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> StepResult:
    """Read one source into ``RAW_SCHEMA`` rows plus the rows that could not be read.

    All of it, in memory: the curation flow iterates :class:`SourceBatches` instead.
    Raises ``SourceError`` for a source that cannot be read at all (see module doc).
    """
    return _collect(SourceBatches(source, batch_rows=batch_rows))


def frame_from_dataset(
    dataset: Any, source: HubSource | LocalSource, *, image_root: Path | None = None
) -> StepResult:
    """Convert a ``datasets.Dataset`` through Arrow (no per-row Python for stored images).

    Tests and callers holding a dataset use it; ``save_to_disk`` and hub sources
    take the same path batch by batch. ``Image()`` columns arrive as their Arrow
    storage (``{bytes, path}`` structs), so nothing is decoded.
    """
    return _collect(SourceBatches(source, dataset=dataset, image_root=image_root))


class SourceBatches:
    """One source read ``batch_rows`` rows at a time: iterate for one ``StepResult`` per batch.

    Kept frames have the ``RAW_SCHEMA`` columns then ``SHAREGPT_COLUMNS``; after
    the iteration ``sharegpt`` says whether any file or row had the ShareGPT
    layout. At least one (possibly empty) result is yielded. ``dataset``: read
    this ``datasets.Dataset`` instead of loading the source (``image_root``
    then resolves its relative image paths).
    """

    def __init__(
        self,
        source: SourceConfig,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        dataset: Any = None,
        image_root: Path | None = None,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self.source = source
        self.batch_rows = batch_rows
        self.sharegpt = False
        self._dataset = dataset
        self._image_root = image_root

    def __iter__(self) -> Iterator[StepResult]:
        chunks = _Chunks(batch_rows=self.batch_rows)
        seen = KeySet()  # ids of earlier batches, for duplicate_id
        produced = False
        for frame in self._chunks(chunks):
            produced = True
            yield _finish(frame, chunks, self.source, seen)
        if not produced:
            yield _finish(pl.DataFrame(schema=CHUNK_SCHEMA), chunks, self.source, seen)
        self.sharegpt = chunks.sharegpt

    def _chunks(self, chunks: _Chunks) -> Iterator[pl.DataFrame]:
        source = self.source
        if self._dataset is not None:
            if isinstance(source, SyntheticSource):
                raise TypeError("a synthetic source is not read from a datasets.Dataset")
            return _dataset_chunks(self._dataset, source, chunks, self._image_root)
        if isinstance(source, HubSource):
            import datasets  # heavy import, only for hub sources

            dataset = datasets.load_dataset(
                source.dataset_id, source.subset, split=source.split, revision=source.revision
            )
            return _dataset_chunks(dataset, source, chunks, None)
        if isinstance(source, LocalSource):
            return _local_chunks(source, chunks)
        if isinstance(source, SyntheticSource):
            return _synthetic_chunks(source, chunks)
        raise TypeError(f"unknown source config {type(source).__name__}")


def _collect(batches: SourceBatches) -> StepResult:
    results = list(batches)
    kept = pl.concat([r.kept for r in results], how="vertical")
    quarantined = pl.concat([r.quarantined for r in results], how="vertical")
    if not batches.sharegpt:
        kept = kept.drop(SHAREGPT_COLUMNS)
    return StepResult(kept=kept, quarantined=quarantined)


def _dataset_chunks(
    dataset: Any, source: HubSource | LocalSource, chunks: _Chunks, image_root: Path | None
) -> Iterator[pl.DataFrame]:
    label = source.dataset_id if isinstance(source, HubSource) else source.path
    if hasattr(dataset, "keys") and not hasattr(dataset, "features"):  # a DatasetDict
        raise SourceError(
            f"{label}: holds several splits {sorted(dataset.keys())}; pick one "
            "(HubSource.split, or save one split to disk)"
        )
    columns = _column_map(source)
    present = set(dataset.column_names)
    layout = _layout(source, columns, present)
    _require(columns, present, label, layout)
    chunks.sharegpt |= layout == "sharegpt"
    if source.limit is not None and source.limit < len(dataset):
        dataset = dataset.select(range(source.limit))
    dataset = dataset.select_columns([c for c in _wanted(columns) if c in present])
    root = image_root if image_root is not None else _image_root(source)
    file = chunks.add_file(label, root)
    index = 0
    for table in dataset.with_format("arrow").iter(batch_size=chunks.batch_rows):
        yield _coerce(chunks, _polars(table), columns, file, index, layout, first_pos=index)
        index += table.num_rows
    if index == 0:
        yield _coerce(chunks, _polars(dataset.data.table.slice(0, 0)), columns, file, 0, layout)


def _polars(table: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


# ---------------------------------------------------------------------------- readers


def _local_chunks(source: LocalSource, chunks: _Chunks) -> Iterator[pl.DataFrame]:
    path = Path(source.path).expanduser()
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory (source {source.name!r})")
    fmt = source.format if source.format != "auto" else _detect_format(path)
    if fmt == "disk":
        import datasets

        try:
            dataset = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise SourceError(f"{path}: not a datasets save_to_disk directory: {exc}") from None
        yield from _dataset_chunks(dataset, source, chunks, _image_root(source) or path)
        return
    if fmt == "jsonl":
        yield from _jsonl_chunks(source, path, chunks)
        return
    columns = _column_map(source)
    remaining = source.limit
    index = 0
    for file in _files(path, fmt):
        if remaining is not None and remaining <= 0:
            break
        tables = _table_batches(file, fmt, source, columns, chunks)
        file_id = chunks.add_file(str(file), _image_root(source) or file.parent)
        position = 0
        for table, layout in tables:
            if remaining is not None:
                table = table.slice(0, remaining)
                remaining -= table.num_rows
            frame = _polars(table)
            yield _coerce(chunks, frame, columns, file_id, index, layout, first_pos=position)
            index += table.num_rows
            position += table.num_rows
            if remaining is not None and remaining <= 0:
                break


def _detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "disk"
        for fmt, pattern in (("parquet", "*.parquet"), ("jsonl", "*.jsonl"), ("arrow", "*.arrow")):
            if any(_visible(path, p) for p in path.rglob(pattern)):
                return fmt
        raise SourceError(f"{path}: no parquet, jsonl or arrow files and not a save_to_disk dir")
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SourceError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            "set format to parquet, jsonl, arrow or disk"
        )
    return fmt


def _visible(root: Path, path: Path) -> bool:
    return path.is_file() and not any(p.startswith(".") for p in path.relative_to(root).parts)


def _files(path: Path, fmt: str) -> list[Path]:
    if fmt == "parquet":
        try:
            return parquet_files(path)
        except FileNotFoundError as exc:
            raise SourceError(str(exc)) from None
    if path.is_file():
        return [path]
    suffixes = [s for s, f in _SUFFIX_FORMATS.items() if f == fmt]
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes and _visible(path, p))
    if not files:
        raise SourceError(f"{path}: no {fmt} files ({', '.join(suffixes)})")
    return files


def _table_batches(
    file: Path, fmt: str, source: LocalSource, columns: dict[str, str], chunks: _Chunks
) -> Iterator[tuple[pa.Table | pa.RecordBatch, str]]:
    """The wanted columns of one parquet/Arrow file in batches, each with the file's layout.

    Yields at least one (possibly empty) batch.
    """
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(file, pre_buffer=False)  # see batches.iter_frames
            names = parquet.schema_arrow.names
            layout = _layout(source, columns, names)
            _require(columns, set(names), str(file), layout)
            chunks.sharegpt |= layout == "sharegpt"
            wanted = [c for c in _wanted(columns) if c in names]
            empty = True
            for batch in parquet.iter_batches(batch_size=chunks.batch_rows, columns=wanted):
                empty = False
                yield batch, layout
            if empty:
                schema = pa.schema([parquet.schema_arrow.field(name) for name in wanted])
                yield schema.empty_table(), layout
        else:
            table = _read_ipc(file)  # memory-mapped: only the batch being converted is copied
            layout = _layout(source, columns, table.column_names)
            _require(columns, set(table.column_names), str(file), layout)
            chunks.sharegpt |= layout == "sharegpt"
            table = table.select([c for c in _wanted(columns) if c in table.column_names])
            for start in range(0, max(table.num_rows, 1), chunks.batch_rows):
                yield table.slice(start, chunks.batch_rows), layout
    except SourceError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{file}: not a readable {fmt} file: {exc}") from None


def _read_ipc(file: Path) -> pa.Table:
    # Feather v2 / .arrow files use the IPC file format; datasets' cache files the stream one.
    try:
        with pa.memory_map(str(file)) as source:
            return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        with pa.memory_map(str(file)) as source:
            return pa.ipc.open_stream(source).read_all()


def _jsonl_chunks(source: LocalSource, path: Path, chunks: _Chunks) -> Iterator[pl.DataFrame]:
    """JSON lines, line by line: unreadable lines become quarantined rows, not errors."""
    columns = _column_map(source)
    chunks.position = "line"
    index = 0
    for file in _files(path, "jsonl"):
        if source.limit is not None and index >= source.limit:
            break
        file_id = chunks.add_file(str(file), _image_root(source) or file.parent)
        rows: dict[str, list[Any]] = {name: [] for name in CHUNK_SCHEMA}
        with file.open("rb") as handle:
            head = handle.read(64).lstrip()
            if file.suffix == ".json" and head.startswith(b"["):
                raise SourceError(f"{file}: a JSON array, not JSON lines; convert it to .jsonl")
            handle.seek(0)
            for line_no, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                if source.limit is not None and index >= source.limit:
                    break
                values = _jsonl_row(raw, columns, source.layout)
                chunks.sharegpt |= values.get("problem_is_prompt") is True
                values.update(_index=index, _file=file_id, _pos=line_no)
                for name, column in rows.items():
                    column.append(values.get(name))
                index += 1
                if len(rows["_index"]) == chunks.batch_rows:
                    yield pl.DataFrame(rows, schema=CHUNK_SCHEMA)
                    rows = {name: [] for name in CHUNK_SCHEMA}
        if rows["_index"]:
            yield pl.DataFrame(rows, schema=CHUNK_SCHEMA)


def _jsonl_row(raw: bytes, columns: dict[str, str], layout: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _bad(
            "invalid_utf8",
            f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not valid UTF-8",
        )
    try:
        # Without the line ending: a record cut short is reported at its end on this line,
        # not at "line 2, column 1" of the one-line document.
        record = json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        return _bad("malformed_json", f"invalid JSON at column {exc.colno}: {exc.msg}")
    if not isinstance(record, dict):
        return _bad("malformed_json", f"a JSON {type(record).__name__}, not an object")
    # Only lines with \ud800-\udfff escapes can hold lone surrogates after parsing.
    check_surrogates = _SURROGATE_ESCAPE.search(raw) is not None
    try:
        if _layout_of_record(layout, columns, record) == "sharegpt":
            record, columns = _sharegpt_record(record, columns)
        return python_row(record, columns, check_surrogates)
    except RowError as exc:
        row = _bad(exc.reason, exc.detail)
        try:  # keep the row's id when it is readable: it then counts for duplicates
            row["_id"] = py_id(record.get(columns["id"]), check_surrogates)
        except RowError:
            pass
        return row


def _bad(reason: str, detail: str) -> dict[str, Any]:
    return {"_reason": reason, "_detail": detail}


def _synthetic_chunks(source: SyntheticSource, chunks: _Chunks) -> Iterator[pl.DataFrame]:
    file_id = chunks.add_file(f"synthetic(seed={source.synthetic.seed})", None)
    records = enumerate(islice(iter_records(source.synthetic), source.limit))
    while batch := list(islice(records, chunks.batch_rows)):
        rows = [
            {
                "_index": index,
                "_file": file_id,
                "_pos": index,
                "_id": record.id,
                "problem": record.problem,
                "answer": record.answer,
                "images": [{"bytes": im.bytes, "path": im.path} for im in record.images],
                "choices": record.choices,
                "type": record.type,
                "difficulty": record.difficulty,
            }
            for index, record in batch
        ]
        yield pl.DataFrame(rows, schema=CHUNK_SCHEMA)


# ------------------------------------------------------------------- ShareGPT rows

_DERIVED = {"problem": "__problem", "answer": "__answer", **PASSTHROUGH}


def _coerce(
    chunks: _Chunks,
    frame: pl.DataFrame,
    columns: dict[str, str],
    file_id: int,
    offset: int,
    layout: str,
    *,
    first_pos: int = 0,
) -> pl.DataFrame:
    """One table's rows -> a chunk; ShareGPT tables are turned into record fields first.

    ``offset``: the first row's index in the source; ``first_pos``: in its file.
    """
    if layout != "sharegpt":
        return coerce_chunk(frame, columns, file_id, offset, first_pos=first_pos)
    chunks.sharegpt = True
    conversations = frame.get_column(columns["conversations"]).to_list()
    golds = (
        frame.get_column(columns["answer"]).to_list()
        if columns["answer"] in frame.columns
        else [None] * frame.height
    )
    derived: dict[str, list[Any]] = {name: [] for name in _DERIVED.values()}
    errors: dict[int, tuple[str, str]] = {}
    for row, (value, gold) in enumerate(zip(conversations, golds, strict=True)):
        try:
            fields = _sharegpt_fields(value, gold)
        except RowError as exc:
            errors[row] = (exc.reason, exc.detail)
            fields = dict.fromkeys(_DERIVED.values())
        for name, column in derived.items():
            column.append(fields[name])
    extra = pl.DataFrame(
        derived,
        schema={
            "__problem": pl.String,
            "__answer": pl.String,
            PASSTHROUGH["response"]: pl.String,
            PASSTHROUGH["problem_is_prompt"]: pl.Boolean,
        },
    )
    mapped = {**columns, "problem": "__problem", "answer": "__answer"}
    return coerce_chunk(
        frame.hstack(extra), mapped, file_id, offset, row_errors=errors, first_pos=first_pos
    )


def _sharegpt_fields(value: Any, gold: Any) -> dict[str, Any]:
    """The derived columns of one ShareGPT row (``_DERIVED`` names); raises ``RowError``."""
    gold_text = py_text(gold, "answer", False, lists=True)
    has_gold = gold_text is not None and gold_text.strip() != ""
    problem, response, extracted = conversation_fields(value, has_gold)
    return {
        "__problem": problem,
        "__answer": gold_text if has_gold else extracted,
        PASSTHROUGH["response"]: response,
        PASSTHROUGH["problem_is_prompt"]: True,
    }


def _sharegpt_record(
    record: dict[str, Any], columns: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A JSON-lines ShareGPT object with its derived fields, and the mapping that reads them."""
    fields = _sharegpt_fields(record.get(columns["conversations"]), record.get(columns["answer"]))
    mapped = {**columns, "problem": "__problem", "answer": "__answer"}
    return {**record, **fields}, mapped


# ------------------------------------------------------------------- column mapping


def _column_map(source: HubSource | LocalSource | SyntheticSource) -> dict[str, str]:
    """Record field -> source column; ``difficulty`` is read from its own name only."""
    mapping = {name: source.columns.get(name, name) for name in _FIELDS}
    mapping["difficulty"] = "difficulty"
    return mapping


def _wanted(columns: dict[str, str]) -> list[str]:
    return list(dict.fromkeys(columns.values()))


def _layout(
    source: HubSource | LocalSource, columns: dict[str, str], present: Iterable[str]
) -> str:
    """``record`` or ``sharegpt`` for a table with columns ``present``."""
    if source.layout != "auto":
        return source.layout
    present = set(present)
    if columns["conversations"] in present and columns["problem"] not in present:
        return "sharegpt"
    return "record"


def _layout_of_record(layout: str, columns: dict[str, str], record: dict[str, Any]) -> str:
    if layout != "auto":
        return layout
    if columns["conversations"] in record and columns["problem"] not in record:
        return "sharegpt"
    return "record"


def _require(
    columns: dict[str, str], present: Iterable[str], label: str, layout: str = "record"
) -> None:
    present = set(present)
    if layout == "sharegpt":
        if columns["conversations"] not in present:
            raise SourceError(
                f"{label}: no column {columns['conversations']!r} for field 'conversations' "
                f"(layout sharegpt); columns: {sorted(present)}"
            )
        return
    for name in _REQUIRED:
        if columns[name] not in present:
            hint = "" if name in present else f" (map it: columns={{'{name}': '<column>'}})"
            raise SourceError(
                f"{label}: no column {columns[name]!r} for field '{name}'{hint}; "
                f"columns: {sorted(present)}"
            )


def _image_root(source: HubSource | LocalSource) -> Path | None:
    root = getattr(source, "image_root", None)
    return Path(root).expanduser() if root else None


# -------------------------------------------------------------------------- finishing


def _finish(
    frame: pl.DataFrame,
    chunks: _Chunks,
    source: HubSource | LocalSource | SyntheticSource,
    seen: KeySet,
) -> StepResult:
    """Ids, duplicates, placeholders, image files of one chunk; split kept / quarantined.

    ``seen`` holds the ids of earlier chunks of the source (updated here): a row
    repeating one of them, or an earlier row of this chunk, is a duplicate.
    """
    sid = pl.coalesce(pl.col("_id"), pl.col("_index").cast(pl.String))
    frame = frame.with_columns(
        source=pl.lit(source.name, dtype=pl.String),
        source_row_id=sid,
        row_id=pl.lit(f"{source.name}/") + sid,
    )
    # Lines that could not be read have no id of their own: they take part in no duplicate.
    keys = frame.select(
        pl.when(pl.col("_id").is_not_null() | pl.col("_reason").is_null()).then(sid)
    ).to_series()
    repeated = pl.Series(seen.contains(keys)) | ~keys.is_first_distinct()
    duplicate = pl.Series(keys.is_not_null() & repeated)
    seen.add(keys.filter(keys.is_not_null() & ~duplicate))
    # The first row with an id is the one whose source_row_id is that id.
    first = pl.lit(f"{source.name}/") + pl.col("_key")
    frame = frame.with_columns(keys.alias("_key"), duplicate.alias("_dup")).with_columns(
        _reason=pl.when("_dup").then(pl.lit("duplicate_id")).otherwise(pl.col("_reason")),
        _detail=pl.when("_dup")
        .then(pl.format("id {} repeats the id of row {}", pl.col("source_row_id"), first))
        .otherwise(pl.col("_detail")),
        duplicate_of=pl.when("_dup").then(first),
    )
    frame = frame.with_columns(
        images=pl.col("images").fill_null(pl.lit([], dtype=IMAGES)),
        type=pl.col("type").fill_null("unknown"),
    ).with_columns(problem=_placeholders(pl.col("problem"), pl.col("images").list.len()))
    frame = _load_image_files(frame, chunks.roots)
    bad = pl.col("_reason").is_not_null()
    columns = [*RAW_SCHEMA, *SHAREGPT_COLUMNS]
    kept = ensure_raw_schema(frame.filter(~bad).sort("_index").select(columns))
    quarantined = _quarantine(frame.filter(bad), chunks)
    return StepResult(kept=kept, quarantined=quarantined)


def _placeholders(problem: pl.Expr, n_images: pl.Expr) -> pl.Expr:
    problem = problem.str.replace_all(_NUMBERED_PLACEHOLDER, IMAGE_PLACEHOLDER)
    missing = (
        (problem.str.count_matches(IMAGE_PLACEHOLDER, literal=True) == 0)
        & (n_images > 0)
        & (problem.str.strip_chars() != "")
    )
    prefix = pl.lit(f"{IMAGE_PLACEHOLDER}\n").repeat_by(n_images).list.join("")
    return pl.when(missing).then(prefix + problem).otherwise(problem)


def _quarantine(bad: pl.DataFrame, chunks: _Chunks) -> pl.DataFrame:
    files = pl.Series("_label", chunks.files, dtype=pl.String)
    where = files.gather(bad["_file"].cast(pl.UInt32)) if bad.height else files.clear()
    return (
        bad.with_columns(where.alias("_where"))
        .sort("_index")
        .select(
            "source",
            "source_row_id",
            reason=pl.col("_reason"),
            detail=pl.format(
                "{} {} {}: {}",
                pl.col("_where"),
                pl.lit(chunks.position),
                pl.col("_pos"),
                pl.col("_detail"),
            ),
            duplicate_of=pl.col("duplicate_of"),
        )
    )


def _load_image_files(frame: pl.DataFrame, roots: Sequence[Path | None]) -> pl.DataFrame:
    """Read the bytes of images known only by path (rows not already quarantined)."""
    needs = (
        pl.col("images").list.eval(pl.element().struct.field("bytes").is_null()).list.any()
        & pl.col("_reason").is_null()
    )
    mask = frame.select(needs.fill_null(False)).to_series()
    if not mask.any():
        return frame
    todo = frame.filter(mask)
    rows = todo.select("_file", "images").rows()
    resolved = [[_resolve(img, roots[file]) for img in images] for file, images in rows]
    paths = sorted({path for images in resolved for path in images if path is not None})
    with ThreadPoolExecutor(max_workers=_IMAGE_READ_THREADS) as pool:
        contents = dict(zip(paths, pool.map(_read_file, paths), strict=True))
    new_images, reasons, details = [], [], []
    for (_, images), paths_of_row in zip(rows, resolved, strict=True):
        out, problem = [], None
        for i, (image, path) in enumerate(zip(images, paths_of_row, strict=True)):
            data = (image or {}).get("bytes")
            name = (image or {}).get("path")
            if data is None and name and (inline := inline_image(name)) is not None:
                data, name = inline, None
            if data is None:
                found = contents.get(path) if path is not None else None
                if isinstance(found, bytes):
                    data = found
                elif problem is None:
                    why = found if path is not None else "has neither bytes nor a path"
                    problem = f"field 'images'[{i}]: {why}"
            out.append({"bytes": data, "path": name})
        new_images.append(out)
        reasons.append(None if problem is None else "image_missing")
        details.append(problem)
    todo = todo.with_columns(
        pl.Series("images", new_images, dtype=IMAGES),
        pl.Series("_reason", reasons, dtype=pl.String),
        pl.Series("_detail", details, dtype=pl.String),
    )
    return pl.concat([frame.filter(~mask), todo], how="vertical").sort("_index")


def _resolve(image: dict[str, Any] | None, root: Path | None) -> Path | None:
    if image is None or image.get("bytes") is not None or not image.get("path"):
        return None
    if inline_image(image["path"]) is not None:
        return None  # base64 / data URL in a string column: decoded below, not a file
    path = Path(image["path"]).expanduser()
    return path if path.is_absolute() or root is None else root / path


def _read_file(path: Path) -> bytes | str:
    """The file's bytes, or why it could not be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return f"file {path} not found"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
