"""Frames between a verification worker and its parent: 4-byte big-endian length + pickle.

Pickle, because tasks carry arbitrary picklable arguments (pydantic items in
evaluation) and results (``Verdict`` tuples); both ends are this package's own
processes, talking over private pipes.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

READY = "__ready__"
_HEADER = struct.Struct(">I")


def encode(obj: Any) -> bytes:
    """One frame: length header + pickle (highest protocol)."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a pipe write may be partial when a signal interrupts it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class FrameReader:
    """Accumulates bytes read from a pipe and yields the complete frames in them."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return the objects of every frame completed so far, in order."""
        self._buffer += data
        frames: list[Any] = []
        offset = 0
        while len(self._buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer, offset)
            end = offset + _HEADER.size + size
            if len(self._buffer) < end:
                break
            frames.append(pickle.loads(self._buffer[offset + _HEADER.size : end]))
            offset = end
        del self._buffer[:offset]
        return frames
