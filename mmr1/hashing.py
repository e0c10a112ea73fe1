"""Content hashes: the identity of datasets and checkpoints in the catalog."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def hash_bytes(data: bytes) -> str:
    """SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: Path) -> str:
    """SHA-256 hex digest of one file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_directory(root: Path, *, exclude: tuple[str, ...] = ()) -> str:
    """SHA-256 over every file under ``root``: relative path and content, in sorted order.

    Two directories with the same files (names and bytes) hash the same, wherever
    they live. ``exclude`` lists file names to skip (e.g. a manifest written after
    hashing).
    """
    root = Path(root)
    if root.is_file():
        return hash_file(root)
    if not root.is_dir():
        raise FileNotFoundError(f"cannot hash {root}: no such file or directory")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in exclude):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(hash_file(path).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@functools.cache
def source_version(*packages: str) -> str:
    """Hash of the ``.py`` files of the given top-level packages (found next to ``mmr1``).

    The pipeline's "code version": a stage run is reused only when the code
    that would recompute it is byte-identical. Cached per process.
    """
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in sorted(packages):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
