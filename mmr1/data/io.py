"""Dataset files on disk: MMR1-style parquet, written deterministically.

One dataset is a directory holding ``data.parquet``. Columns follow the public
MMR1 releases and the Hugging Face ``datasets`` layout:

- RL: ``id``, ``problem``, ``answer``, ``images`` (list of struct{bytes: binary,
  path: string}), ``choices`` (list[string], null when not multiple choice),
  ``type``, ``source``, ``difficulty`` (int64, nullable), then any extra columns.
- SFT: ``id``, ``conversations`` (list of struct{from, value}), ``images``,
  ``answer``, ``type``, ``source``, then any extra columns.

The parquet schema metadata carries a ``huggingface`` entry declaring
``images`` as ``List(Image())``, so ``datasets.load_dataset("parquet", ...)``
decodes them to PIL images; other columns are inferred from the Arrow types.

Same records -> byte-identical file: fixed column order and types, fixed
compression and row-group size, and parquet stores no timestamps. Records are
consumed as a stream and written one row group at a time, so a writer holds
one row group of records (never the whole dataset) and the file is the same as
one written from a single table. A new
directory is written under a hidden sibling name and renamed into place; in an
existing directory the file is written to a hidden temp file and renamed over
``data.parquet`` unless the bytes are already identical (then nothing is
touched), so readers never see a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from mmr1.data.batches import KeySet
from mmr1.hashing import hash_directory, hash_file
from schemas.records import IMAGE_PLACEHOLDER, ChatTurn, ImageData, RLRecord, SFTRecord

DATA_FILE = "data.parquet"
ROW_GROUP_SIZE = 256
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "row_group_size": ROW_GROUP_SIZE,
    "write_statistics": True,
}

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
IMAGES_TYPE = pa.list_(IMAGE_TYPE)
TURN_TYPE = pa.struct([("from", pa.string()), ("value", pa.string())])

RL_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("problem", pa.string()),
        ("answer", pa.string()),
        ("images", IMAGES_TYPE),
        ("choices", pa.list_(pa.string())),
        ("type", pa.string()),
        ("source", pa.string()),
        ("difficulty", pa.int64()),
    ]
)
SFT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("conversations", pa.list_(TURN_TYPE)),
        ("images", IMAGES_TYPE),
        ("answer", pa.string()),
        ("type", pa.string()),
        ("source", pa.string()),
    ]
)
#: Hugging Face ``datasets`` feature of the ``images`` column (datasets >= 4 names).
HF_METADATA = {
    b"huggingface": json.dumps(
        {"info": {"features": {"images": {"feature": {"_type": "Image"}, "_type": "List"}}}},
        sort_keys=True,
    ).encode()
}


class DatasetFiles(BaseModel):
    """What a writer produced: where, how many rows, which content, which columns."""

    path: Path = Field(description="Dataset directory.")
    files: list[str] = Field(description="Data files, relative to ``path``.")
    row_count: int = Field(description="Rows written.")
    content_hash: str = Field(description="hash_directory(path): names and bytes of every file.")
    columns: dict[str, str] = Field(description="Column name -> Arrow type string, in order.")


# -------------------------------------------------------------------------- writing


def _image_rows(images: Sequence[ImageData]) -> list[dict[str, Any]]:
    return [{"bytes": image.bytes, "path": image.path} for image in images]


R = TypeVar("R", RLRecord, SFTRecord)
#: Row groups of records held (and their ids checked) at a time by the writers.
_BLOCK_GROUPS = 16


class _UniqueIds:
    """Checks record ids for repeats across the whole stream (compactly, see ``KeySet``)."""

    def __init__(self, what: str) -> None:
        self.what, self.seen, self.rows = what, KeySet(), 0

    def check(self, ids: Sequence[str]) -> None:
        keys = pl.Series(ids, dtype=pl.String)
        repeated = self.seen.contains(keys) | ~keys.is_first_distinct().to_numpy()
        if repeated.any():
            row = int(np.flatnonzero(repeated)[0])
            raise ValueError(
                f"{self.what}: row {self.rows + row}: field 'id': duplicate id {ids[row]!r}"
            )
        self.seen.add(keys)
        self.rows += len(ids)


def _extra_arrays(
    schema: pa.Schema, extra: Mapping[str, Sequence[Any]] | None
) -> dict[str, pa.Array]:
    """Extra columns as Arrow arrays, typed from all their values at once."""
    arrays = {}
    for name, values in (extra or {}).items():
        if name in schema.names:
            raise ValueError(f"extra column {name!r} clashes with a schema column")
        try:
            arrays[name] = pa.array(list(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"extra column {name!r}: cannot store as Arrow: {exc}") from None
    return arrays


def _table(
    schema: pa.Schema, columns: dict[str, list[Any]], extra: Mapping[str, pa.Array]
) -> pa.Table:
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    fields = list(schema)
    for name, array in extra.items():
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=HF_METADATA))


def _record_tables(
    records: Iterable[R],
    schema: pa.Schema,
    extra: Mapping[str, Sequence[Any]] | None,
    check: Callable[[R, int], None],
    columns: Callable[[list[R]], dict[str, list[Any]]],
    what: str,
) -> Iterator[pa.Table]:
    """One table per row group of ``records`` (at least one, maybe empty), checked as they come.

    Records are taken ``_BLOCK_GROUPS`` row groups at a time (their ids checked
    together); ``check(record, row)`` raises for a bad record; ids must be unique
    over all of them.
    """
    arrays = _extra_arrays(schema, extra)
    ids = _UniqueIds(what)
    stream = iter(records)
    start = 0
    while True:
        block = list(islice(stream, ROW_GROUP_SIZE * _BLOCK_GROUPS))
        for offset, record in enumerate(block):
            check(record, start + offset)
        ids.check([r.id for r in block])
        end = start + len(block)
        for name, array in arrays.items():
            if len(array) < end:
                n_rows = end + sum(1 for _ in stream)
                raise ValueError(f"extra column {name!r} has {len(array)} values for {n_rows} rows")
        for first in range(0, max(len(block), 1) if not start else len(block), ROW_GROUP_SIZE):
            chunk = block[first : first + ROW_GROUP_SIZE]
            sliced = {n: a.slice(start + first, len(chunk)) for n, a in arrays.items()}
            yield _table(schema, columns(chunk), sliced)
        start = end
        if len(block) < ROW_GROUP_SIZE * _BLOCK_GROUPS:
            break
    for name, array in arrays.items():
        if len(array) != start:
            raise ValueError(f"extra column {name!r} has {len(array)} values for {start} rows")


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and hash_file(a) == hash_file(b)


def _write_file(tables: Iterator[pa.Table], path: Path) -> tuple[int, pa.Schema]:
    """Write row-group tables to ``path``: the bytes of ``pq.write_table`` on their concatenation.

    Each table holds at most ``ROW_GROUP_SIZE`` rows and all but the last exactly
    that many, so each is one row group, cut where ``write_table`` would cut.
    """
    first = next(tables)
    options = {k: v for k, v in PARQUET_OPTIONS.items() if k != "row_group_size"}
    rows = 0
    with pq.ParquetWriter(path, first.schema, **options) as writer:
        for table in chain([first], tables):
            writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
            rows += table.num_rows
    return rows, first.schema


def _write_dataset(tables: Iterator[pa.Table], out_dir: Path) -> DatasetFiles:
    """Write ``out_dir/data.parquet`` from row-group tables, atomically (see the module doc)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise NotADirectoryError(f"dataset output {out_dir} exists and is not a directory")
        others = sorted(p.name for p in out_dir.glob("*.parquet") if p.name != DATA_FILE)
        if others:
            raise FileExistsError(
                f"{out_dir} already holds other parquet files {others}; readers would merge them"
            )
        tmp = out_dir / f".{DATA_FILE}.{uuid.uuid4().hex}.tmp"
        try:
            rows, schema = _write_file(tables, tmp)
            _settle(tmp, out_dir / DATA_FILE)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = out_dir.parent / f".{out_dir.name}.staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            rows, schema = _write_file(tables, staging / DATA_FILE)
            try:
                staging.rename(out_dir)
            except OSError:
                if not out_dir.is_dir():
                    raise
                # A concurrent writer created the directory first: settle file by file.
                _settle(staging / DATA_FILE, out_dir / DATA_FILE)
        finally:
            if staging.exists():
                for path in staging.iterdir():
                    path.unlink()
                staging.rmdir()
    return DatasetFiles(
        path=out_dir,
        files=[DATA_FILE],
        row_count=rows,
        content_hash=hash_directory(out_dir),
        columns={f.name: str(f.type) for f in schema},
    )


def _settle(written: Path, target: Path) -> None:
    """Move ``written`` over ``target`` unless ``target`` already holds the same bytes."""
    if target.is_file() and _same_bytes(target, written):
        written.unlink()
    else:
        os.replace(written, target)


def write_rl_dataset(
    records: Iterable[RLRecord],
    out_dir: Path,
    *,
    extra: Mapping[str, Sequence[Any]] | None = None,
) -> DatasetFiles:
    """Write RL records (MMR1-RL schema) to ``out_dir/data.parquet``, as they come.

    ``extra`` adds columns (name -> one value per record, in record order), e.g.
    pass rates or VPS scores. Raises ``ValueError`` naming the row for duplicate
    ids or a placeholder count that differs from the image count.
    """

    def check(record: RLRecord, row: int) -> None:
        n_placeholders = record.problem.count(IMAGE_PLACEHOLDER)
        if n_placeholders != len(record.images):
            raise ValueError(
                f"RL record {record.id!r} (row {row}): field 'problem' has {n_placeholders} "
                f"{IMAGE_PLACEHOLDER} placeholders for {len(record.images)} images"
            )

    def columns(records: list[RLRecord]) -> dict[str, list[Any]]:
        return {
            "id": [r.id for r in records],
            "problem": [r.problem for r in records],
            "answer": [r.answer for r in records],
            "images": [_image_rows(r.images) for r in records],
            "choices": [list(r.choices) if r.choices is not None else None for r in records],
            "type": [r.type for r in records],
            "source": [r.source for r in records],
            "difficulty": [r.difficulty for r in records],
        }

    tables = _record_tables(records, RL_SCHEMA, extra, check, columns, "RL records")
    return _write_dataset(tables, out_dir)


def write_sft_dataset(
    records: Iterable[SFTRecord],
    out_dir: Path,
    *,
    extra: Mapping[str, Sequence[Any]] | None = None,
) -> DatasetFiles:
    """Write SFT records (MMR1-SFT ShareGPT schema) to ``out_dir/data.parquet``, as they come.

    Placeholders are counted over the human turns and must match the images.
    """

    def check(record: SFTRecord, row: int) -> None:
        n_placeholders = sum(
            turn.value.count(IMAGE_PLACEHOLDER)
            for turn in record.conversations
            if turn.from_ == "human"
        )
        if n_placeholders != len(record.images):
            raise ValueError(
                f"SFT record {record.id!r} (row {row}): field 'conversations' has "
                f"{n_placeholders} {IMAGE_PLACEHOLDER} placeholders for {len(record.images)} images"
            )

    def columns(records: list[SFTRecord]) -> dict[str, list[Any]]:
        return {
            "id": [r.id for r in records],
            "conversations": [
                [{"from": t.from_, "value": t.value} for t in r.conversations] for r in records
            ],
            "images": [_image_rows(r.images) for r in records],
            "answer": [r.answer for r in records],
            "type": [r.type for r in records],
            "source": [r.source for r in records],
        }

    tables = _record_tables(records, SFT_SCHEMA, extra, check, columns, "SFT records")
    return _write_dataset(tables, out_dir)


# -------------------------------------------------------------------------- reading


def write_rows(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> DatasetFiles:
    """Write plain rows (dicts of scalars, lists and dicts) to ``out_dir/data.parquet``.

    For small tables a task produces whole, such as an evaluation's result rows;
    column types are inferred by Arrow. Raises ``ValueError`` for no rows.
    """
    if not rows:
        raise ValueError(f"{out_dir}: no rows to write")
    return _write_dataset(iter([pa.Table.from_pylist([dict(row) for row in rows])]), out_dir)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a dataset directory (or parquet file) as dicts, in order."""
    return [row for file in parquet_files(path) for row in pq.read_table(file).to_pylist()]


def parquet_files(path: Path) -> list[Path]:
    """``path`` itself if it is a file, else its ``*.parquet`` files (recursive, sorted).

    Hidden files and directories (temp files of an interrupted write) are skipped.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no dataset at {path}: no such file or directory")
    files = sorted(
        p
        for p in path.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise FileNotFoundError(f"no parquet files under {path}")
    return files


def _iter_rows(
    path: Path, wanted: Sequence[str], required: set[str], batch_size: int
) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    for file in parquet_files(path):
        try:
            parquet = pq.ParquetFile(file, pre_buffer=False)  # see batches.iter_frames
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{file}: not a readable parquet file: {exc}") from None
        names = set(parquet.schema_arrow.names)
        missing = sorted(required - names)
        if missing:
            raise ValueError(f"{file}: missing required column(s) {missing}")
        columns = [name for name in wanted if name in names]
        row = 0
        for batch in parquet.iter_batches(batch_size=batch_size, columns=columns):
            for values in batch.to_pylist():
                yield file, row, values
                row += 1


def _images(value: Any, file: Path, row: int) -> list[ImageData]:
    """MMR1 images: a list of {bytes, path} structs or of paths (a single struct is accepted)."""
    if value is None:
        return []
    if isinstance(value, dict | str):
        value = [value]
    images = []
    for item in value:
        if isinstance(item, str):
            images.append(ImageData(path=item))
        elif isinstance(item, dict):
            images.append(ImageData(bytes=item.get("bytes"), path=item.get("path")))
        else:
            raise ValueError(
                f"{file}: row {row}: field 'images': expected {{bytes, path}} or a path, "
                f"got {type(item).__name__}"
            )
    return images


def _validated(model: type[BaseModel], data: dict[str, Any], file: Path, row: int) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{file}: row {row}: {problems}") from None


def _prepare(values: dict[str, Any], file: Path, row: int) -> dict[str, Any]:
    data = {key: value for key, value in values.items() if value is not None}
    data.setdefault("id", f"{file.stem}-{row}")
    data["images"] = _images(values.get("images"), file, row)
    return data


def iter_rl_dataset(path: Path, *, batch_size: int = 256) -> Iterator[RLRecord]:
    """Lazily read RL records from a parquet file or every parquet file under a directory.

    Only ``problem`` and ``answer`` are required (the public MMR1-RL files have
    no ``id``: it defaults to ``<file stem>-<row>``); extra columns are ignored.
    """
    wanted = list(RL_SCHEMA.names)
    for file, row, values in _iter_rows(path, wanted, {"problem", "answer"}, batch_size):
        yield _validated(RLRecord, _prepare(values, file, row), file, row)


def read_rl_dataset(path: Path) -> list[RLRecord]:
    """All RL records under ``path`` (see ``iter_rl_dataset``)."""
    return list(iter_rl_dataset(path))


def iter_sft_dataset(path: Path, *, batch_size: int = 256) -> Iterator[SFTRecord]:
    """Lazily read SFT records; ``conversations`` and ``answer`` are required."""
    wanted = list(SFT_SCHEMA.names)
    for file, row, values in _iter_rows(path, wanted, {"conversations", "answer"}, batch_size):
        data = _prepare(values, file, row)
        data["conversations"] = [
            _validated(ChatTurn, turn, file, row) for turn in values["conversations"] or []
        ]
        yield _validated(SFTRecord, data, file, row)


def read_sft_dataset(path: Path) -> list[SFTRecord]:
    """All SFT records under ``path`` (see ``iter_sft_dataset``)."""
    return list(iter_sft_dataset(path))


def read_column(path: Path, name: str) -> list[Any]:
    """One column (e.g. an ``extra`` column) as Python values, across all files in order."""
    values: list[Any] = []
    for file in parquet_files(path):
        schema = pq.read_schema(file)
        if name not in schema.names:
            raise ValueError(f"{file}: no column {name!r} (columns: {schema.names})")
        values.extend(pq.read_table(file, columns=[name]).column(name).to_pylist())
    return values


def decode_image(data: ImageData, root: Path | None = None) -> Image.Image:
    """Decode one stored image to an RGB PIL image (from bytes, else from its path).

    A relative ``path`` is resolved against ``root`` when given.
    """
    try:
        if data.bytes is not None:
            with Image.open(io.BytesIO(data.bytes)) as image:
                return image.convert("RGB")
        if data.path:
            path = Path(data.path)
            if root is not None and not path.is_absolute():
                path = Path(root) / path
            with Image.open(path) as image:
                return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image {data.path or '<bytes>'}: {exc}") from None
    raise ValueError("image has neither bytes nor a path")
