"""Benchmark rows from the hub or from local files, with the file and row of each.

``iter_rows(source, split)`` reads, in this order of preference:

- a local file: ``.parquet``/``.pq``, JSON lines (``.jsonl``/``.ndjson``), or
  ``.json`` holding a list of rows, a ``{id: row}`` object (MathVista's
  ``testmini.json``) or JSON lines;
- a local directory: a ``datasets`` ``save_to_disk`` directory (a ``DatasetDict``
  gives ``split``), else its parquet files, else its JSON lines/JSON files.
  Files named after the split (``testmini.parquet``, ``test-00000-of-00001.parquet``,
  or under a ``test/`` folder) are preferred; when none is, all files are read;
- otherwise a hub dataset id: ``datasets.load_dataset(source, subset, split=split)``.

``datasets`` image columns are read undecoded (``{bytes, path}``), so nothing is
decoded until a request is built. Each row carries ``root``, the directory that
relative image paths are resolved against (the file's directory).

A row that cannot be read at all (a JSON line that is not valid JSON or not an
object, a non-object entry of a ``.json`` list) does not stop the source: it is
yielded with empty ``data`` and its ``problem`` set, and the adapter keeps it
as an invalid item (docs/BENCHMARKS.md, "Bad rows"). A file that cannot be
read at all (an unreadable parquet file, a ``.json`` file that is neither JSON
nor JSON lines) is still an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_PARQUET = (".parquet", ".pq")
_JSONL = (".jsonl", ".ndjson")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BenchmarkDataError(ValueError):
    """Benchmark data that cannot be read; the message names the file, row and field."""


@dataclass(frozen=True)
class SourceRow:
    """One row of a benchmark source and where it came from."""

    label: str
    """File path (or hub id) the row was read from."""
    line: int
    """0-based row number within ``label`` (the line number for JSON lines, 1-based)."""
    position: int
    """0-based position of the row in the whole source, across files."""
    data: dict[str, Any]
    root: Path | None
    """Directory relative image paths are resolved against (None: the working directory)."""
    unit: str = "row"
    """What ``line`` counts: ``row`` (0-based) or ``line`` (JSON lines, 1-based)."""
    problem: str | None = None
    """Why the row could not be read at all (``data`` is then empty), else None."""

    @property
    def where(self) -> str:
        """``"<file>: row <n>"`` (or ``line <n>``) for error messages."""
        return f"{self.label}: {self.unit} {self.line}"

    def error(self, field: str, problem: str) -> BenchmarkDataError:
        """A ``BenchmarkDataError`` naming this row's file and row and ``field``."""
        return BenchmarkDataError(f"{self.where}: field '{field}': {problem}")


def iter_rows(
    source: str, split: str, *, subset: str | None = None, limit: int | None = None
) -> Iterator[SourceRow]:
    """The first ``limit`` rows (all when None) of ``split`` of ``source`` (see module doc)."""
    rows = _iter_all(source, split, subset)
    yield from rows if limit is None else islice(rows, limit)


def _iter_all(source: str, split: str, subset: str | None) -> Iterator[SourceRow]:
    path = Path(source).expanduser()
    if path.is_file():
        yield from _iter_files([path], 0)
    elif path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            yield from _iter_disk(path, split)
        else:
            yield from _iter_files(_split_files(path, split), 0)
    elif _HUB_ID.match(source) and not source.startswith("."):
        yield from _iter_hub(source, split, subset)
    else:
        raise BenchmarkDataError(f"{source}: no such file or directory (and not a hub dataset id)")


def _split_files(directory: Path, split: str) -> list[Path]:
    for suffixes in (_PARQUET, _JSONL, (".json",)):
        files = sorted(
            p
            for p in directory.rglob("*")
            if p.is_file()
            and p.suffix.lower() in suffixes
            and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        )
        if files:
            named = [p for p in files if _names_split(p.relative_to(directory), split)]
            return named or files
    raise BenchmarkDataError(f"{directory}: no parquet, jsonl or json files")


def _names_split(relative: Path, split: str) -> bool:
    stem = relative.name.split(".", 1)[0]
    return (
        stem == split or stem.startswith((f"{split}-", f"{split}_")) or split in relative.parts[:-1]
    )


def _iter_files(files: list[Path], position: int) -> Iterator[SourceRow]:
    for file in files:
        suffix = file.suffix.lower()
        unit = "row"
        if suffix in _PARQUET:
            rows = _parquet_rows(file)
        elif suffix in _JSONL:
            rows, unit = _jsonl_rows(file), "line"
        elif suffix == ".json":
            rows = _json_rows(file)
        else:
            raise BenchmarkDataError(
                f"{file}: unknown format {suffix!r} (expected .parquet, .jsonl or .json)"
            )
        for line, data in rows:
            if isinstance(data, str):  # a row that is not readable: ``data`` is the problem
                yield SourceRow(str(file), line, position, {}, file.parent, unit, problem=data)
            else:
                yield SourceRow(str(file), line, position, data, file.parent, unit)
            position += 1


#: What a row reader yields: the row number and the row, or why it is unreadable.
_Rows = Iterator[tuple[int, dict[str, Any] | str]]


def _parquet_rows(file: Path) -> _Rows:
    try:
        parquet = pq.ParquetFile(file, pre_buffer=False)  # read batch by batch, keep none
        line = 0
        for batch in parquet.iter_batches(batch_size=256):
            for values in batch.to_pylist():
                yield line, values
                line += 1
    except (pa.ArrowException, OSError) as exc:
        raise BenchmarkDataError(f"{file}: not a readable parquet file: {exc}") from None


def _jsonl_rows(file: Path) -> _Rows:
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, f"not valid UTF-8 at byte {exc.start + 1} of the line"
                continue
            try:
                data = json.loads(text.rstrip("\r\n"))  # so that positions fall in the line
            except json.JSONDecodeError as exc:
                yield number, f"not valid JSON: {exc.msg} at column {exc.pos + 1}"
                continue
            if not isinstance(data, dict):
                yield number, f"expected a JSON object, got {type(data).__name__}"
                continue
            yield number, data


def _json_rows(file: Path) -> _Rows:
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        yield from _jsonl_rows(file)  # a .json file holding JSON lines (or a bad line)
        return
    if isinstance(data, dict):  # {"1": {...}, "2": {...}}
        data = list(data.values())
    if not isinstance(data, list):
        raise BenchmarkDataError(f"{file}: expected a list of objects or an {{id: object}} map")
    for number, row in enumerate(data):
        yield number, row if isinstance(row, dict) else f"expected an object, got {row!r:.40}"


def _undecoded(dataset: Any) -> Any:
    """``dataset`` with its ``Image()`` columns cast to ``{bytes, path}`` (no decoding)."""
    from datasets import Image

    for name, feature in dataset.features.items():
        if isinstance(feature, Image) and feature.decode:
            dataset = dataset.cast_column(name, Image(decode=False))
    return dataset


def _iter_dataset(dataset: Any, label: str, root: Path | None) -> Iterator[SourceRow]:
    for position, data in enumerate(_undecoded(dataset)):
        yield SourceRow(label, position, position, dict(data), root)


def _iter_disk(path: Path, split: str) -> Iterator[SourceRow]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise BenchmarkDataError(f"{path}: not a datasets save_to_disk directory: {exc}") from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise BenchmarkDataError(f"{path}: no split {split!r} (splits: {sorted(dataset)})")
        dataset = dataset[split]
    yield from _iter_dataset(dataset, str(path), path)


def _iter_hub(source: str, split: str, subset: str | None) -> Iterator[SourceRow]:
    import datasets  # heavy; only for hub sources

    try:
        dataset = datasets.load_dataset(source, subset, split=split)
    except Exception as exc:  # offline, unknown id, unknown split: say which source
        raise BenchmarkDataError(
            f"{source}: not a local path and not loadable from the hub "
            f"(subset={subset!r}, split={split!r}): {exc}"
        ) from exc
    yield from _iter_dataset(dataset, f"{source}[{split}]", None)
