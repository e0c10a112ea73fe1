"""Rows of an SFT dataset on disk, read one at a time: nothing is loaded up front.

An SFT dataset is one or more parquet files (``mmr1.data.io``: a directory
holding ``data.parquet``, or any ``*.parquet`` under a directory, in sorted
order). Opening it reads only the footers: the row count of every row group,
so global row ``r`` maps to ``(file, row group, offset)`` by a binary search
over the groups' first rows. Reading row ``r`` decodes its row group (the
smallest unit parquet can read: ``mmr1.data.io`` writes 256 rows a group) and
keeps that one group for the next read, which makes reads in row order
sequential; memory stays at one decoded group, whatever the dataset's size.

Records are built with the same rules as :func:`mmr1.data.io.iter_sft_dataset`
(a missing ``id`` is ``<file stem>-<row in file>``), so a row read here equals
the record the eager reader yields at that position.

Each process (and each DataLoader worker) opens its own file handles on first
use: the object pickles without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmr1.data.io import SFT_SCHEMA, _prepare, _validated, parquet_files
from schemas.records import ChatTurn, SFTRecord

_REQUIRED = ("conversations", "answer")


class SFTRows:
    """Random access to the SFT records under ``path`` (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.files = parquet_files(self.path)
        self._columns: list[list[str]] = []
        starts: list[int] = []  # global index of each group's first row
        groups: list[tuple[int, int, int]] = []  # (file index, group in file, first row in file)
        total = 0
        for file_index, file in enumerate(self.files):
            try:
                metadata = pq.ParquetFile(file)
            except (pa.ArrowException, OSError) as exc:
                raise ValueError(f"{file}: not a readable parquet file: {exc}") from None
            names = metadata.schema_arrow.names
            missing = [name for name in _REQUIRED if name not in names]
            if missing:
                raise ValueError(f"{file}: missing required column(s) {missing}")
            self._columns.append([name for name in SFT_SCHEMA.names if name in names])
            in_file = 0
            for group in range(metadata.num_row_groups):
                rows = metadata.metadata.row_group(group).num_rows
                if rows == 0:
                    continue
                starts.append(total)
                groups.append((file_index, group, in_file))
                total += rows
                in_file += rows
        self.num_rows = total
        self._starts = np.asarray(starts, dtype=np.int64)
        self._groups = groups
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._handles: dict[int, pq.ParquetFile] = {}
        self._cached: tuple[int, pa.Table] | None = None  # (group number, decoded table)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_handles={}, _cached=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    def __len__(self) -> int:
        return self.num_rows

    def _group_of(self, row: int) -> int:
        if not 0 <= row < self.num_rows:
            raise IndexError(f"{self.path}: row {row} out of range (0..{self.num_rows - 1})")
        return int(np.searchsorted(self._starts, row, side="right")) - 1

    def _table(self, number: int) -> pa.Table:
        if self._pid != os.getpid():  # a forked DataLoader worker: never share file handles
            self._reset_handles()
        if self._cached is not None and self._cached[0] == number:
            return self._cached[1]
        file_index, group, _ = self._groups[number]
        handle = self._handles.get(file_index)
        if handle is None:
            handle = self._handles[file_index] = pq.ParquetFile(self.files[file_index])
        table = handle.read_row_group(group, columns=self._columns[file_index])
        self._cached = (number, table)
        return table

    def record(self, row: int) -> SFTRecord:
        """The record at global row ``row``; errors name the file and its row."""
        number = self._group_of(row)
        offset = row - int(self._starts[number])
        values = self._table(number).slice(offset, 1).to_pylist()[0]
        file_index, _, first_in_file = self._groups[number]
        file, file_row = self.files[file_index], first_in_file + offset
        data = _prepare(values, file, file_row)
        data["conversations"] = [
            _validated(ChatTurn, turn, file, file_row) for turn in values["conversations"] or []
        ]
        return _validated(SFTRecord, data, file, file_row)

    def records(self, rows: Iterable[int]) -> Iterator[SFTRecord]:
        """Records of ``rows``, in that order (rows in ascending order read each group once)."""
        for row in rows:
            yield self.record(int(row))

    def image_counts(self) -> np.ndarray:
        """Images of every row, shape ``(num_rows,)`` int32, one row group at a time.

        Reads one leaf of the ``images`` column (the image paths, not the bytes):
        the list lengths are all that is needed.
        """
        counts = np.zeros(self.num_rows, dtype=np.int32)
        handles: dict[int, tuple[pq.ParquetFile, str]] = {}
        for number, (file_index, group, _) in enumerate(self._groups):
            if "images" not in self._columns[file_index]:
                continue
            if file_index not in handles:
                handle = pq.ParquetFile(self.files[file_index])
                images_type = handle.schema_arrow.field("images").type
                column = "images"
                if pa.types.is_list(images_type) and pa.types.is_struct(images_type.value_type):
                    column = f"images.list.element.{images_type.value_type.field(0).name}"
                handles[file_index] = (handle, column)
            handle, column = handles[file_index]
            values = handle.read_row_group(group, columns=[column]).column(0)
            if pa.types.is_list(values.type):
                lengths = pc.fill_null(pc.list_value_length(values), 0)
            else:  # a single image (or path) per row, as the reader also accepts
                lengths = pc.cast(pc.is_valid(values), pa.int32())
            start = int(self._starts[number])
            counts[start : start + len(values)] = lengths.to_numpy(zero_copy_only=False)
        return counts
