"""Readers of one source, one format each: coerced chunks of at most ``batch_rows`` rows.

A reader yields ``CHUNK_SCHEMA`` frames (``mmr1.data.coerce``) and registers each
file it opens in the shared :class:`Chunks`, so ``mmr1.data.sources`` can name
the file and position of every quarantined row. Formats: a ``datasets.Dataset``
(hub sources and ``save_to_disk`` directories), parquet and Arrow files read
batch by batch, JSON lines read line by line (unreadable lines become
quarantined rows, not errors), and the synthetic generator. Tables in the
ShareGPT layout (MMR1-SFT) are turned into record fields first
(``mmr1.data.sharegpt``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mmr1.data.batches import DEFAULT_BATCH_ROWS
from mmr1.data.coerce import (
    CHUNK_SCHEMA,
    PASSTHROUGH,
    RowError,
    SourceError,
    coerce_chunk,
    py_id,
    py_text,
    python_row,
)
from mmr1.data.io import parquet_files
from mmr1.data.sharegpt import conversation_fields
from mmr1.data.synthetic import iter_records
from schemas.curation import HubSource, LocalSource, SyntheticSource

#: Record fields a source column can be mapped to, besides ``difficulty`` (never mapped).
_FIELDS = ("id", "problem", "answer", "images", "choices", "type", "conversations")
#: Columns a ShareGPT row adds to the raw schema (``mmr1.data.sharegpt``).
SHAREGPT_COLUMNS = ("response", "problem_is_prompt")
_REQUIRED = ("problem", "answer")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
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
class Chunks:
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


def dataset_chunks(
    dataset: Any, source: HubSource | LocalSource, chunks: Chunks, image_root: Path | None
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


def local_chunks(source: LocalSource, chunks: Chunks) -> Iterator[pl.DataFrame]:
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
        yield from dataset_chunks(dataset, source, chunks, _image_root(source) or path)
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
    file: Path, fmt: str, source: LocalSource, columns: dict[str, str], chunks: Chunks
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


def _jsonl_chunks(source: LocalSource, path: Path, chunks: Chunks) -> Iterator[pl.DataFrame]:
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


def synthetic_chunks(source: SyntheticSource, chunks: Chunks) -> Iterator[pl.DataFrame]:
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
    chunks: Chunks,
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
