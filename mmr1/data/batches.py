"""Bounded-memory curation: step files read and written batch by batch.

Curation steps hand each other one parquet file per step (``kept.parquet``,
``quarantined.parquet``). At the scale of MMR1-SFT (1.6M rows, with images) no
step holds a whole file: each reads the previous one in batches of a
configured number of rows (:func:`iter_frames`), handles a batch, and appends
what it kept and quarantined to its own files (:class:`StepWriter`, one parquet
row group per batch). What grows with the row count is only what a step must
see across batches, in compact form: hashes and MinHash signatures as numpy
arrays, ids as Arrow strings (:class:`KeySet`), never images or whole texts.

- :func:`iter_frames` / :func:`iter_column`: a parquet file as polars frames of
  at most ``batch_rows`` rows (at least one frame, empty for an empty file, so
  a step always learns the schema).
- :class:`FrameWriter`: frames appended to one parquet file, written to a hidden
  temp file and renamed into place on close (a reader never sees half a file).
- :class:`StepWriter`: the kept + quarantined writers of one step, with counts
  and quarantine reasons.
- :func:`rebatch`: a stream of frames re-cut into frames of exactly ``rows`` rows.
- :class:`KeySet`: an exact set of strings, kept as sorted 64-bit hashes plus
  the strings themselves for verification.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mmr1.data.frame import QUARANTINE_SCHEMA, StepResult

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "FrameWriter",
    "KeySet",
    "StepWriter",
    "iter_column",
    "iter_frames",
    "parquet_rows",
    "rebatch",
]

#: Rows per batch when a caller does not say (``CurateRLConfig.batch_rows`` does).
DEFAULT_BATCH_ROWS = 2048
KEPT_FILE, QUARANTINED_FILE = "kept.parquet", "quarantined.parquet"


# ------------------------------------------------------------------------ reading


def parquet_rows(path: str | Path) -> int:
    """Rows of a parquet file, from its footer (nothing else is read)."""
    return pq.ParquetFile(path).metadata.num_rows


def iter_frames(
    path: str | Path, batch_rows: int, columns: Sequence[str] | None = None
) -> Iterator[pl.DataFrame]:
    """The rows of a parquet file as frames of at most ``batch_rows`` rows, in order.

    Yields at least one frame (an empty one with the file's schema when the file
    has no rows). Memory: one batch, plus the row group it is cut from.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    # pre_buffer=False: with it, pyarrow keeps every pre-buffered column chunk of the file
    # until the reader is closed (RSS grew ~1 GB per 1M rows of 2 KB text while iterating).
    file = pq.ParquetFile(path, pre_buffer=False)
    wanted = list(columns) if columns is not None else None
    empty = True
    for batch in file.iter_batches(batch_size=batch_rows, columns=wanted):
        empty = False
        yield _frame(batch)
    if empty:
        schema = file.schema_arrow
        if wanted is not None:
            schema = pa.schema([schema.field(name) for name in wanted])
        yield _frame(schema.empty_table())


def _frame(data: pa.RecordBatch | pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


def iter_column(path: str | Path, name: str, batch_rows: int) -> Iterator[Any]:
    """One column's values as Python objects, batch by batch (nothing held beyond a batch)."""
    for frame in iter_frames(path, batch_rows, [name]):
        yield from frame.get_column(name).to_list()


def rebatch(frames: Iterable[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Re-cut a stream of frames (one schema) into frames of exactly ``rows`` rows.

    The last frame may be shorter; an input of only empty frames yields one
    empty frame (its schema), an empty input nothing.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    pending: list[pl.DataFrame] = []
    count = 0
    empty: pl.DataFrame | None = None
    produced = False
    for frame in frames:
        if empty is None:
            empty = frame.clear()
        while frame.height:
            take = min(rows - count, frame.height)
            pending.append(frame.slice(0, take))
            frame = frame.slice(take)
            count += take
            if count == rows:
                yield pl.concat(pending, how="vertical") if len(pending) > 1 else pending[0]
                produced = True
                pending, count = [], 0
    if pending:
        yield pl.concat(pending, how="vertical")
    elif not produced and empty is not None:
        yield empty


# ------------------------------------------------------------------------ writing


class FrameWriter:
    """Append polars frames to one parquet file (zstd, one row group per frame).

    The schema is the first frame's (or ``schema`` when given); later frames are
    cast to it, so a column that is all null in one batch still matches. The file
    is written under a hidden temp name and renamed on :meth:`close`;
    :meth:`abort` removes it.
    """

    def __init__(self, path: str | Path, schema: dict[str, pl.DataType] | None = None) -> None:
        self.path = Path(path)
        self.rows = 0
        self._polars_schema = schema
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pl.DataFrame) -> None:
        if self._polars_schema is not None:
            frame = frame.select(list(self._polars_schema)).cast(self._polars_schema)
        table = frame.to_arrow()
        if self._writer is None:
            self._open(table.schema)
        elif table.schema != self._schema:
            table = self._conform(table)
        if table.num_rows:
            assert self._writer is not None
            self._writer.write_table(table)
            self.rows += table.num_rows

    def _open(self, schema: pa.Schema) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._schema = schema
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    def _conform(self, table: pa.Table) -> pa.Table:
        assert self._schema is not None
        if table.schema.names != self._schema.names:
            raise ValueError(
                f"{self.path.name}: a batch has columns {table.schema.names}, the file "
                f"{self._schema.names}"
            )
        try:
            return table.cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"{self.path.name}: a batch's column types do not match the file's: {exc}"
            ) from None

    def close(self) -> Path:
        """Finish the file and move it into place; a writer that saw no frame needs ``schema``."""
        if self._writer is None:
            if self._polars_schema is None:
                raise ValueError(f"{self.path}: no frame was written and no schema was given")
            self._open(pl.DataFrame(schema=self._polars_schema).to_arrow().schema)
        assert self._writer is not None
        self._writer.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)


class StepWriter:
    """``kept.parquet`` and ``quarantined.parquet`` of one step, appended result by result.

    Use as a context manager: on an exception nothing is moved into place.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.kept = FrameWriter(self.directory / KEPT_FILE)
        self.quarantined = FrameWriter(self.directory / QUARANTINED_FILE, schema=QUARANTINE_SCHEMA)
        self.reasons: Counter[str] = Counter()

    def add(self, result: StepResult) -> None:
        self.kept.write(result.kept)
        self.quarantined.write(result.quarantined)
        self.reasons.update(result.reasons())

    @property
    def n_kept(self) -> int:
        return self.kept.rows

    @property
    def n_quarantined(self) -> int:
        return self.quarantined.rows

    def close(self) -> tuple[Path, Path]:
        return self.kept.close(), self.quarantined.close()

    def __enter__(self) -> StepWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.kept.abort()
            self.quarantined.abort()


# ------------------------------------------------------------------------ key sets


class KeySet:
    """An exact set of strings whose memory is about the strings plus 16 bytes each.

    Keys are stored in runs, each a column of strings with their 64-bit hashes
    sorted (and where each hash came from); a lookup binary-searches every run's
    hashes and verifies a hit against the stored string, so a hash collision
    never makes two different keys equal. Runs merge like a binary counter (a
    run absorbs the next when it is not bigger), so there are at most
    ``log2(len)`` runs and adding ``n`` keys costs ``O(n log n)`` in all.
    """

    _SEED = 0x6B657973  # "keys"

    def __init__(self) -> None:
        # (sorted hashes, position of each in keys, keys in insertion order)
        self._runs: list[tuple[np.ndarray, np.ndarray, pl.Series]] = []

    def __len__(self) -> int:
        return sum(len(run[0]) for run in self._runs)

    def _hash(self, keys: pl.Series) -> np.ndarray:
        """64-bit hashes (polars', seeded: stable within a process, which is all a set needs)."""
        return keys.hash(seed=self._SEED).to_numpy()

    def contains(self, keys: pl.Series) -> np.ndarray:
        """Boolean mask over ``keys``: stored already (null keys: False)."""
        keys = keys.cast(pl.String)
        found = np.zeros(len(keys), dtype=bool)
        if not len(keys) or not self._runs:
            return found
        valid = keys.is_not_null().to_numpy()
        hashes = self._hash(keys)
        for sorted_hashes, positions, stored in self._runs:
            low = np.searchsorted(sorted_hashes, hashes, "left")
            high = np.searchsorted(sorted_hashes, hashes, "right")
            for candidate in np.flatnonzero((high > low) & valid & ~found):
                # Rare: a key repeated (what callers look for) or a 64-bit collision.
                key = keys[int(candidate)]
                span = positions[low[candidate] : high[candidate]]
                found[candidate] = any(stored[int(p)] == key for p in span)
        return found

    def add(self, keys: pl.Series) -> None:
        """Store ``keys``: distinct, non-null and not stored yet (the caller checks)."""
        keys = keys.cast(pl.String).rechunk()
        if not len(keys):
            return
        hashes = self._hash(keys)
        order = np.argsort(hashes, kind="stable")
        self._runs.append((hashes[order], order.astype(np.int64), keys))
        while len(self._runs) > 1 and len(self._runs[-1][0]) >= len(self._runs[-2][0]):
            newer = self._runs.pop()
            older = self._runs.pop()
            merged = np.concatenate([older[0], newer[0]])
            positions = np.concatenate([older[1], newer[1] + len(older[2])])
            order = np.argsort(merged, kind="stable")
            stored = pl.concat([older[2], newer[2]], rechunk=True)
            self._runs.append((merged[order], positions[order], stored))
