"""Where deduplication keeps MinHash signatures: in memory, or spilled to disk.

Near-duplicate search needs two things of each row's signature (``num_perm``
uint32 values, 256 bytes at the default 64): the LSH key of every band, all
rows at once but one band at a time, and the full signatures of the rows that
became candidates, to verify them. :class:`MemorySignatures` keeps the matrix;
:class:`SpilledSignatures` writes each batch's signatures and band keys to files
as they are computed (ordinary writes: nothing is mapped into the process), then
reads one band's keys (8 bytes a row) at a time and gathers the candidates'
signatures in one sequential pass, so memory no longer holds 256 bytes a row.
Both give the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from mmr1.data.sketches import band_key, band_keys

__all__ = ["MemorySignatures", "SignatureStore", "SpilledSignatures"]

_READ_ROWS = 65_536  # rows of signatures read at a time when gathering


class SignatureStore(Protocol):
    """Signatures of ``rows`` rows, appended in row order, then queried."""

    def append(self, signatures: np.ndarray) -> None: ...

    def finish(self) -> None: ...

    def band_key(self, rows: np.ndarray, band: int) -> np.ndarray:
        """LSH key of band ``band`` for each of ``rows`` (global row numbers), uint64."""
        ...

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Signatures of ``rows`` (sorted, distinct), ``(len(rows), num_perm)`` uint32."""
        ...


class MemorySignatures:
    """The signature matrix in memory (``rows * num_perm * 4`` bytes)."""

    def __init__(self, rows: int, num_perm: int, bands: int) -> None:
        self.matrix = np.empty((rows, num_perm), dtype=np.uint32)
        self.bands, self.filled = bands, 0

    def append(self, signatures: np.ndarray) -> None:
        self.matrix[self.filled : self.filled + len(signatures)] = signatures
        self.filled += len(signatures)

    def finish(self) -> None:
        if self.filled != len(self.matrix):
            raise RuntimeError(f"signatures: {self.filled} rows of {len(self.matrix)}")

    def band_key(self, rows: np.ndarray, band: int) -> np.ndarray:
        per_band = self.matrix.shape[1] // self.bands
        return band_key(self.matrix[rows, band * per_band : (band + 1) * per_band], band)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.matrix[rows]


class SpilledSignatures:
    """Signatures and band keys in files under ``directory`` (which the caller removes)."""

    def __init__(self, directory: Path, rows: int, num_perm: int, bands: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows, self.num_perm, self.bands, self.filled = rows, num_perm, bands, 0
        self._signatures: BinaryIO | None = (self.directory / "signatures.u32").open("wb")
        self._keys: list[BinaryIO] = [self._band_path(b).open("wb") for b in range(bands)]

    def _band_path(self, band: int) -> Path:
        return self.directory / f"band-{band:03d}.u64"

    def append(self, signatures: np.ndarray) -> None:
        assert self._signatures is not None, "append after finish"
        np.ascontiguousarray(signatures, dtype=np.uint32).tofile(self._signatures)
        keys = band_keys(signatures, self.bands)
        for band, handle in enumerate(self._keys):
            np.ascontiguousarray(keys[:, band]).tofile(handle)
        self.filled += len(signatures)

    def finish(self) -> None:
        for handle in [self._signatures, *self._keys]:
            if handle is not None:
                handle.close()
        self._signatures, self._keys = None, []
        if self.filled != self.rows:
            raise RuntimeError(f"signatures: {self.filled} rows of {self.rows}")

    def band_key(self, rows: np.ndarray, band: int) -> np.ndarray:
        return np.fromfile(self._band_path(band), dtype=np.uint64)[rows]

    def take(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.num_perm), dtype=np.uint32)
        row_bytes = self.num_perm * 4
        with (self.directory / "signatures.u32").open("rb") as handle:
            for start in range(0, self.rows, _READ_ROWS):
                low, high = np.searchsorted(rows, [start, start + _READ_ROWS])
                if low == high:
                    continue
                count = min(_READ_ROWS, self.rows - start)
                handle.seek(start * row_bytes)
                block = np.fromfile(handle, dtype=np.uint32, count=count * self.num_perm)
                out[low:high] = block.reshape(count, self.num_perm)[rows[low:high] - start]
        return out
