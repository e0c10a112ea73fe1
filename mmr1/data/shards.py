"""Resumable sharded processing: a long step survives a crash or a kill.

A step (pass-rate estimation, long-CoT generation) maps a list of items to a
polars frame. :func:`run_sharded` cuts the items into fixed shards by position
(shard ``i`` holds ``items[i * S : (i + 1) * S]``), processes them in order and
writes each finished shard to ``out_dir/shard-00003.parquet`` via a hidden temp
file and an atomic rename, so a shard file either holds a complete result or
does not exist. A rerun skips the shards already on disk.

What makes a skipped shard trustworthy:

- ``manifest.json`` (written before the first shard) records the run's
  identity: the caller's ``fingerprint`` (a hash of the step's parameters and
  its input ids, see :func:`step_fingerprint`), a hash of the item keys, the
  shard size and the item count. A rerun with a different identity is
  refused (:class:`ShardManifestError`) unless ``restart=True`` clears the
  directory: mixing shards of two configurations would be silently wrong.
- Each shard file carries, in its parquet metadata, the keys of the items it
  was computed from. A shard whose keys differ from the expected ones (a file
  copied in by hand, a corrupted file) is recomputed, with a warning.

``process(shard_items, shard_index)`` receives the shard index so it can derive
its random seed from it (:func:`derive_seed`): a shard's result then depends
only on its items and index, never on where an earlier run was interrupted,
and an interrupted-then-resumed run equals an uninterrupted one.

Bounded memory: a step over more rows than fit in memory computes its
:class:`ShardPlan` (the manifest identity: fingerprint, hash of every key,
count) in one pass over the keys, then hands its rows to
:func:`run_shard_group` a few whole shards at a time (:func:`shard_groups`);
the shard files, seeds and manifest are the same as one :func:`run_sharded`
call over all rows would make.

Only one process should work on an ``out_dir`` at a time (there is no lock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel

from mmr1.data.batches import rebatch

logger = logging.getLogger(__name__)

T = TypeVar("T")

MANIFEST = "manifest.json"
SHARD_PATTERN = "shard-{index:05d}.parquet"
#: Parquet schema-metadata key holding the shard's index and item keys.
SHARD_METADATA_KEY = b"mmr1.shard"
MANIFEST_VERSION = 1


class ShardManifestError(ValueError):
    """``out_dir`` holds shards of a different run (other parameters, inputs or shard size)."""


# ----------------------------------------------------------------------- hashing


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def keys_hash(keys: Iterable[str]) -> str:
    """SHA-256 over the keys, in order (a NUL after each, so ``["ab"] != ["a", "b"]``)."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(str(key).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def step_fingerprint(params: Mapping[str, Any], ids: Iterable[str]) -> str:
    """Identity of a step run: its parameters (pydantic models allowed) and its input ids.

    Parameters are serialised as sorted JSON, so dict order does not matter;
    ids are hashed in order, since shards are cut by position.
    """
    return _fingerprint(params, keys_hash(ids))


def _fingerprint(params: Mapping[str, Any], ids_hash: str) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(_jsonable(params), sort_keys=True, default=str).encode())
    digest.update(b"\n")
    digest.update(ids_hash.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardPlan:
    """What identifies a sharded run over all its items, and which shard a group starts at.

    ``keys`` is :func:`keys_hash` of every item key in order (the items' ids, so
    also the ids part of ``fingerprint``); ``first_shard`` is where the group of
    items handed to :func:`run_shard_group` begins.
    """

    fingerprint: str
    keys: str
    item_count: int
    shard_size: int
    first_shard: int = 0

    @classmethod
    def of(cls, params: Mapping[str, Any], ids: Iterable[str], shard_size: int) -> ShardPlan:
        """The plan of a step with ``params`` over ``ids`` (read once, in order, not stored)."""
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        counted = _Counted(ids)
        keys = keys_hash(counted)
        return cls(_fingerprint(params, keys), keys, counted.count, shard_size)

    @property
    def n_shards(self) -> int:
        return -(-self.item_count // self.shard_size)

    def starting_at(self, shard: int) -> ShardPlan:
        return replace(self, first_shard=shard)

    def manifest(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "fingerprint": self.fingerprint,
            "keys": self.keys,
            "shard_size": self.shard_size,
            "item_count": self.item_count,
            "shards": self.n_shards,
        }


class _Counted:
    """An iterable that counts what it yields."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items, self.count = items, 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.count += 1
            yield item


def shard_groups(
    frames: Iterable[pl.DataFrame], plan: ShardPlan, batch_rows: int
) -> Iterator[tuple[pl.DataFrame, ShardPlan]]:
    """Cut a step's rows (in plan order) into groups of whole shards, each with its plan.

    A group holds ``shard_size * max(1, batch_rows // shard_size)`` rows (the last
    fewer); pass each to :func:`run_shard_group` (through the step's function).
    """
    size = plan.shard_size * max(1, batch_rows // plan.shard_size)
    for number, rows in enumerate(rebatch(frames, size)):
        yield rows, plan.starting_at(number * size // plan.shard_size)


def derive_seed(seed: int, *parts: str | int) -> int:
    """A 31-bit seed from a base seed and labels, e.g. ``derive_seed(0, "cot", shard, round)``.

    Hashed, not added: ``seed + shard`` would make shard 1 of seed 0 equal
    shard 0 of seed 1, and vLLM already seeds the ``i``-th of ``n`` samples
    with ``seed + i``.
    """
    text = "/".join(str(p) for p in (seed, *parts))
    digest = hashlib.sha256(f"mmr1-seed/{text}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# ----------------------------------------------------------------------- files


def shard_path(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / SHARD_PATTERN.format(index=index)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_shard(frame: pl.DataFrame, path: Path, index: int, keys: Sequence[str]) -> None:
    """Write ``frame`` to ``path`` atomically, with the shard's keys in its metadata."""
    table = frame.to_arrow()
    metadata = dict(table.schema.metadata or {})
    metadata[SHARD_METADATA_KEY] = json.dumps({"index": index, "keys": list(keys)}).encode()
    table = table.replace_schema_metadata(metadata)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_shard_keys(path: Path) -> list[str] | None:
    """The item keys recorded in a shard file; None when unreadable or not ours."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return list(json.loads(metadata[SHARD_METADATA_KEY])["keys"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _clear(out_dir: Path) -> None:
    """Remove this module's files from ``out_dir`` (nothing else)."""
    for path in out_dir.iterdir():
        name = path.name
        ours = name == MANIFEST or (name.startswith("shard-") and name.endswith(".parquet"))
        temp = name.startswith((".shard-", f".{MANIFEST}")) and name.endswith(".tmp")
        if path.is_file() and (ours or temp):
            path.unlink()


def _check_manifest(out_dir: Path, expected: dict[str, Any], restart: bool) -> None:
    """Create the manifest, or refuse a directory that belongs to another run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    if restart:
        logger.info("restart=True: clearing shards and manifest in %s", out_dir)
        _clear(out_dir)
    if manifest.is_file():
        try:
            found = json.loads(manifest.read_text())
        except ValueError as exc:
            raise ShardManifestError(
                f"{manifest} is not valid JSON ({exc}); delete {out_dir} or pass restart=True"
            ) from None
        differs = [
            k
            for k in ("fingerprint", "keys", "shard_size", "item_count")
            if found.get(k) != expected[k]
        ]
        if differs:
            described = ", ".join(
                f"{k}: {str(found.get(k))[:16]} here vs {str(expected[k])[:16]} now"
                for k in differs
            )
            raise ShardManifestError(
                f"{out_dir} holds shards of a different run ({described}). Its shards cannot be "
                f"reused: use a new output directory, delete {out_dir}, or pass restart=True "
                "to clear it."
            )
        return
    stray = sorted(p.name for p in out_dir.glob("shard-*.parquet"))
    if stray:
        raise ShardManifestError(
            f"{out_dir} holds shard files {stray[:3]} but no {MANIFEST}, so their run is "
            "unknown: use a new output directory, delete them, or pass restart=True."
        )
    _atomic_write_bytes(manifest, (json.dumps(expected, indent=2, sort_keys=True) + "\n").encode())


# ----------------------------------------------------------------------- progress


class _Progress:
    """A tqdm bar on an interactive stderr, log lines always."""

    def __init__(self, total: int, desc: str) -> None:
        self._bar = None
        if total and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm ships with transformers
                pass
            else:
                self._bar = tqdm(total=total, desc=desc, unit="shard")

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ----------------------------------------------------------------------- runner


def run_sharded(
    items: Sequence[T],
    key: Callable[[T], str],
    process: Callable[[Sequence[T], int], pl.DataFrame],
    out_dir: Path,
    shard_size: int,
    fingerprint: str,
    *,
    restart: bool = False,
    desc: str = "shards",
) -> pl.DataFrame:
    """Run ``process`` over fixed shards of ``items``, resuming from the shards on disk.

    Args:
        items: the work, in a fixed order; shard ``i`` is ``items[i*S : (i+1)*S]``.
        key: a unique string per item (e.g. its ``row_id``), recorded per shard.
        process: ``process(shard_items, shard_index) -> frame``; any rows and
            columns, but the same schema for every shard. It must be a function of
            its arguments only (derive seeds from ``shard_index``).
        out_dir: where ``manifest.json`` and ``shard-NNNNN.parquet`` live.
        shard_size: items per shard (recorded in the manifest).
        fingerprint: the run's identity (:func:`step_fingerprint`); a directory
            made by another fingerprint is refused.
        restart: clear this module's files in ``out_dir`` first.
        desc: label for progress logs.

    Returns:
        The shard frames concatenated in shard (hence item) order. With no
        items, ``process([], 0)`` is called once (not written) for the schema.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    keys = [str(key(item)) for item in items]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        duplicate = next(k for k in keys if k in seen or seen.add(k))
        raise ValueError(f"{desc}: item keys must be unique; {duplicate!r} repeats")
    plan = ShardPlan(fingerprint, keys_hash(keys), len(keys), shard_size)
    return run_shard_group(items, keys, process, out_dir, plan, restart=restart, desc=desc)


def run_shard_group(
    items: Sequence[T],
    keys: Sequence[str],
    process: Callable[[Sequence[T], int], pl.DataFrame],
    out_dir: Path,
    plan: ShardPlan,
    *,
    restart: bool = False,
    desc: str = "shards",
) -> pl.DataFrame:
    """:func:`run_sharded` over the group of items that starts at shard ``plan.first_shard``.

    ``items`` (with their ``keys``) are whole shards of the plan, the last one
    possibly short only at the end of all items. The manifest is the plan's, so
    every group of one run shares it. Keys must be unique over the whole run
    (only the group's are checked here; the plan's key hash covers all of them).
    Returns the group's shard frames concatenated; with no items at all
    (``plan.item_count == 0``), ``process([], 0)``, not written.
    """
    _check_group(len(items), keys, plan, desc)
    out_dir = Path(out_dir)
    _check_manifest(out_dir, plan.manifest(), restart)
    if not items:
        return process([], plan.first_shard)

    size = plan.shard_size
    group_shards = -(-len(items) // size)
    frames: list[pl.DataFrame] = []
    progress = _Progress(group_shards, desc)
    reused = 0
    try:
        for local in range(group_shards):
            index = plan.first_shard + local
            shard_items = items[local * size : (local + 1) * size]
            shard_keys = list(keys[local * size : (local + 1) * size])
            path = shard_path(out_dir, index)
            frame = _finished_shard(path, shard_keys, desc)
            if frame is not None:
                reused += 1
                logger.debug("%s: shard %d/%d already done", desc, index + 1, plan.n_shards)
            else:
                frame = _computed_shard(
                    process, shard_items, shard_keys, path, index, n_shards=plan.n_shards, desc=desc
                )
            frames.append(frame)
            progress.advance()
    finally:
        progress.close()
    if reused:
        computed = group_shards - reused
        logger.info(
            "%s: reused %d finished shard(s), computed %d, in %s", desc, reused, computed, out_dir
        )
    return pl.concat(frames, how="vertical_relaxed")


def _check_group(n_items: int, keys: Sequence[str], plan: ShardPlan, desc: str) -> None:
    """Refuse a group that is not whole shards of ``plan`` or whose keys are not unique."""
    shard_size = plan.shard_size
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if len(keys) != n_items:
        raise ValueError(f"{desc}: {n_items} items but {len(keys)} keys")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{desc}: item keys must be unique; the group repeats one")
    start_item = plan.first_shard * shard_size
    end_item = start_item + n_items
    if end_item > plan.item_count or (n_items % shard_size and end_item != plan.item_count):
        raise ValueError(
            f"{desc}: items {start_item}..{end_item} are not whole shards of a run of "
            f"{plan.item_count} items in shards of {shard_size}"
        )


def _finished_shard(path: Path, shard_keys: list[str], desc: str) -> pl.DataFrame | None:
    """The shard file at ``path`` if it holds ``shard_keys``; None (warning if foreign) if not."""
    if not path.is_file():
        return None
    found = read_shard_keys(path)
    if found == shard_keys:
        return pl.read_parquet(path)
    logger.warning(
        "%s: %s does not hold the expected items (%s); recomputing it",
        desc,
        path,
        "unreadable or foreign file"
        if found is None
        else f"{len(found)} keys, first {found[:1]}, expected first {shard_keys[:1]}",
    )
    return None


def _computed_shard(
    process: Callable[[Sequence[T], int], pl.DataFrame],
    shard_items: Sequence[T],
    shard_keys: list[str],
    path: Path,
    index: int,
    *,
    n_shards: int,
    desc: str,
) -> pl.DataFrame:
    """``process``'s frame of shard ``index``, written to ``path``, read back and logged."""
    began = time.perf_counter()
    frame = process(shard_items, index)
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(
            f"{desc}: process returned {type(frame).__name__} for shard {index}, "
            "expected a polars DataFrame"
        )
    write_shard(frame, path, index, shard_keys)
    # Read back, so a resumed run and an uninterrupted one build the same dtypes.
    frame = pl.read_parquet(path)
    logger.info(
        "%s: shard %d/%d done (%d items, %.1f s)",
        desc,
        index + 1,
        n_shards,
        len(shard_items),
        time.perf_counter() - began,
    )
    return frame
