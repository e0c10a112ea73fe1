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
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mmr1.data.frame import QUARANTINE_SCHEMA, StepResult, empty_quarantine, require_columns
from mmr1.data.sketches import (
    WORD_HASH_SEED,
    band_keys,
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
REASONS = ("duplicate_exact", "duplicate_near_text", "duplicate_near_image")
BUCKET_WINDOW = 16  # compare with this many preceding rows of a bucket (and its first row)
_EXACT, _NEAR_TEXT, _NEAR_IMAGE = 1, 2, 3
_VERIFY_CHUNK = 65_536  # candidate pairs verified per chunk (bounds the signature gather)
_TEXT_FAMILY = np.uint64(0x54455854)  # "TEXT": salts keys of the two candidate families
_IMAGE_FAMILY = np.uint64(0x494D4147)  # "IMAG"


def exact_first_positions(frame: pl.DataFrame) -> np.ndarray:
    """Position of the first row with the same exact key, for every row, ``shape: (rows,)``."""
    keys = frame.select(
        pl.col("problem_norm").cast(pl.String).fill_null("").alias("k_problem"),
        _answer_key().alias("k_answer"),
        _image_set_text().alias("k_images"),
    )
    first = keys.with_row_index("pos").select(
        pl.col("pos").first().over(["k_problem", "k_answer", "k_images"])
    )
    return first.to_series().to_numpy().astype(np.int64)


def _answer_key() -> pl.Expr:
    """The normalised answer both the exact and the near rules compare: stripped, lower-cased."""
    return pl.col("answer").cast(pl.String).fill_null("").str.strip_chars().str.to_lowercase()


def _image_set_text() -> pl.Expr:
    """The sorted image digests joined into one string ("" for no images)."""
    return (
        pl.col("image_sha256").cast(pl.List(pl.String)).list.sort().list.join("\x1f").fill_null("")
    )


class _NearInputs:
    """Per-row sketches of the rows taking part in near-duplicate search."""

    def __init__(self, frame: pl.DataFrame, config: DedupConfig) -> None:
        self.rows = frame.height
        self.signatures = text_minhash(
            frame["problem_norm"].cast(pl.String),
            config.shingle_words,
            config.num_perm,
            config.seed,
        )
        self.text_keys = band_keys(self.signatures, config.bands)
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
        self.answer = info["answer"].to_numpy().astype(np.uint64)
        self.n_images = info["n_images"].to_numpy()
        self.image_set = info["image_set"].to_numpy().astype(np.uint64)
        self.phash_ok = info["phash_ok"].to_numpy() & (self.n_images > 0)
        self.phash, self.phash_offsets = list_values(info["phash"])
        self.phash = self.phash.astype(np.uint64)


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
    for band in range(near.text_keys.shape[1]):
        text_key = near.text_keys[:, band]
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
    for s in range(0, len(u), _VERIFY_CHUNK):
        a = near.signatures[u[s : s + _VERIFY_CHUNK]]
        b = near.signatures[v[s : s + _VERIFY_CHUNK]]
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
    frame: pl.DataFrame, config: DedupConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicate clusters of ``frame``, as arrays over its rows.

    Returns ``(kept, matched, rule, jaccard, distance)``: the cluster's first
    row (the row itself for rows that stay), and for duplicates the row of
    their verified pair with the smallest position, that pair's rule,
    estimated Jaccard and largest per-image Hamming distance.
    """
    near = _NearInputs(frame, config)
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
    rows = frame.height
    if rows == 0:
        return StepResult(frame, empty_quarantine())
    positions = np.arange(rows, dtype=np.int64)
    kept_as = positions.copy()  # the row kept in each row's place
    matched = positions.copy()
    rules = np.zeros(rows, dtype=np.int8)
    jaccards = np.zeros(rows)
    distances = np.zeros(rows, dtype=np.int64)
    if config.exact:
        kept_as = exact_first_positions(frame)
        rules[kept_as != positions] = _EXACT
        matched = kept_as.copy()
    if config.near_text or config.near_image:
        survivors = positions[rules == 0]
        if len(survivors) > 1:
            columns = frame.select("problem_norm", "answer", "image_sha256", "image_phash")
            near = _near_duplicates(columns[survivors], config)
            kept, hit, rule, jaccard, distance = near
            is_dup = kept != np.arange(len(survivors))
            dup = survivors[is_dup]
            kept_as[dup] = survivors[kept[is_dup]]
            matched[dup] = survivors[hit[is_dup]]
            rules[dup] = rule[is_dup]
            jaccards[dup] = jaccard[is_dup]
            distances[dup] = distance[is_dup]
            # An exact duplicate of a row the near rules removed points at that row's keeper.
            kept_as = kept_as[kept_as]
    quarantined = rules > 0
    return StepResult(
        kept=frame.filter(pl.Series(~quarantined)),
        quarantined=_quarantine(
            frame, np.flatnonzero(quarantined), kept_as, matched, rules, jaccards, distances
        ),
    )


def _quarantine(
    frame: pl.DataFrame,
    dup: np.ndarray,
    kept_as: np.ndarray,
    matched: np.ndarray,
    rules: np.ndarray,
    jaccards: np.ndarray,
    distances: np.ndarray,
) -> pl.DataFrame:
    if len(dup) == 0:
        return empty_quarantine()
    row_ids = frame["row_id"].cast(pl.String)
    table = pl.DataFrame(
        {
            "source": frame["source"].cast(pl.String).gather(dup),
            "source_row_id": frame["source_row_id"].cast(pl.String).gather(dup),
            "rule": rules[dup],
            "jaccard": jaccards[dup],
            "distance": distances[dup],
            "matched": row_ids.gather(matched[dup]),
            "duplicate_of": row_ids.gather(kept_as[dup]),
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
