"""Exact and near-duplicate removal over validated rows (docs/METHOD.md section 2).

:func:`deduplicate` keeps the first occurrence of each group of duplicates in
frame order (sources in config order, rows in source order) and quarantines the
others with ``duplicate_of`` = the kept row's ``row_id``. ``row_id`` (not
``source_row_id``) because it is unique across sources: a duplicate may be kept
from another source than the quarantined row.

The rules, in order (a row removed by one rule does not take part in the next):

1. ``duplicate_exact``: same ``problem_norm``, same normalised answer
   (stripped and lower-cased) and same *set* of image SHA-256 digests.
2. Near duplicates among the remaining rows. Both near rules require the
   **same normalised answer** (the exact rule's normalisation): near texts
   or images with different answers are different problems ("which bar is
   tallest" vs "which bar is shortest" on one chart; a colour question on a
   recoloured image, whose grayscale perceptual hash is unchanged). Two rows
   are *text-near* when the estimated Jaccard similarity of their
   word-shingle sets (``shingle_words`` words; MinHash with ``num_perm``
   functions) is at least ``text_threshold``; identical texts always are.
   Then, for rows with the same normalised answer:

   - ``duplicate_near_text``: text-near and the same image set (same SHA-256
     digests, or both rows without images). Text alone never suffices for rows
     with images: "count the red shapes" asked about two different pictures
     is two questions.
   - ``duplicate_near_image``: text-near, not the same image set, but the
     same number of images (at least one) and every image, position by
     position, within ``image_hamming`` bits of perceptual hash: the same
     question on a re-encoded or resized picture.

   Near relations are not transitive; rows joined by a chain of them form one
   cluster (union-find) whose first row is kept. ``detail`` names the row
   that matched directly (estimated Jaccard, Hamming distance);
   ``duplicate_of`` names the cluster's kept row.

Candidates come from LSH, never from all pairs: keys combine one MinHash band
(``bands`` bands of ``num_perm / bands`` rows; pairs of Jaccard ``s`` collide in
some band with probability ``1 - (1 - s^r)^bands``) and a digest of the
normalised answer with the image-set digest (text-near rule) or with one of
``image_hamming + 1`` bit ranges of the first image's perceptual hash
(image-near rule; by pigeonhole, hashes within ``image_hamming`` bits agree on
one range). Keying on the answer keeps rows with other answers out of each
other's buckets and windows. Within a bucket, a row is compared
with the ``BUCKET_WINDOW`` rows before it and with the bucket's first row, so
the work stays linear in bucket size; every candidate is verified exactly as
stated above.

Bounded memory (:func:`deduplicate_batches`): a first pass over the rows, batch
by batch, keeps only a :class:`DedupSketch` of each row (a 128-bit hash of its
exact key, its MinHash signature, answer and image-set digests, perceptual
hashes: about ``16 + 4 * num_perm + 40`` bytes) and its ``row_id``; the
verdicts are computed on those arrays, and a second pass splits each batch into
kept and quarantined rows. Exact keys compare by their 128-bit hash (two
independent 64-bit polars hashes): different keys collide with probability
about ``rows^2 / 2^129``. :func:`deduplicate` is the same on one in-memory frame,
so results do not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mmr1.data.frame import QUARANTINE_SCHEMA, StepResult, empty_quarantine, require_columns
from mmr1.data.signature_store import MemorySignatures, SignatureStore, SpilledSignatures
from mmr1.data.sketches import (
    WORD_HASH_SEED,
    bit_bands,
    combine64,
    connected_components,
    hamming64,
    list_values,
    text_minhash,
)
from schemas.curation import DedupConfig

REQUIRED_COLUMNS = (
    "row_id",
    "source",
    "source_row_id",
    "problem_norm",
    "answer",
    "image_sha256",
    "image_phash",
)
#: What the first pass reads of each row.
SKETCH_COLUMNS = ("row_id", "problem_norm", "answer", "image_sha256", "image_phash")
REASONS = ("duplicate_exact", "duplicate_near_text", "duplicate_near_image")
BUCKET_WINDOW = 16  # compare with this many preceding rows of a bucket (and its first row)
_EXACT, _NEAR_TEXT, _NEAR_IMAGE = 1, 2, 3
_VERIFY_CHUNK = 65_536  # candidate pairs verified per chunk (bounds the signature gather)
_TEXT_FAMILY = np.uint64(0x54455854)  # "TEXT": salts keys of the two candidate families
_IMAGE_FAMILY = np.uint64(0x494D4147)  # "IMAG"
_EXACT_SEEDS = (0x65786163, 0x74313238)  # "exac", "t128": two 64-bit halves of the exact key


def _exact_keys(frame: pl.DataFrame) -> np.ndarray:
    """128-bit hash of each row's exact key (problem_norm, answer, image set), ``(rows, 2)``."""
    key = pl.struct(
        pl.col("problem_norm").cast(pl.String).fill_null("").alias("k_problem"),
        _answer_key().alias("k_answer"),
        _image_set_text().alias("k_images"),
    )
    halves = frame.select(
        key.hash(seed=_EXACT_SEEDS[0]).alias("a"), key.hash(seed=_EXACT_SEEDS[1]).alias("b")
    )
    return np.stack([halves[:, 0].to_numpy(), halves[:, 1].to_numpy()], axis=1).astype(np.uint64)


def _first_positions(keys: np.ndarray) -> np.ndarray:
    """Position of the first row with the same key, for every row (``keys``: ``(rows, 2)``).

    A stable sort by key keeps equal keys in row order, so each run of equal keys
    starts with its first row (numpy: about 40 bytes a row, no hash table).
    """
    rows = len(keys)
    order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable
    ranked = keys[order]
    starts = np.ones(rows, dtype=bool)
    starts[1:] = (ranked[1:] != ranked[:-1]).any(axis=1)
    del ranked
    run_start = np.maximum.accumulate(np.where(starts, np.arange(rows), 0))
    first = np.empty(rows, dtype=np.int64)
    first[order] = order[run_start]
    return first


def exact_first_positions(frame: pl.DataFrame) -> np.ndarray:
    """Position of the first row with the same exact key, for every row, ``shape: (rows,)``."""
    return _first_positions(_exact_keys(frame))


def _answer_key() -> pl.Expr:
    """The normalised answer both the exact and the near rules compare: stripped, lower-cased."""
    return pl.col("answer").cast(pl.String).fill_null("").str.strip_chars().str.to_lowercase()


def _image_set_text() -> pl.Expr:
    """The sorted image digests joined into one string ("" for no images)."""
    return (
        pl.col("image_sha256").cast(pl.List(pl.String)).list.sort().list.join("\x1f").fill_null("")
    )


@dataclass
class DedupSketch:
    """What deduplication keeps of each row: flat arrays, no text and no images."""

    exact: np.ndarray  # (rows, 2) uint64: hash of the exact key
    signatures: SignatureStore | None  # MinHash of problem_norm; None when no near rule is on
    answer: np.ndarray  # (rows,) uint64 digest of the normalised answer
    n_images: np.ndarray  # (rows,) int64
    image_set: np.ndarray  # (rows,) uint64 digest of the image set
    phash_ok: np.ndarray  # (rows,) bool: every image has a perceptual hash
    phash: np.ndarray  # uint64, CSR values: row i owns phash[phash_offsets[i]:phash_offsets[i+1]]
    phash_offsets: np.ndarray  # (rows + 1,) int64


class _Sketcher:
    """Fills a :class:`DedupSketch` of ``rows`` rows batch by batch.

    Signatures go to memory, or to files under ``spill`` (see ``mmr1.data.signature_store``).
    """

    def __init__(self, rows: int, config: DedupConfig, spill: Path | None = None) -> None:
        self.rows, self.config, self.filled = rows, config, 0
        self.signatures: SignatureStore | None = None
        if config.near_text or config.near_image:
            shape = (rows, config.num_perm, config.bands)
            self.signatures = (
                MemorySignatures(*shape) if spill is None else SpilledSignatures(spill, *shape)
            )
        self.parts: dict[str, list[np.ndarray]] = {
            name: [] for name in ("exact", "answer", "n_images", "image_set", "phash_ok", "phash")
        }
        self.phash_lengths: list[np.ndarray] = []

    def add(self, frame: pl.DataFrame) -> None:
        n, start = frame.height, self.filled
        if start + n > self.rows:
            raise RuntimeError(f"deduplicate: more than the {self.rows} rows announced")
        config = self.config
        if self.signatures is not None:
            self.signatures.append(
                text_minhash(
                    frame["problem_norm"].cast(pl.String),
                    config.shingle_words,
                    config.num_perm,
                    config.seed,
                )
            )
        info = frame.select(
            # 64-bit digest of the normalised answer: near pairs must agree on it.
            _answer_key().hash(seed=WORD_HASH_SEED).alias("answer"),
            pl.col("image_sha256").list.len().fill_null(0).cast(pl.Int64).alias("n_images"),
            # 64-bit digest of the image set: equal sets compare equal (collisions ~2^-64).
            _image_set_text().hash(seed=WORD_HASH_SEED).alias("image_set"),
            (
                pl.col("image_phash").list.drop_nulls().list.len().fill_null(-1)
                == pl.col("image_sha256").list.len().fill_null(0)
            )
            .fill_null(False)
            .alias("phash_ok"),
            pl.col("image_phash")
            .cast(pl.List(pl.UInt64))
            .list.eval(pl.element().fill_null(0))
            .alias("phash"),
        )
        n_images = info["n_images"].to_numpy()
        phash, offsets = list_values(info["phash"])
        self.parts["exact"].append(_exact_keys(frame))
        self.parts["answer"].append(info["answer"].to_numpy().astype(np.uint64))
        self.parts["n_images"].append(n_images)
        self.parts["image_set"].append(info["image_set"].to_numpy().astype(np.uint64))
        self.parts["phash_ok"].append(info["phash_ok"].to_numpy() & (n_images > 0))
        self.parts["phash"].append(phash.astype(np.uint64))
        self.phash_lengths.append(np.diff(offsets))
        self.filled += n

    def finish(self) -> DedupSketch:
        if self.filled != self.rows:
            raise RuntimeError(f"deduplicate: {self.filled} rows read, {self.rows} announced")
        if self.signatures is not None:
            self.signatures.finish()
        joined = {
            name: np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)
            for name, parts in self.parts.items()
        }
        offsets = np.zeros(self.rows + 1, dtype=np.int64)
        if self.phash_lengths:
            np.cumsum(np.concatenate(self.phash_lengths), out=offsets[1:])
        return DedupSketch(
            exact=joined["exact"].reshape(self.rows, 2),
            signatures=self.signatures,
            answer=joined["answer"].astype(np.uint64),
            n_images=joined["n_images"].astype(np.int64),
            image_set=joined["image_set"].astype(np.uint64),
            phash_ok=joined["phash_ok"].astype(bool),
            phash=joined["phash"].astype(np.uint64),
            phash_offsets=offsets,
        )


class _NearInputs:
    """The sketches of the rows taking part in near-duplicate search (a view by row index).

    Signatures are not copied: :meth:`signatures` and :meth:`band_key` gather them
    from the sketch's store.
    """

    def __init__(self, sketch: DedupSketch, rows: np.ndarray) -> None:
        assert sketch.signatures is not None, "near-duplicate search needs signatures"
        self.rows = len(rows)
        self._store = sketch.signatures
        self._index = rows  # sorted: the survivors of the exact rule
        self.answer = sketch.answer[rows]
        self.n_images = sketch.n_images[rows]
        self.image_set = sketch.image_set[rows]
        self.phash_ok = sketch.phash_ok[rows]
        lengths = np.diff(sketch.phash_offsets)[rows]
        self.phash_offsets = np.zeros(self.rows + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.phash_offsets[1:])
        shift = np.repeat(sketch.phash_offsets[rows] - self.phash_offsets[:-1], lengths)
        self.phash = sketch.phash[np.arange(int(self.phash_offsets[-1])) + shift]

    def signatures(self, positions: np.ndarray) -> np.ndarray:
        """Signatures of the rows at ``positions`` (sorted, distinct)."""
        return self._store.take(self._index[positions])

    def band_key(self, band: int) -> np.ndarray:
        return self._store.band_key(self._index, band)


def _bucket_pairs(keys: np.ndarray, positions: np.ndarray, rows: int) -> np.ndarray:
    """Candidate pairs among rows sharing a key, packed as ``u << 32 | v`` (u < v).

    The low bits of each key are replaced by the row position, so one sort of
    uint64 orders entries by (key, position); keys thereby lose those bits,
    which only adds chance candidates (all pairs are verified). Each row is
    paired with the ``BUCKET_WINDOW`` rows before it in its bucket and with
    the bucket's first row.
    """
    bits = max(1, (rows - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    packed = np.sort((keys & ~low) | positions.astype(np.uint64))
    key = packed & ~low
    same = key[1:] == key[:-1]
    if not same.any():
        return np.empty(0, dtype=np.uint64)
    shared = np.zeros(len(packed), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    key, positions = key[shared], (packed[shared] & low).astype(np.int64)
    index = np.arange(len(key))
    new_bucket = np.ones(len(key), dtype=bool)
    new_bucket[1:] = key[1:] != key[:-1]
    bucket_start = np.maximum.accumulate(np.where(new_bucket, index, 0))
    rank = index - bucket_start
    pairs = [(positions[bucket_start], positions)]
    for back in range(1, BUCKET_WINDOW + 1):
        has = rank >= back
        if not has.any():
            break
        pairs.append((positions[index[has] - back], positions[has]))
    u = np.concatenate([p[0] for p in pairs]).astype(np.uint64)
    v = np.concatenate([p[1] for p in pairs]).astype(np.uint64)
    keep = u != v  # the bucket's first row itself, or one row twice under a chance collision
    u, v = u[keep], v[keep]
    return np.unique((np.minimum(u, v) << np.uint64(32)) | np.maximum(u, v))


def _candidate_pairs(near: _NearInputs, config: DedupConfig) -> np.ndarray:
    """Packed candidate pairs from both key families over every MinHash band."""
    positions = np.arange(near.rows, dtype=np.int64)
    image_rows = positions[near.phash_ok] if config.near_image else positions[:0]
    if len(image_rows):
        first_phash = near.phash[near.phash_offsets[image_rows]]
        if config.image_hamming < 64:
            ranges = bit_bands(first_phash, config.image_hamming + 1)
        else:  # any two hashes are within 64 bits: the image does not narrow candidates
            ranges = np.zeros((len(image_rows), 1), dtype=np.uint64)
        salt = combine64(
            combine64(_IMAGE_FAMILY, near.answer[image_rows]),
            near.n_images[image_rows].astype(np.uint64),
        )
        range_ids = np.arange(ranges.shape[1], dtype=np.uint64)
        image_keys = combine64(combine64(salt[:, None], range_ids[None, :]), ranges)
        image_positions = np.repeat(image_rows, ranges.shape[1])
    set_keys = combine64(combine64(_TEXT_FAMILY, near.answer), near.image_set)
    found = []
    for band in range(config.bands):
        text_key = near.band_key(band)
        keys, owners = [], []
        if config.near_text:
            keys.append(combine64(text_key, set_keys))
            owners.append(positions)
        if len(image_rows):
            keys.append(combine64(text_key[image_rows, None], image_keys).ravel())
            owners.append(image_positions)
        if keys:
            found.append(_bucket_pairs(np.concatenate(keys), np.concatenate(owners), near.rows))
    if not found:
        return np.empty(0, dtype=np.uint64)
    return np.unique(np.concatenate(found))


def _verify(
    near: _NearInputs, u: np.ndarray, v: np.ndarray, config: DedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rule of each candidate pair (0: none) with its estimated Jaccard and max Hamming.

    Keys only make candidates (a bucket can hold chance collisions): the same
    normalised answer is checked here again, like every other condition.
    """
    jaccard = np.empty(len(u), dtype=np.float64)
    rows = np.unique(np.concatenate([u, v]))
    table = near.signatures(rows)  # the candidates' signatures, gathered once
    u_at, v_at = np.searchsorted(rows, u), np.searchsorted(rows, v)
    for s in range(0, len(u), _VERIFY_CHUNK):
        a = table[u_at[s : s + _VERIFY_CHUNK]]
        b = table[v_at[s : s + _VERIFY_CHUNK]]
        jaccard[s : s + _VERIFY_CHUNK] = (a == b).mean(axis=1)
    same_answer = near.answer[u] == near.answer[v]
    text_near = (jaccard >= config.text_threshold) & same_answer  # both near rules need both
    same_images = near.image_set[u] == near.image_set[v]
    distance = np.full(len(u), 255, dtype=np.int64)
    comparable = (
        text_near
        & ~same_images
        & near.phash_ok[u]
        & near.phash_ok[v]
        & (near.n_images[u] == near.n_images[v])
    )
    if comparable.any():
        pairs = np.flatnonzero(comparable)
        counts = near.n_images[u[pairs]]
        first = np.zeros(len(pairs), dtype=np.int64)
        np.cumsum(counts[:-1], out=first[1:])
        slot = np.arange(int(counts.sum())) - np.repeat(first, counts)
        left = near.phash[np.repeat(near.phash_offsets[u[pairs]], counts) + slot]
        right = near.phash[np.repeat(near.phash_offsets[v[pairs]], counts) + slot]
        distance[pairs] = np.maximum.reduceat(hamming64(left, right).astype(np.int64), first)
    rule = np.zeros(len(u), dtype=np.int8)
    if config.near_text:
        rule[text_near & same_images] = _NEAR_TEXT
    if config.near_image:
        rule[comparable & (distance <= config.image_hamming)] = _NEAR_IMAGE
    return rule, jaccard, distance


def _near_duplicates(
    near: _NearInputs, config: DedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicate clusters of the rows of ``near``, as arrays over them.

    Returns ``(kept, matched, rule, jaccard, distance)``: the cluster's first
    row (the row itself for rows that stay), and for duplicates the row of
    their verified pair with the smallest position, that pair's rule,
    estimated Jaccard and largest per-image Hamming distance.
    """
    packed = _candidate_pairs(near, config)
    u = (packed >> np.uint64(32)).astype(np.int64)
    v = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
    rule, jaccard, distance = _verify(near, u, v, config)
    hit = rule > 0
    u, v, rule, jaccard, distance = u[hit], v[hit], rule[hit], jaccard[hit], distance[hit]
    kept = connected_components(near.rows, u, v)
    # The evidence shown for a row: its verified pair with the earliest other row.
    node = np.concatenate([u, v])
    other = np.concatenate([v, u])
    order = np.lexsort((other, node))
    node, other = node[order], other[order]
    first = np.ones(len(node), dtype=bool)
    first[1:] = node[1:] != node[:-1]
    chosen = order[first] % max(len(u), 1)
    matched = np.arange(near.rows)
    rules = np.zeros(near.rows, dtype=np.int8)
    jaccards = np.zeros(near.rows)
    distances = np.zeros(near.rows, dtype=np.int64)
    matched[node[first]] = other[first]
    rules[node[first]] = rule[chosen]
    jaccards[node[first]] = jaccard[chosen]
    distances[node[first]] = distance[chosen]
    return kept, matched, rules, jaccards, distances


def deduplicate(frame: pl.DataFrame, config: DedupConfig) -> StepResult:
    """Quarantine exact and near duplicates; keep the first row of each group.

    Every rule requires the same normalised answer (see the module doc). Needs
    the validated columns (``problem_norm``, ``image_sha256``,
    ``image_phash``) besides ``row_id``/``source``/``source_row_id``/``answer``.
    The kept frame is ``frame`` minus the duplicates, in frame order; each
    quarantined row carries ``reason`` (one of :data:`REASONS`), ``detail``
    and ``duplicate_of`` = the ``row_id`` of the row kept in its place.
    """
    require_columns(frame, REQUIRED_COLUMNS, "deduplicate")

    def read(columns: Sequence[str] | None) -> list[pl.DataFrame]:
        return [frame if columns is None else frame.select(columns)]

    results = list(deduplicate_batches(read, frame.height, config))
    return StepResult(
        kept=pl.concat([r.kept for r in results], how="vertical"),
        quarantined=pl.concat([r.quarantined for r in results], how="vertical"),
    )


def deduplicate_batches(
    read: Callable[[Sequence[str] | None], Iterable[pl.DataFrame]],
    rows: int,
    config: DedupConfig,
    *,
    spill: Path | None = None,
) -> Iterator[StepResult]:
    """:func:`deduplicate` over rows read twice in batches, one result per batch.

    ``read(columns)`` must yield the same ``rows`` rows in the same order each
    time it is called, as frames of any sizes, with only ``columns`` (all columns
    for None). The first pass sketches :data:`SKETCH_COLUMNS`; the second yields
    each batch's kept rows and its duplicates. ``spill``: a directory for the
    MinHash signatures and band keys (``4 * num_perm + 8 * bands`` bytes a row),
    which then stay out of memory; the caller removes it.
    """
    sketcher = _Sketcher(rows, config, spill)
    row_ids = [pl.Series("row_id", [], dtype=pl.String)]
    for frame in read(SKETCH_COLUMNS):
        require_columns(frame, SKETCH_COLUMNS, "deduplicate")
        sketcher.add(frame)
        row_ids.append(frame["row_id"].cast(pl.String))
    verdicts = _decide(sketcher.finish(), config)
    ids = pl.concat(row_ids, rechunk=True)
    del row_ids, sketcher
    start = 0
    for frame in read(None):
        require_columns(frame, REQUIRED_COLUMNS, "deduplicate")
        end = start + frame.height
        if end > rows:
            raise RuntimeError(f"deduplicate: the second pass read more than {rows} rows")
        duplicate = verdicts.rules[start:end] > 0
        yield StepResult(
            kept=frame.filter(pl.Series(~duplicate)),
            quarantined=_quarantine(frame, ids, start, np.flatnonzero(duplicate), verdicts),
        )
        start = end
    if start != rows:
        raise RuntimeError(f"deduplicate: the second pass read {start} rows, the first {rows}")


@dataclass
class _Verdicts:
    """Per row: the row kept in its place, the row it matched, rule, Jaccard, phash distance."""

    kept_as: np.ndarray
    matched: np.ndarray
    rules: np.ndarray
    jaccards: np.ndarray
    distances: np.ndarray


def _decide(sketch: DedupSketch, config: DedupConfig) -> _Verdicts:
    rows = len(sketch.exact)
    positions = np.arange(rows, dtype=np.int64)
    verdicts = _Verdicts(
        kept_as=positions.copy(),
        matched=positions.copy(),
        rules=np.zeros(rows, dtype=np.int8),
        jaccards=np.zeros(rows),
        distances=np.zeros(rows, dtype=np.int64),
    )
    if config.exact and rows:
        verdicts.kept_as = _first_positions(sketch.exact)
        verdicts.rules[verdicts.kept_as != positions] = _EXACT
        verdicts.matched = verdicts.kept_as.copy()
    if config.near_text or config.near_image:
        survivors = positions[verdicts.rules == 0]
        if len(survivors) > 1:
            near = _near_duplicates(_NearInputs(sketch, survivors), config)
            kept, hit, rule, jaccard, distance = near
            is_dup = kept != np.arange(len(survivors))
            dup = survivors[is_dup]
            verdicts.kept_as[dup] = survivors[kept[is_dup]]
            verdicts.matched[dup] = survivors[hit[is_dup]]
            verdicts.rules[dup] = rule[is_dup]
            verdicts.jaccards[dup] = jaccard[is_dup]
            verdicts.distances[dup] = distance[is_dup]
            # An exact duplicate of a row the near rules removed points at that row's keeper.
            verdicts.kept_as = verdicts.kept_as[verdicts.kept_as]
    return verdicts


def _quarantine(
    frame: pl.DataFrame, row_ids: pl.Series, start: int, dup: np.ndarray, verdicts: _Verdicts
) -> pl.DataFrame:
    """Quarantine rows of the batch ``frame`` (rows ``start...`` of the whole input)."""
    if len(dup) == 0:
        return empty_quarantine()
    rows = start + dup
    table = pl.DataFrame(
        {
            "source": frame["source"].cast(pl.String).gather(dup),
            "source_row_id": frame["source_row_id"].cast(pl.String).gather(dup),
            "rule": verdicts.rules[rows],
            "jaccard": verdicts.jaccards[rows],
            "distance": verdicts.distances[rows],
            "matched": row_ids.gather(verdicts.matched[rows]),
            "duplicate_of": row_ids.gather(verdicts.kept_as[rows]),
        }
    )
    jaccard_text = pl.col("jaccard").round(2).cast(pl.String).str.pad_end(4, "0")
    return table.select(
        "source",
        "source_row_id",
        pl.col("rule")
        .replace_strict(
            {_EXACT: REASONS[0], _NEAR_TEXT: REASONS[1], _NEAR_IMAGE: REASONS[2]},
            return_dtype=pl.String,
        )
        .alias("reason"),
        pl.when(pl.col("rule") == _EXACT)
        .then(pl.format("same normalised problem, answer and images as {}", "matched"))
        .when(pl.col("rule") == _NEAR_TEXT)
        .then(pl.format("estimated Jaccard {} with {}", jaccard_text, "matched"))
        .otherwise(
            pl.format(
                "estimated Jaccard {} and image phash distance {} bits with {}",
                jaccard_text,
                "distance",
                "matched",
            )
        )
        .alias("detail"),
        "duplicate_of",
    ).cast(QUARANTINE_SCHEMA)
