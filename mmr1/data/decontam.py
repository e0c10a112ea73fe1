"""Benchmark decontamination: quarantine training rows that overlap an evaluation benchmark.

METHOD.md section 2: we train on nothing an evaluation benchmark asks. Build a
:class:`BenchmarkIndex` once from the benchmark frames (validated: the flow runs
validation on benchmarks first, so ``problem_norm``, ``image_sha256`` and
``image_phash`` are computed exactly as for training rows), then
:func:`decontaminate` quarantines a training row, with the first rule that fires:

- ``contaminated_text``: its ``problem_norm`` equals a benchmark question's
  (any length: the only text rule for questions shorter than ``ngram`` words),
  or it shares at least ``min_overlap`` distinct word ``ngram``-grams with one
  benchmark question. A short benchmark question inside a longer training
  question is not caught (it has no ``ngram``-gram and is not equal).
- ``contaminated_image``: one of its images has the SHA-256 of a benchmark
  image (same normalised pixels), or a perceptual hash within
  ``image_hamming`` bits of one (0: identical hashes). The question does not
  matter: a benchmark picture seen in training is a leak whatever was asked.

``detail`` names the matched benchmark ``row_id``. All matching is columnar:
n-grams are uint64 hashes (:mod:`mmr1.data.sketches`) joined with polars,
images are joined on digests, and perceptual hashes within ``h > 0`` bits are
found through ``h + 1`` bit ranges (pigeonhole: a close pair agrees on one) and
then checked exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from mmr1.data.dedup import require_columns
from mmr1.data.frame import QUARANTINE_SCHEMA, StepResult, empty_quarantine
from mmr1.data.sketches import bit_bands, hamming64, iter_text_ngrams
from schemas.curation import DecontaminationConfig

BENCHMARK_COLUMNS = ("row_id", "problem_norm", "image_sha256", "image_phash")
REQUIRED_COLUMNS = ("source", "source_row_id", *BENCHMARK_COLUMNS)
REASONS = ("contaminated_text", "contaminated_image")
_SAME_QUESTION, _NGRAMS, _SAME_IMAGE, _NEAR_IMAGE = 1, 2, 3, 4


@dataclass(frozen=True)
class BenchmarkIndex:
    """What training rows are checked against; tables refer to benchmark rows by position.

    ``row_ids[i]`` is the ``row_id`` of benchmark row ``i`` (frames concatenated
    in the order given). Each table maps a key to the first benchmark row having it.
    """

    row_ids: pl.Series
    ngrams: pl.DataFrame  # gram: u64, bench: u32 (one row per distinct pair)
    questions: pl.DataFrame  # problem_norm: str, bench: u32
    image_sha: pl.DataFrame  # sha: str, bench: u32
    image_phash: pl.DataFrame  # phash: u64, bench: u32
    ngram: int
    image_hamming: int

    @classmethod
    def build(cls, frames: Sequence[pl.DataFrame], config: DecontaminationConfig) -> BenchmarkIndex:
        """Index validated benchmark frames (columns :data:`BENCHMARK_COLUMNS`)."""
        parts = []
        for number, frame in enumerate(frames):
            require_columns(frame, BENCHMARK_COLUMNS, f"benchmark frame {number}")
            parts.append(
                frame.select(
                    pl.col("row_id").cast(pl.String),
                    pl.col("problem_norm").cast(pl.String).fill_null(""),
                    pl.col("image_sha256").cast(pl.List(pl.String)),
                    pl.col("image_phash").cast(pl.List(pl.UInt64)),
                )
            )
        bench = (
            pl.concat(parts)
            if parts
            else pl.DataFrame(
                schema={
                    "row_id": pl.String,
                    "problem_norm": pl.String,
                    "image_sha256": pl.List(pl.String),
                    "image_phash": pl.List(pl.UInt64),
                }
            )
        ).with_row_index("bench")
        grams = [
            pl.DataFrame(
                {
                    "gram": values,
                    "bench": np.repeat(
                        np.arange(start, start + len(offsets) - 1), np.diff(offsets)
                    ),
                },
                schema={"gram": pl.UInt64, "bench": pl.UInt32},
            )
            for start, values, offsets in iter_text_ngrams(
                bench["problem_norm"], config.ngram, short="drop"
            )
        ]
        ngrams = (
            pl.concat(grams).unique(maintain_order=True)
            if grams
            else pl.DataFrame(schema={"gram": pl.UInt64, "bench": pl.UInt32})
        )

        def first_bench(frame: pl.DataFrame, key: str) -> pl.DataFrame:
            return frame.drop_nulls(key).group_by(key).agg(pl.col("bench").min()).sort("bench", key)

        return cls(
            row_ids=bench["row_id"],
            ngrams=ngrams,
            questions=first_bench(
                bench.filter(pl.col("problem_norm") != "").select("problem_norm", "bench"),
                "problem_norm",
            ),
            image_sha=first_bench(bench.select("bench", sha="image_sha256").explode("sha"), "sha"),
            image_phash=first_bench(
                bench.select("bench", phash="image_phash").explode("phash"), "phash"
            ),
            ngram=config.ngram,
            image_hamming=config.image_hamming,
        )

    def __len__(self) -> int:
        return len(self.row_ids)


def _text_matches(
    frame: pl.DataFrame, index: BenchmarkIndex, config: DecontaminationConfig
) -> pl.DataFrame:
    """Per contaminated row: pos, bench, rule (same question / n-grams), shared n-grams."""
    same = (
        frame.select(pl.col("problem_norm").cast(pl.String))
        .with_row_index("pos")
        .join(index.questions, on="problem_norm", how="inner")
        .select("pos", "bench", rule=pl.lit(_SAME_QUESTION, pl.Int8), shared=pl.lit(0, pl.UInt32))
    )
    found = [same]
    if index.ngrams.height:
        for start, values, offsets in iter_text_ngrams(
            frame["problem_norm"], config.ngram, short="drop"
        ):
            pos = np.repeat(np.arange(start, start + len(offsets) - 1), np.diff(offsets))
            grams = pl.DataFrame(
                {"pos": pos, "gram": values}, schema={"pos": pl.UInt32, "gram": pl.UInt64}
            )
            hits = grams.join(index.ngrams, on="gram", how="inner")
            if hits.height:
                found.append(
                    hits.unique()
                    .group_by("pos", "bench")
                    .agg(shared=pl.len().cast(pl.UInt32))
                    .filter(pl.col("shared") >= config.min_overlap)
                    .select("pos", "bench", rule=pl.lit(_NGRAMS, pl.Int8), shared="shared")
                )
    # Best evidence per row: the same question, else the benchmark row sharing most n-grams.
    return (
        pl.concat(found)
        .sort("pos", "rule", "shared", "bench", descending=[False, False, True, False])
        .unique("pos", keep="first", maintain_order=True)
    )


def _image_matches(frame: pl.DataFrame, index: BenchmarkIndex) -> pl.DataFrame:
    """Per contaminated row: pos, bench, rule (same / near image), Hamming distance."""
    images = frame.select(
        pl.col("image_sha256").cast(pl.List(pl.String)).alias("sha"),
        pl.col("image_phash").cast(pl.List(pl.UInt64)).alias("phash"),
    ).with_row_index("pos")
    found = [
        images.select("pos", "sha")
        .explode("sha")
        .join(index.image_sha, on="sha", how="inner")
        .select("pos", "bench", rule=pl.lit(_SAME_IMAGE, pl.Int8), distance=pl.lit(0, pl.Int64))
    ]
    phashes = images.select("pos", "phash").explode("phash").drop_nulls("phash")
    hamming = index.image_hamming
    if index.image_phash.height and phashes.height:
        if hamming == 0:
            near = phashes.join(index.image_phash, on="phash", how="inner").with_columns(
                distance=pl.lit(0, pl.Int64)
            )
        elif hamming >= 64:  # every hash is within 64 bits of every other
            near = phashes.with_columns(
                bench=pl.lit(index.image_phash["bench"].min(), pl.UInt32),
                distance=pl.lit(0, pl.Int64),
            )
        else:
            near = _near_phash(phashes, index)
        found.append(
            near.select("pos", "bench", rule=pl.lit(_NEAR_IMAGE, pl.Int8), distance="distance")
        )
    return (
        pl.concat(found)
        .sort("pos", "rule", "distance", "bench")
        .unique("pos", keep="first", maintain_order=True)
    )


def _banded(values: np.ndarray, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(band id, band value) of every value and band, flattened value-major."""
    bands = bit_bands(values, n_bands)
    ids = np.tile(np.arange(n_bands, dtype=np.uint8), len(values))
    return ids, bands.ravel()


def _near_phash(phashes: pl.DataFrame, index: BenchmarkIndex) -> pl.DataFrame:
    """Training/benchmark image pairs within ``index.image_hamming`` bits (pigeonhole bands)."""
    n_bands = index.image_hamming + 1
    bench_values = index.image_phash["phash"].to_numpy()
    band, value = _banded(bench_values, n_bands)
    bench = pl.DataFrame(
        {
            "band": band,
            "value": value,
            "bench_phash": np.repeat(bench_values, n_bands),
            "bench": np.repeat(index.image_phash["bench"].to_numpy(), n_bands),
        }
    )
    train_values = phashes["phash"].to_numpy()
    band, value = _banded(train_values, n_bands)
    train = pl.DataFrame(
        {
            "band": band,
            "value": value,
            "phash": np.repeat(train_values, n_bands),
            "pos": np.repeat(phashes["pos"].to_numpy(), n_bands),
        }
    )
    pairs = train.join(bench, on=["band", "value"], how="inner").unique(["pos", "phash", "bench"])
    distance = hamming64(pairs["phash"].to_numpy(), pairs["bench_phash"].to_numpy())
    return (
        pairs.with_columns(distance=pl.Series(distance.astype(np.int64)))
        .filter(pl.col("distance") <= index.image_hamming)
        .select("pos", "bench", "distance")
    )


def decontaminate(
    frame: pl.DataFrame, index: BenchmarkIndex, config: DecontaminationConfig
) -> StepResult:
    """Quarantine rows overlapping a benchmark (see the module doc); others kept in order."""
    if not config.enabled or frame.height == 0:
        return StepResult(frame, empty_quarantine())
    require_columns(frame, REQUIRED_COLUMNS, "decontaminate")
    if (index.ngram, index.image_hamming) != (config.ngram, config.image_hamming):
        raise ValueError(
            f"benchmark index was built with ngram={index.ngram}, "
            f"image_hamming={index.image_hamming} but the config has ngram={config.ngram}, "
            f"image_hamming={config.image_hamming}: rebuild it with this config"
        )
    if len(index) == 0:
        return StepResult(frame, empty_quarantine())
    text = _text_matches(frame, index, config)
    image = _image_matches(frame, index).join(text.select("pos"), on="pos", how="anti")
    matches = pl.concat(
        [
            text.select("pos", "bench", "rule", number=pl.col("shared").cast(pl.Int64)),
            image.select("pos", "bench", "rule", number="distance"),
        ]
    ).sort("pos")
    flagged = np.zeros(frame.height, dtype=bool)
    flagged[matches["pos"].to_numpy()] = True
    if not flagged.any():
        return StepResult(frame, empty_quarantine())
    rows = frame.select(
        pl.col("source").cast(pl.String), pl.col("source_row_id").cast(pl.String)
    ).with_row_index("pos")
    bench_ids = pl.DataFrame({"bench": np.arange(len(index)), "matched": index.row_ids}).cast(
        {"bench": pl.UInt32}
    )
    rule = pl.col("rule")
    quarantined = (
        matches.with_columns(pl.col("pos").cast(pl.UInt32), pl.col("bench").cast(pl.UInt32))
        .join(rows, on="pos", how="left")
        .join(bench_ids, on="bench", how="left")
        .sort("pos")
        .select(
            "source",
            "source_row_id",
            reason=pl.when(rule <= _NGRAMS).then(pl.lit(REASONS[0])).otherwise(pl.lit(REASONS[1])),
            detail=pl.when(rule == _SAME_QUESTION)
            .then(pl.format("same normalised question as benchmark row {}", "matched"))
            .when(rule == _NGRAMS)
            .then(
                pl.format(
                    "shares {} word {}-grams with benchmark row {}",
                    "number",
                    pl.lit(config.ngram),
                    "matched",
                )
            )
            .when(rule == _SAME_IMAGE)
            .then(pl.format("image sha256 identical to an image of benchmark row {}", "matched"))
            .otherwise(
                pl.format(
                    "image phash within {} bits of an image of benchmark row {}",
                    "number",
                    "matched",
                )
            ),
            duplicate_of=pl.lit(None, pl.String),
        )
        .cast(QUARANTINE_SCHEMA)
    )
    return StepResult(kept=frame.filter(pl.Series(~flagged)), quarantined=quarantined)
