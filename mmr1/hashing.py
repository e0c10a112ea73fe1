"""Content hashes: the identity of datasets and checkpoints in the catalog, and of the code."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
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


_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def _source_files(root: Path, package: str, exclude_dirs: tuple[str, ...]) -> list[Path]:
    """Every file of a package that its code can read: ``.py`` files and package data.

    Skips byte-code caches, hidden files and folders (editor swap files, staging
    copies) and folders named in ``exclude_dirs``.
    """
    files = []
    for path in (root / package).rglob("*"):
        parts = path.relative_to(root).parts
        if (
            not path.is_file()
            or path.suffix in _SKIPPED_SUFFIXES
            or any(p.startswith(".") or p == "__pycache__" or p in exclude_dirs for p in parts)
        ):
            continue
        files.append(path)
    return sorted(files)


@functools.cache
def source_version(
    *packages: str, root: Path | None = None, exclude_dirs: tuple[str, ...] = ()
) -> str:
    """Hash of the source of the given top-level packages (found next to ``mmr1``).

    Covers the ``.py`` files and the package data next to them (e.g. the tiny
    model's tokenizer and chat template under ``mmr1/models/assets``): a stage
    run is reused only when the code and assets that would recompute it are
    byte-identical. ``exclude_dirs`` names folders left out (those whose content
    reaches a stage some other way, e.g. presets through its resolved config).
    Cached per process and ``root``.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in sorted(packages):
        for path in _source_files(root, package, exclude_dirs):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def distribution_versions(*names: str) -> tuple[tuple[str, str], ...]:
    """``(name, version)`` of each installed distribution among ``names``, sorted.

    Distributions that are not installed are left out (``vllm`` on a CPU
    machine), so installing one changes the result. Cached per process.
    """
    found = []
    for name in sorted(set(names)):
        try:
            found.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return tuple(found)


def code_version(
    packages: tuple[str, ...],
    distributions: tuple[str, ...] = (),
    *,
    root: Path | None = None,
    exclude_dirs: tuple[str, ...] = (),
) -> str:
    """The pipeline's "code version": its sources and assets plus key library versions.

    16 hex digits of SHA-256 over :func:`source_version` of ``packages`` and the
    installed versions of ``distributions`` (:func:`distribution_versions`), so
    upgrading torch or transformers, or editing a tokenizer asset, invalidates
    reuse like a code change does.
    """
    payload = {
        "sources": source_version(*packages, root=root, exclude_dirs=exclude_dirs),
        "versions": dict(distribution_versions(*distributions)),
    }
    return hash_bytes(json.dumps(payload, sort_keys=True).encode())[:16]
