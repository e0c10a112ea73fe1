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

Batches: :class:`SourceBatches` reads a source ``batch_rows`` rows at a time
(parquet batches, Arrow record batches, ``datasets`` batches, runs of JSON
lines) and yields one ``StepResult`` per batch, so a source's images are never
all in memory; :func:`read_source` collects them. Duplicate ids are found across
batches through a :class:`~mmr1.data.batches.KeySet` of the ids seen, so the
result does not depend on ``batch_rows``. Batches always carry the ShareGPT
columns (null for record-layout rows); :func:`read_source` drops them when the
source had no ShareGPT row or file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from mmr1.data.batches import DEFAULT_BATCH_ROWS, KeySet
from mmr1.data.coerce import (
    CHUNK_SCHEMA,
    IMAGES,
    SourceError,
    inline_image,
)
from mmr1.data.frame import RAW_SCHEMA, StepResult, ensure_raw_schema
from mmr1.data.readers import (
    SHAREGPT_COLUMNS,
    Chunks,
    dataset_chunks,
    local_chunks,
    synthetic_chunks,
)
from schemas.curation import HubSource, LocalSource, SourceConfig, SyntheticSource
from schemas.records import IMAGE_PLACEHOLDER

__all__ = ["INGEST_REASONS", "SourceBatches", "SourceError", "frame_from_dataset", "read_source"]

INGEST_REASONS = (
    "malformed_json",
    "invalid_utf8",
    "invalid_field",
    "duplicate_id",
    "image_missing",
    "cot_no_answer",
)

_IMAGE_READ_THREADS = 8
_NUMBERED_PLACEHOLDER = r"<image\d+>"


# ------------------------------------------------------------------------ entry points


def read_source(source: SourceConfig, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> StepResult:
    """Read one source into ``RAW_SCHEMA`` rows plus the rows that could not be read.

    All of it, in memory: the curation flow iterates :class:`SourceBatches` instead.
    Raises ``SourceError`` for a source that cannot be read at all (see module doc),
    and for one with no rows unless it sets ``allow_empty``.
    """
    return _collect(SourceBatches(source, batch_rows=batch_rows))


def frame_from_dataset(
    dataset: Any, source: HubSource | LocalSource, *, image_root: Path | None = None
) -> StepResult:
    """Convert a ``datasets.Dataset`` through Arrow (no per-row Python for stored images).

    Tests and callers holding a dataset use it; ``save_to_disk`` and hub sources
    take the same path batch by batch. ``Image()`` columns arrive as their Arrow
    storage (``{bytes, path}`` structs), so nothing is decoded.
    """
    return _collect(SourceBatches(source, dataset=dataset, image_root=image_root))


class SourceBatches:
    """One source read ``batch_rows`` rows at a time: iterate for one ``StepResult`` per batch.

    Kept frames have the ``RAW_SCHEMA`` columns then ``SHAREGPT_COLUMNS``; after
    the iteration ``sharegpt`` says whether any file or row had the ShareGPT
    layout. At least one (possibly empty) result is yielded. ``dataset``: read
    this ``datasets.Dataset`` instead of loading the source (``image_root``
    then resolves its relative image paths).
    """

    def __init__(
        self,
        source: SourceConfig,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        dataset: Any = None,
        image_root: Path | None = None,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        self.source = source
        self.batch_rows = batch_rows
        self.sharegpt = False
        self._dataset = dataset
        self._image_root = image_root

    def __iter__(self) -> Iterator[StepResult]:
        chunks = Chunks(batch_rows=self.batch_rows)
        seen = KeySet()  # ids of earlier batches, for duplicate_id
        rows = 0
        for frame in self._chunks(chunks):
            rows += frame.height
            yield _finish(frame, chunks, self.source, seen)
        if rows == 0:
            _refuse_empty(self.source)
            yield _finish(pl.DataFrame(schema=CHUNK_SCHEMA), chunks, self.source, seen)
        self.sharegpt = chunks.sharegpt

    def _chunks(self, chunks: Chunks) -> Iterator[pl.DataFrame]:
        source = self.source
        if self._dataset is not None:
            if isinstance(source, SyntheticSource):
                raise TypeError("a synthetic source is not read from a datasets.Dataset")
            return dataset_chunks(self._dataset, source, chunks, self._image_root)
        if isinstance(source, HubSource):
            import datasets  # heavy import, only for hub sources

            dataset = datasets.load_dataset(
                source.dataset_id, source.subset, split=source.split, revision=source.revision
            )
            return dataset_chunks(dataset, source, chunks, None)
        if isinstance(source, LocalSource):
            return local_chunks(source, chunks)
        if isinstance(source, SyntheticSource):
            return synthetic_chunks(source, chunks)
        raise TypeError(f"unknown source config {type(source).__name__}")


def _refuse_empty(source: SourceConfig) -> None:
    """A source with no rows at all is a wrong path, pattern or split, unless it says so."""
    if source.allow_empty:
        return
    origin = {"hub": "dataset_id", "local": "path"}.get(source.kind)
    where = f" ({getattr(source, origin)})" if origin else ""
    raise SourceError(
        f"source {source.name!r}{where} has no rows; check its path, files or split, or set "
        "allow_empty: true to accept an empty source"
    )


def _collect(batches: SourceBatches) -> StepResult:
    results = list(batches)
    kept = pl.concat([r.kept for r in results], how="vertical")
    quarantined = pl.concat([r.quarantined for r in results], how="vertical")
    if not batches.sharegpt:
        kept = kept.drop(SHAREGPT_COLUMNS)
    return StepResult(kept=kept, quarantined=quarantined)


# -------------------------------------------------------------------------- finishing


def _finish(
    frame: pl.DataFrame,
    chunks: Chunks,
    source: HubSource | LocalSource | SyntheticSource,
    seen: KeySet,
) -> StepResult:
    """Ids, duplicates, placeholders, image files of one chunk; split kept / quarantined.

    ``seen`` holds the ids of earlier chunks of the source (updated here): a row
    repeating one of them, or an earlier row of this chunk, is a duplicate.
    """
    sid = pl.coalesce(pl.col("_id"), pl.col("_index").cast(pl.String))
    frame = frame.with_columns(
        source=pl.lit(source.name, dtype=pl.String),
        source_row_id=sid,
        row_id=pl.lit(f"{source.name}/") + sid,
    )
    # Lines that could not be read have no id of their own: they take part in no duplicate.
    keys = frame.select(
        pl.when(pl.col("_id").is_not_null() | pl.col("_reason").is_null()).then(sid)
    ).to_series()
    repeated = pl.Series(seen.contains(keys)) | ~keys.is_first_distinct()
    duplicate = pl.Series(keys.is_not_null() & repeated)
    seen.add(keys.filter(keys.is_not_null() & ~duplicate))
    # The first row with an id is the one whose source_row_id is that id.
    first = pl.lit(f"{source.name}/") + pl.col("_key")
    frame = frame.with_columns(keys.alias("_key"), duplicate.alias("_dup")).with_columns(
        _reason=pl.when("_dup").then(pl.lit("duplicate_id")).otherwise(pl.col("_reason")),
        _detail=pl.when("_dup")
        .then(pl.format("id {} repeats the id of row {}", pl.col("source_row_id"), first))
        .otherwise(pl.col("_detail")),
        duplicate_of=pl.when("_dup").then(first),
    )
    frame = frame.with_columns(
        images=pl.col("images").fill_null(pl.lit([], dtype=IMAGES)),
        type=pl.col("type").fill_null("unknown"),
    ).with_columns(problem=_placeholders(pl.col("problem"), pl.col("images").list.len()))
    frame = _load_image_files(frame, chunks.roots)
    bad = pl.col("_reason").is_not_null()
    columns = [*RAW_SCHEMA, *SHAREGPT_COLUMNS]
    kept = ensure_raw_schema(frame.filter(~bad).sort("_index").select(columns))
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


def _quarantine(bad: pl.DataFrame, chunks: Chunks) -> pl.DataFrame:
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
            if data is None and name and (inline := inline_image(name)) is not None:
                data, name = inline, None
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
    if inline_image(image["path"]) is not None:
        return None  # base64 / data URL in a string column: decoded below, not a file
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
