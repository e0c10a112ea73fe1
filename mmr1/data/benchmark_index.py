"""The benchmark side of decontamination: :class:`BenchmarkIndex`, built once per run.

:func:`mmr1.data.decontam.decontaminate` checks training rows against it; that
module's doc defines the terms used here (benchmark items, specific, templated
and short questions, rare n-grams) and the rules the tables serve.

Building is columnar, in named steps: number the benchmark rows and find their
items (:func:`_benchmark_rows`), hash their word n-grams (:func:`_benchmark_ngrams`),
mark rare n-grams and group the n-grams found in exactly the same rows
(:func:`_ngram_groups`), count each question's items (:func:`_questions`), and
key the rows asking a templated or short question by question and image
(:func:`_templated_tables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from mmr1.data.frame import require_columns
from mmr1.data.sketches import iter_text_ngrams
from schemas.curation import DecontaminationConfig

BENCHMARK_COLUMNS = ("row_id", "problem_norm", "image_sha256", "image_phash")
_BENCH_SCHEMA = {
    "row_id": pl.String,
    "problem_norm": pl.String,
    "image_sha256": pl.List(pl.String),
    "image_phash": pl.List(pl.UInt64),
}
_NGRAM_SCHEMA = {"gram": pl.UInt64, "bench": pl.UInt32}


@dataclass(frozen=True)
class BenchmarkIndex:
    """What training rows are checked against; tables refer to benchmark rows by position.

    ``rows`` has one row per benchmark row ``bench`` (frames concatenated in the
    order given): its ``row_id``, ``items`` (benchmark items asking its
    question; null for an empty question) and ``short``. Tables keyed by text or
    image map a key to the first benchmark row having it where one row is
    enough, and to every row where pairs are counted (``ngrams``, ``image_*``,
    ``group_*``).
    The ``templated_*`` tables hold only templated and short questions.
    """

    rows: pl.DataFrame  # bench: u32, row_id: str, items: u32, short: bool
    questions: pl.DataFrame  # problem_norm: str, bench: u32, specific: bool
    grams: pl.DataFrame  # gram: u64, rare: bool, group: u32 (one row per distinct n-gram)
    ngrams: pl.DataFrame  # gram: u64, bench: u32, rare: bool (every distinct pair)
    templated_no_images: pl.DataFrame  # problem_norm: str, bench: u32 (rows without images)
    templated_sha: pl.DataFrame  # problem_norm: str, sha: str, bench: u32
    templated_phash: pl.DataFrame  # problem_norm: str, phash: u64, bench: u32
    image_sha: pl.DataFrame  # sha: str, bench: u32 (every distinct pair)
    image_phash: pl.DataFrame  # phash: u64, bench: u32 (every distinct pair)
    # N-grams in exactly the same benchmark rows form one group (a template phrase's
    # n-grams usually do); its rows' images: group, sha / phash, bench.
    group_sha: pl.DataFrame  # group: u32, sha: str, bench: u32
    group_phash: pl.DataFrame  # group: u32, phash: u64, bench: u32
    ngram: int
    image_hamming: int
    max_template_count: int

    @classmethod
    def build(cls, frames: Sequence[pl.DataFrame], config: DecontaminationConfig) -> BenchmarkIndex:
        """Index validated benchmark frames (columns :data:`BENCHMARK_COLUMNS`)."""
        bench = _benchmark_rows(frames)
        ngrams, short = _benchmark_ngrams(bench, config.ngram)
        ngrams, grams, group_bench = _ngram_groups(ngrams, bench, config.max_template_count)
        bench = bench.with_columns(short=pl.Series(short, dtype=pl.Boolean))
        questions = _questions(bench, config.max_template_count)
        image_sha = _every_bench(bench.select("bench", sha="image_sha256").explode("sha"), "sha")
        image_phash = _every_bench(
            bench.select("bench", phash="image_phash").explode("phash"), "phash"
        )
        no_images, sha, phash = _templated_tables(bench, questions)
        return cls(
            rows=bench.join(
                questions.select("problem_norm", "items"), on="problem_norm", how="left"
            )
            .sort("bench")
            .select("bench", "row_id", "items", "short"),
            questions=questions.select("problem_norm", "bench", "specific"),
            grams=grams,
            ngrams=ngrams,
            templated_no_images=no_images,
            templated_sha=sha,
            templated_phash=phash,
            image_sha=image_sha,
            image_phash=image_phash,
            group_sha=group_bench.join(image_sha, on="bench", how="inner"),
            group_phash=group_bench.join(image_phash, on="bench", how="inner"),
            ngram=config.ngram,
            image_hamming=config.image_hamming,
            max_template_count=config.max_template_count,
        )

    def __len__(self) -> int:
        return self.rows.height


def _benchmark_rows(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Every benchmark row, numbered ``bench``, with ``item``: the first row of its content."""
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
    bench = (pl.concat(parts) if parts else pl.DataFrame(schema=_BENCH_SCHEMA)).with_row_index(
        "bench"
    )
    # One item per distinct (question, image digests): duplicated rows count once.
    content = pl.concat_str(
        pl.col("problem_norm"),
        pl.col("image_sha256").list.join("\x1f").fill_null(""),
        separator="\x1e",
    )
    return bench.with_columns(item=pl.col("bench").min().over(content))


def _benchmark_ngrams(bench: pl.DataFrame, ngram: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Distinct (gram, bench) pairs of the questions' word n-grams, and which rows are short."""
    short = np.zeros(bench.height, dtype=bool)  # fewer than `ngram` words: no n-gram
    grams = [pl.DataFrame(schema=_NGRAM_SCHEMA)]
    for start, values, offsets in iter_text_ngrams(bench["problem_norm"], ngram, short="drop"):
        counts = np.diff(offsets)
        short[start : start + len(counts)] = counts == 0
        rows = np.repeat(np.arange(start, start + len(counts)), counts)
        grams.append(pl.DataFrame({"gram": values, "bench": rows}, schema=_NGRAM_SCHEMA))
    return pl.concat(grams).unique(maintain_order=True), short


def _ngram_groups(
    ngrams: pl.DataFrame, bench: pl.DataFrame, max_template_count: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``ngrams`` with ``rare``, each distinct gram's rare flag and group, each group's rows.

    A gram is rare when at most ``max_template_count`` items' questions have it;
    grams found in exactly the same benchmark rows form one group (numbered by
    their smallest hash). Returns (gram, bench, rare), (gram, rare, group) and
    (group, bench).
    """
    rare = (
        ngrams.join(bench.select("bench", "item"), on="bench", how="left")
        .group_by("gram")
        .agg(rare=pl.col("item").n_unique() <= max_template_count)
    )
    ngrams = ngrams.join(rare, on="gram", how="left", maintain_order="left")
    groups = (
        ngrams.group_by("gram")
        .agg(benches=pl.col("bench").sort())
        .group_by("benches")
        .agg("gram")
        .sort(pl.col("gram").list.min())
        .with_row_index("group")
    )
    group_bench = groups.select("group", bench="benches").explode("bench")
    grams = rare.join(groups.select("group", "gram").explode("gram"), on="gram", how="left")
    return ngrams, grams.sort("gram"), group_bench


def _questions(bench: pl.DataFrame, max_template_count: int) -> pl.DataFrame:
    """One row per non-empty question: its first ``bench``, ``items``, ``short``, ``specific``."""
    return (
        bench.filter(pl.col("problem_norm") != "")
        .group_by("problem_norm")
        .agg(
            pl.col("bench").min(),
            items=pl.col("item").n_unique().cast(pl.UInt32),
            short=pl.col("short").first(),  # a property of the text
        )
        .with_columns(specific=~pl.col("short") & (pl.col("items") <= max_template_count))
        .sort("bench")
    )


def _templated_tables(
    bench: pl.DataFrame, questions: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The rows asking a templated or short question: first row per question without
    images, per (question, sha) and per (question, phash)."""
    templated = bench.filter(pl.col("problem_norm") != "").join(
        questions.filter(~pl.col("specific")).select("problem_norm"),
        on="problem_norm",
        how="semi",
    )
    no_images = templated.filter(pl.col("image_sha256").list.len().fill_null(0) == 0)
    return (
        _first_bench(no_images, "problem_norm"),
        _first_bench(
            templated.select("bench", "problem_norm", sha="image_sha256").explode("sha"),
            "problem_norm",
            "sha",
        ),
        _first_bench(
            templated.select("bench", "problem_norm", phash="image_phash").explode("phash"),
            "problem_norm",
            "phash",
        ),
    )


def _first_bench(frame: pl.DataFrame, *keys: str) -> pl.DataFrame:
    """``keys`` -> the first benchmark row having them (nulls dropped), sorted by row."""
    return (
        frame.drop_nulls(keys)
        .group_by(keys)
        .agg(pl.col("bench").min())
        .sort("bench", *keys)
        .select(*keys, "bench")
    )


def _every_bench(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """Every distinct (``key``, bench) pair (nulls dropped), sorted by row."""
    return frame.drop_nulls(key).unique().sort("bench", key).select(key, "bench")
