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
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mmr1.data.coerce import (
    CHUNK_SCHEMA,
    IMAGES,
    RowError,
    SourceError,
    coerce_chunk,
    py_id,
    python_row,
)
from mmr1.data.frame import RAW_SCHEMA, StepResult, ensure_raw_schema
from mmr1.data.io import parquet_files
from mmr1.data.synthetic import iter_records
from schemas.curation import HubSource, LocalSource, SourceConfig, SyntheticSource
from schemas.records import IMAGE_PLACEHOLDER

__all__ = ["INGEST_REASONS", "SourceError", "frame_from_dataset", "read_source"]

INGEST_REASONS = (
    "malformed_json",
    "invalid_utf8",
    "invalid_field",
    "duplicate_id",
    "image_missing",
)

#: Record fields a source column can be mapped to, besides ``difficulty`` (never mapped).
_FIELDS = ("id", "problem", "answer", "images", "choices", "type")
_REQUIRED = ("problem", "answer")
_IMAGE_READ_THREADS = 8
_PARQUET_BATCH = 4096
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
    """What the readers hand to ``_finish``: coerced chunks and where their rows came from."""

    frames: list[pl.DataFrame] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    roots: list[Path | None] = field(default_factory=list)
    position: str = "row"

    def add_file(self, label: str, root: Path | None) -> int:
        self.files.append(label)
        self.roots.append(root)
        return len(self.files) - 1


# ------------------------------------------------------------------------ entry points


def read_source(source: SourceConfig) -> StepResult:
    """Read one source into ``RAW_SCHEMA`` rows plus the rows that could not be read.

    Raises ``SourceError`` for a source that cannot be read at all (see module doc).
    """
    if isinstance(source, HubSource):
        import datasets  # heavy import, only for hub sources

        dataset = datasets.load_dataset(
            source.dataset_id, source.subset, split=source.split, revision=source.revision
        )
        return frame_from_dataset(dataset, source)
    if isinstance(source, LocalSource):
        return _read_local(source)
    if isinstance(source, SyntheticSource):
        return _read_synthetic(source)
    raise TypeError(f"unknown source config {type(source).__name__}")


def frame_from_dataset(
    dataset: Any, source: HubSource | LocalSource, *, image_root: Path | None = None
) -> StepResult:
    """Convert a ``datasets.Dataset`` through Arrow (no per-row Python for stored images).

    The hub path of ``read_source`` ends here; tests and ``save_to_disk`` sources
    call it on local datasets. ``Image()`` columns arrive as their Arrow storage
    (``{bytes, path}`` structs), so nothing is decoded.
    """
    label = source.dataset_id if isinstance(source, HubSource) else source.path
    if hasattr(dataset, "keys") and not hasattr(dataset, "features"):  # a DatasetDict
        raise SourceError(
            f"{label}: holds several splits {sorted(dataset.keys())}; pick one "
            "(HubSource.split, or save one split to disk)"
        )
    columns = _column_map(source)
    present = set(dataset.column_names)
    _require(columns, present, label)
    if source.limit is not None and source.limit < len(dataset):
        dataset = dataset.select(range(source.limit))
    dataset = dataset.select_columns([c for c in _wanted(columns) if c in present])
    batches = list(dataset.with_format("arrow").iter(batch_size=10_000))
    table = pa.concat_tables(batches) if batches else dataset.data.table.slice(0, 0)
    chunks = _Chunks()
    root = image_root if image_root is not None else _image_root(source)
    file = chunks.add_file(label, root)
    chunks.frames.append(coerce_chunk(pl.from_arrow(table), columns, file, offset=0))
    return _finish(chunks, source)


# ---------------------------------------------------------------------------- readers


def _read_local(source: LocalSource) -> StepResult:
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
        return frame_from_dataset(dataset, source, image_root=_image_root(source) or path)
    if fmt == "jsonl":
        return _finish(_read_jsonl(source, path), source)
    files = _files(path, fmt)
    chunks = _Chunks()
    columns = _column_map(source)
    remaining = source.limit
    index = 0
    for file in files:
        if remaining is not None and remaining <= 0:
            break
        table = _read_table(file, fmt, columns, remaining)
        file_id = chunks.add_file(str(file), _image_root(source) or file.parent)
        chunks.frames.append(coerce_chunk(pl.from_arrow(table), columns, file_id, offset=index))
        index += table.num_rows
        if remaining is not None:
            remaining -= table.num_rows
    return _finish(chunks, source)


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


def _read_table(file: Path, fmt: str, columns: dict[str, str], limit: int | None) -> pa.Table:
    """The wanted columns of one parquet/Arrow file, at most ``limit`` rows."""
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(file)
            names = parquet.schema_arrow.names
            _require(columns, set(names), str(file))
            wanted = [c for c in _wanted(columns) if c in names]
            batches = []
            rows = 0
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH, columns=wanted):
                batches.append(batch)
                rows += batch.num_rows
                if limit is not None and rows >= limit:
                    break
            schema = pa.schema([parquet.schema_arrow.field(name) for name in wanted])
            table = pa.Table.from_batches(batches) if batches else schema.empty_table()
        else:
            table = _read_ipc(file)
            _require(columns, set(table.column_names), str(file))
            table = table.select([c for c in _wanted(columns) if c in table.column_names])
    except SourceError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{file}: not a readable {fmt} file: {exc}") from None
    return table if limit is None else table.slice(0, limit)


def _read_ipc(file: Path) -> pa.Table:
    # Feather v2 / .arrow files use the IPC file format; datasets' cache files the stream one.
    try:
        with pa.memory_map(str(file)) as source:
            return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        with pa.memory_map(str(file)) as source:
            return pa.ipc.open_stream(source).read_all()


def _read_jsonl(source: LocalSource, path: Path) -> _Chunks:
    """JSON lines, line by line: unreadable lines become quarantined rows, not errors."""
    columns = _column_map(source)
    chunks = _Chunks(position="line")
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
                values = _jsonl_row(raw, columns)
                values.update(_index=index, _file=file_id, _pos=line_no)
                for name, column in rows.items():
                    column.append(values.get(name))
                index += 1
        chunks.frames.append(pl.DataFrame(rows, schema=CHUNK_SCHEMA))
    return chunks


def _jsonl_row(raw: bytes, columns: dict[str, str]) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _bad(
            "invalid_utf8",
            f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not valid UTF-8",
        )
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return _bad("malformed_json", f"invalid JSON at column {exc.colno}: {exc.msg}")
    if not isinstance(record, dict):
        return _bad("malformed_json", f"a JSON {type(record).__name__}, not an object")
    # Only lines with \ud800-\udfff escapes can hold lone surrogates after parsing.
    check_surrogates = _SURROGATE_ESCAPE.search(raw) is not None
    try:
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


def _read_synthetic(source: SyntheticSource) -> StepResult:
    chunks = _Chunks()
    file_id = chunks.add_file(f"synthetic(seed={source.synthetic.seed})", None)
    records = islice(iter_records(source.synthetic), source.limit)
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
        for index, record in enumerate(records)
    ]
    chunks.frames.append(pl.DataFrame(rows, schema=CHUNK_SCHEMA))
    return _finish(chunks, source)


# ------------------------------------------------------------------- column mapping


def _column_map(source: HubSource | LocalSource | SyntheticSource) -> dict[str, str]:
    """Record field -> source column; ``difficulty`` is read from its own name only."""
    mapping = {name: source.columns.get(name, name) for name in _FIELDS}
    mapping["difficulty"] = "difficulty"
    return mapping


def _wanted(columns: dict[str, str]) -> list[str]:
    return list(dict.fromkeys(columns.values()))


def _require(columns: dict[str, str], present: Iterable[str], label: str) -> None:
    present = set(present)
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


def _finish(chunks: _Chunks, source: HubSource | LocalSource | SyntheticSource) -> StepResult:
    """Ids, duplicates, placeholders, image files; split kept / quarantined."""
    frame = (
        pl.concat(chunks.frames, how="vertical")
        if chunks.frames
        else pl.DataFrame(schema=CHUNK_SCHEMA)
    )
    sid = pl.coalesce(pl.col("_id"), pl.col("_index").cast(pl.String))
    frame = frame.with_columns(
        source=pl.lit(source.name, dtype=pl.String),
        source_row_id=sid,
        row_id=pl.lit(f"{source.name}/") + sid,
    )
    # Lines that could not be read have no id of their own: they take part in no duplicate.
    key = pl.when(pl.col("_id").is_not_null() | pl.col("_reason").is_null()).then(sid)
    duplicate = key.is_not_null() & ~key.is_first_distinct()
    first = pl.col("row_id").first().over(key)
    frame = frame.with_columns(
        _reason=pl.when(duplicate).then(pl.lit("duplicate_id")).otherwise(pl.col("_reason")),
        _detail=pl.when(duplicate)
        .then(pl.format("id {} repeats the id of row {}", pl.col("source_row_id"), first))
        .otherwise(pl.col("_detail")),
        duplicate_of=pl.when(duplicate).then(first),
    )
    frame = frame.with_columns(
        images=pl.col("images").fill_null(pl.lit([], dtype=IMAGES)),
        type=pl.col("type").fill_null("unknown"),
    ).with_columns(problem=_placeholders(pl.col("problem"), pl.col("images").list.len()))
    frame = _load_image_files(frame, chunks.roots)
    bad = pl.col("_reason").is_not_null()
    kept = ensure_raw_schema(frame.filter(~bad).sort("_index").select(list(RAW_SCHEMA)))
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
