"""Throughput of the columnar curation steps on a synthetic MMR1-sized table.

Generates ``--rows`` rows (default 1.6M, the size of MMR1-SFT) directly as
polars columns, no real images: ~60-word problems drawn from a Zipf-like
vocabulary, 0-2 images per row as random SHA-256 digests and 64-bit perceptual
hashes, 3% of rows asking a new question about a popular shared image, and
injected, known:

* ~5% exact duplicates (problem, answer and images of an earlier row),
* ~3% near-text duplicates (one word changed, same images),
* ~1% near-image duplicates (same problem, image re-encoded: new SHA-256,
  perceptual hash 1-3 bits away),
* ~1% rows contaminated against a ``--benchmark-rows`` table: a 12-word span
  of a benchmark question, a benchmark image, or (a few) a whole short
  benchmark question.

Then times each step and prints rows/s, peak RSS and how many of the injected
rows each step caught (and what else it removed):

1. the text part of validation: ``mmr1.data.validate.validate_frame`` on the
   rows without images (it computes ``problem_norm``) when it imports and runs
   at an acceptable rate on a 20k-row sample, else a labelled columnar stand-in;
2. ``mmr1.data.dedup.deduplicate``;
3. ``mmr1.data.benchmark_index.BenchmarkIndex.build`` + ``mmr1.data.decontam.decontaminate``;
4. the difficulty filter: ``mmr1.data.difficulty.bucket_and_filter`` on
   synthetic pass rates (drop easy, balance types to half the rows), else a
   labelled polars stand-in.

Per-step RSS is sampled in this one process, so memory that earlier steps freed
but the allocators kept hides part of a later step's own need; run a step alone
on a saved frame to measure it in isolation.

Quick mode: ``python bench/bench_curation.py --rows 100000``.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from mmr1.data.benchmark_index import BenchmarkIndex
from mmr1.data.decontam import decontaminate
from mmr1.data.dedup import deduplicate
from schemas.curation import DecontaminationConfig, DedupConfig

TYPES = ("math", "chart", "geometry", "science", "puzzle")
VOCABULARY = 30_000
POOL_IMAGES = 2_000
SPAN_WORDS = 12
VALIDATE_MAX_SECONDS = 150.0  # projected time above which the stand-in validation is used


# ------------------------------------------------------------------------------- data


def _vocabulary(rng: np.random.Generator) -> pa.Array:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    lengths = rng.integers(2, 10, VOCABULARY)
    chars = letters[rng.integers(0, 26, (VOCABULARY, 10))]
    words = {bytes(chars[i, : lengths[i]]).decode() + str(i % 7) for i in range(VOCABULARY)}
    return pa.array(sorted(words))


def _texts(
    rng: np.random.Generator, vocabulary: pa.Array, rows: int, mean: int, spread: int
) -> tuple[np.ndarray, np.ndarray]:
    """(word ids, offsets) of ``rows`` texts of about ``mean`` words."""
    lengths = np.clip(rng.normal(mean, spread, rows), 4, 4 * mean).astype(np.int64)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = (rng.random(int(offsets[-1])) ** 2.5 * len(vocabulary)).astype(np.int64)
    return ids, offsets


def _gather_rows(
    ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Word ids and offsets of the texts ``rows`` (in that order)."""
    lengths = np.diff(offsets)[rows]
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    starts = np.repeat(offsets[:-1][rows] - new_offsets[:-1], lengths)
    return ids[starts + np.arange(int(new_offsets[-1]))], new_offsets


def _join(vocabulary: pa.Array, ids: np.ndarray, offsets: np.ndarray) -> pl.Series:
    words = vocabulary.take(pa.array(ids))
    return pl.Series(pa.LargeListArray.from_arrays(pa.array(offsets), words)).list.join(" ")


def _hex_digests(rng: np.random.Generator, count: int) -> pl.Series:
    raw = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), count, [None, pa.py_buffer(rng.bytes(32 * count))]
    )
    return pl.Series(raw.cast(pa.binary())).bin.encode("hex")


def _flip_bits(rng: np.random.Generator, values: np.ndarray, low: int, high: int) -> np.ndarray:
    flipped = values.copy()
    for count in range(high):
        bit = rng.integers(0, 64, len(values)).astype(np.uint64)
        apply = count < rng.integers(low, high + 1, len(values))
        flipped ^= np.where(apply, np.uint64(1) << bit, np.uint64(0))
    return flipped


def build_tables(rows: int, benchmark_rows: int, seed: int) -> dict[str, Any]:
    """The training table, the benchmark table and the ground truth of what was injected."""
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng)
    ids, offsets = _texts(rng, vocabulary, rows, 60, 15)
    bench_ids, bench_offsets = _texts(rng, vocabulary, benchmark_rows, 40, 12)

    # Roles: originals, then injected rows copying an earlier original.
    role = np.zeros(rows, dtype=np.int8)  # 0 original, 1 exact, 2 near text, 3 near image
    candidates = rng.permutation(np.arange(rows // 20, rows))
    n_exact, n_text, n_image = int(0.05 * rows), int(0.03 * rows), int(0.01 * rows)
    role[candidates[:n_exact]] = 1
    role[candidates[n_exact : n_exact + n_text]] = 2
    role[candidates[n_exact + n_text : n_exact + n_text + n_image]] = 3
    originals = np.flatnonzero(role == 0)
    source = np.arange(rows)
    copies = np.flatnonzero(role > 0)
    # Each copy takes a uniformly drawn original before it.
    before = np.searchsorted(originals, copies)
    source[copies] = originals[(rng.random(len(copies)) * before).astype(np.int64)]

    # Contamination of originals (before copying, so copies of them are contaminated too).
    contaminated = rng.choice(originals, int(0.01 * rows), replace=False)
    kind = rng.integers(0, 10, len(contaminated))  # 0-4 text span, 5-8 image, 9 short question
    span_rows, image_rows, short_rows = (
        contaminated[kind < 5],
        contaminated[(kind >= 5) & (kind < 9)],
        contaminated[kind == 9],
    )
    # Short benchmark questions (below the n-gram length), one per short-question row.
    n_short = max(1, benchmark_rows // 50, len(short_rows))
    short_ids = (rng.random(n_short * 5) ** 2.5 * len(vocabulary)).astype(np.int64)
    bench_pick = rng.integers(0, benchmark_rows, len(span_rows))
    for row, bench in zip(span_rows.tolist(), bench_pick.tolist(), strict=True):
        start = int(bench_offsets[bench])
        span = bench_ids[start : start + SPAN_WORDS]
        ids[offsets[row] : offsets[row] + len(span)] = span

    text_rows = source.copy()
    near_text_rows = np.flatnonzero(role == 2)
    word_ids, word_offsets = _gather_rows(ids, offsets, text_rows)
    lengths = np.diff(word_offsets)[near_text_rows]
    changed = word_offsets[near_text_rows] + (rng.random(len(near_text_rows)) * lengths).astype(
        np.int64
    )
    word_ids[changed] = (word_ids[changed] + 1 + rng.integers(0, 100, len(changed))) % len(
        vocabulary
    )
    problems = _join(vocabulary, word_ids, word_offsets)
    bench_problems = _join(vocabulary, bench_ids, bench_offsets)
    shorts = _join(vocabulary, short_ids, np.arange(0, 5 * n_short + 1, 5))
    problems = problems.scatter(
        short_rows, shorts.gather(rng.permutation(n_short)[: len(short_rows)])
    )
    copied = np.flatnonzero(np.isin(source, short_rows) & (role > 0))  # copies get it too
    problems = problems.scatter(copied, problems.gather(source[copied]))

    # Images: 0-2 per original, a shared pool for some rows, copies inherit.
    n_images = rng.choice([0, 1, 2], rows, p=[0.07, 0.9, 0.03])
    image_offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(n_images, out=image_offsets[1:])
    total = int(image_offsets[-1])
    sha = _hex_digests(rng, total)
    phash = rng.integers(0, 2**64, total, dtype=np.uint64)
    pool_sha, pool_phash = (
        _hex_digests(rng, POOL_IMAGES),
        rng.integers(0, 2**64, POOL_IMAGES, dtype=np.uint64),
    )
    shared = rng.random(total) < 0.03
    pick = rng.integers(0, POOL_IMAGES, int(shared.sum()))
    sha = sha.scatter(np.flatnonzero(shared), pool_sha.gather(pick))
    phash[shared] = pool_phash[pick]
    bench_sha, bench_phash = (
        _hex_digests(rng, benchmark_rows),
        rng.integers(0, 2**64, benchmark_rows, dtype=np.uint64),
    )
    first_image = image_offsets[:-1]
    has_image = n_images > 0
    leak = image_rows[has_image[image_rows]]
    leak_bench = rng.integers(0, benchmark_rows, len(leak))
    sha = sha.scatter(first_image[leak], bench_sha.gather(leak_bench))
    phash[first_image[leak]] = bench_phash[leak_bench]

    # Copies: same images as their source; near-image copies re-encoded.
    image_source = source.copy()
    image_source[(role == 3) & ~has_image[source]] = -1  # near-image copy of an image-less row
    counts = np.where(image_source >= 0, n_images[np.maximum(image_source, 0)], 0)
    new_offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    take = np.repeat(first_image[np.maximum(image_source, 0)] - new_offsets[:-1], counts)
    take += np.arange(int(new_offsets[-1]))
    sha, phash = sha.gather(take), phash[take]
    reencoded = np.repeat(role == 3, counts)
    sha = sha.scatter(np.flatnonzero(reencoded), _hex_digests(rng, int(reencoded.sum())))
    phash[reencoded] = _flip_bits(rng, phash[reencoded], 1, 3)

    answers = pl.Series(rng.integers(0, 1000, rows)).cast(pl.String)
    answers = answers.gather(source)
    types = pl.Series(np.array(TYPES)[rng.integers(0, len(TYPES), rows)]).gather(source)
    images_sha = pl.Series(pa.LargeListArray.from_arrays(pa.array(new_offsets), sha.to_arrow()))
    images_phash = pl.Series(pa.LargeListArray.from_arrays(pa.array(new_offsets), pa.array(phash)))
    placeholders = pl.Series(counts).cast(pl.String)
    frame = pl.DataFrame(
        {
            "source": pl.repeat("syn", rows, eager=True),
            "source_row_id": pl.int_range(rows, eager=True).cast(pl.String),
            "text": problems,
            "n_images": placeholders,
            "answer": answers,
            "type": types,
            "image_sha256": images_sha.cast(pl.List(pl.String)),
            "image_phash": images_phash.cast(pl.List(pl.UInt64)),
            "pass_rate": rng.beta(0.6, 0.6, rows),
            "n_rollouts": pl.repeat(8, rows, eager=True),
        }
    )
    frame = frame.with_columns(
        row_id=pl.format("syn/{}", "source_row_id"),
        problem=pl.concat_str(
            pl.lit("<image>").repeat_by(pl.col("n_images").cast(pl.Int64)).list.join(""),
            pl.col("text").str.slice(0, 1).str.to_uppercase(),
            pl.col("text").str.slice(1),
            pl.lit("?"),
        ),
    ).drop("n_images")
    bench_sha_lists = bench_sha.to_frame("s").select(pl.concat_list("s")).to_series()
    benchmark = pl.DataFrame(
        {
            "row_id": pl.int_range(benchmark_rows, eager=True).cast(pl.String),
            "problem_norm": bench_problems,
            "image_sha256": bench_sha_lists,
            "image_phash": pl.Series([[int(v)] for v in bench_phash], dtype=pl.List(pl.UInt64)),
        }
    ).with_columns(row_id="bench/" + pl.col("row_id"))
    benchmark = pl.concat(
        [
            benchmark,
            pl.DataFrame(
                {
                    "row_id": [f"bench-short/{i}" for i in range(n_short)],
                    "problem_norm": shorts,
                    "image_sha256": pl.Series([[]] * n_short, dtype=pl.List(pl.String)),
                    "image_phash": pl.Series([[]] * n_short, dtype=pl.List(pl.UInt64)),
                }
            ),
        ]
    )
    truth = {
        "role": role,
        "contaminated": np.isin(source, np.concatenate([span_rows, leak, short_rows])),
    }
    return {"frame": frame, "benchmark": benchmark, "truth": truth}


# ------------------------------------------------------------------------------ steps


def standin_problem_norm(frame: pl.DataFrame) -> pl.DataFrame:
    """STAND-IN (not the library's validation): problem_norm as a columnar expression."""
    return frame.with_columns(
        problem_norm=pl.col("problem")
        .str.replace_all("<image>", " ", literal=True)
        .str.to_lowercase()
        .str.replace_all(r"[^\w\s]|_", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def text_validation(frame: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """``problem_norm`` by the library's validate_frame on image-less rows, else the stand-in."""
    try:
        from mmr1.data.validate import validate_frame
        from schemas.curation import ValidationConfig
    except ImportError as error:
        print(f"  validate_frame unavailable ({error}); using the columnar STAND-IN")
        return standin_problem_norm(frame), "STAND-IN"

    def run(rows: pl.DataFrame) -> pl.DataFrame:
        # Image-less rows: the text checks and problem_norm, without decoding anything.
        text_only = rows.select(
            "row_id",
            "source",
            "source_row_id",
            pl.col("problem").str.replace_all("<image>", "", literal=True),
            "answer",
            "type",
        )
        result = validate_frame(text_only, ValidationConfig())
        if result.kept.height != rows.height:
            raise RuntimeError(f"validate_frame quarantined {result.reasons()}")
        return rows.with_columns(problem_norm=result.kept["problem_norm"])

    sample = frame.head(20_000)
    try:
        start = time.perf_counter()
        run(sample)
        projected = (time.perf_counter() - start) * frame.height / max(sample.height, 1)
    except Exception as error:  # noqa: BLE001 - any failure means: use the stand-in
        print(f"  validate_frame failed on a sample ({error!r}); using the columnar STAND-IN")
        return standin_problem_norm(frame), "STAND-IN"
    if projected > VALIDATE_MAX_SECONDS:
        print(f"  validate_frame projected at {projected:.0f} s; using the columnar STAND-IN")
        return standin_problem_norm(frame), "STAND-IN"
    return run(frame), "validate_frame"


def difficulty_filter(frame: pl.DataFrame, seed: int) -> tuple[int, str]:
    """Kept rows of the pass-rate bucket filter + type balancing (library, else stand-in)."""
    try:
        from mmr1.data.difficulty import bucket_and_filter
        from schemas.curation import DifficultyConfig
    except ImportError:
        bucket = (
            pl.when(pl.col("pass_rate") >= 0.8)
            .then(pl.lit("easy"))
            .when(pl.col("pass_rate") <= 0.2)
            .then(pl.lit("hard"))
            .otherwise(pl.lit("medium"))
        )
        kept = frame.with_columns(difficulty_bucket=bucket).filter(
            pl.col("difficulty_bucket") != "easy"
        )
        quota = kept.height // 2 // len(TYPES)
        kept = kept.filter(pl.int_range(pl.len()).shuffle(seed).over("type") < quota)
        return kept.height, "STAND-IN"
    config = DifficultyConfig(target_size=max(1, frame.height // 2))
    return bucket_and_filter(frame, config, seed).kept.height, "bucket_and_filter"


# ------------------------------------------------------------------------------- main


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _rss_gb() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 1024**3
    except OSError:  # not Linux: fall back to the process high-water mark
        return _peak_rss_gb()


class _RssSampler:
    """Highest RSS seen while a step runs (sampled every 20 ms from /proc/self/statm)."""

    def __enter__(self) -> _RssSampler:
        self.start = self.peak = _rss_gb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_gb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_gb())


def _timed(label: str, rows: int, step: Callable[[], Any], timings: list) -> Any:
    with _RssSampler() as rss:
        start = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - start
    timings.append((label, rows, seconds))
    print(
        f"{label:<26} {rows:>10,d} rows {seconds:7.2f} s {rows / seconds:>11,.0f} rows/s  "
        f"RSS {rss.start:5.2f} -> peak {rss.peak:5.2f} GiB (+{rss.peak - rss.start:4.2f})"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_600_000, help="training rows")
    parser.add_argument("--benchmark-rows", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dedup",
        default="{}",
        help="DedupConfig overrides as JSON, e.g. '{\"text_threshold\": 0.8}'",
    )
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report peak Python/numpy allocations"
    )
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start()

    start = time.perf_counter()
    tables = build_tables(args.rows, args.benchmark_rows, args.seed)
    frame, benchmark, truth = tables["frame"], tables["benchmark"], tables["truth"]
    print(
        f"generated {frame.height:,d} rows + {benchmark.height:,d} benchmark rows in "
        f"{time.perf_counter() - start:.1f} s (peak RSS {_peak_rss_gb():.2f} GiB)"
    )
    timings: list[tuple[str, int, float]] = []
    dedup_config = DedupConfig.model_validate_json(args.dedup)
    print(f"dedup config: {dedup_config.model_dump()}")
    frame, how = _timed(
        "1. validation (text part)", frame.height, lambda: text_validation(frame), timings
    )
    print(f"   by: {how}")
    dedup = _timed("2. dedup", frame.height, lambda: deduplicate(frame, dedup_config), timings)
    config = DecontaminationConfig()
    index = _timed(
        "3a. benchmark index",
        benchmark.height,
        lambda: BenchmarkIndex.build([benchmark], config),
        timings,
    )
    clean = _timed(
        "3b. decontaminate",
        dedup.kept.height,
        lambda: decontaminate(dedup.kept, index, config),
        timings,
    )
    kept, how = _timed(
        "4. difficulty filter",
        clean.kept.height,
        lambda: difficulty_filter(clean.kept, args.seed),
        timings,
    )
    print(f"   by: {how}; kept {kept:,d}")
    total = sum(seconds for _, _, seconds in timings)
    print(
        f"{'all steps':<26} {frame.height:>10,d} rows {total:7.2f} s "
        f"{frame.height / total:>11,.0f} rows/s  process peak RSS {_peak_rss_gb():5.2f} GiB"
    )
    if args.tracemalloc:
        peak = tracemalloc.get_traced_memory()[1] / 1024**3
        print(
            f"peak traced Python/numpy allocations {peak:.2f} GiB (polars' own memory not traced)"
        )

    _report_quality(frame, dedup, clean, truth)


def _report_quality(frame: pl.DataFrame, dedup: Any, clean: Any, truth: dict) -> None:
    position = {"row": pl.int_range(frame.height, eager=True)}
    ids = frame.select("source_row_id").with_columns(**position)
    role = truth["role"]
    removed = dedup.quarantined.join(ids, on="source_row_id").select("row", "reason").sort("row")
    rows = removed["row"].to_numpy()
    print("dedup: injected -> caught (reason counts)")
    for code, name in ((1, "exact"), (2, "near text"), (3, "near image")):
        injected = np.flatnonzero(role == code)
        caught = removed.filter(pl.col("row").is_in(injected.tolist()))
        reasons = dict(caught.group_by("reason").len().sort("reason").iter_rows())
        print(f"   {name:<11} {len(injected):>8,d} -> {caught.height:>8,d} {reasons}")
    extra = np.setdiff1d(rows, np.flatnonzero(role > 0))
    print(f"   removed though not injected: {len(extra):,d}")
    flagged = clean.quarantined.join(ids, on="source_row_id")["row"].to_numpy()
    survivors = dedup.kept.join(ids, on="source_row_id")["row"].to_numpy()
    expected = survivors[truth["contaminated"][survivors]]
    print(
        f"decontamination: {len(expected):,d} contaminated rows after dedup -> "
        f"{len(np.intersect1d(flagged, expected)):,d} caught, "
        f"{len(np.setdiff1d(flagged, expected)):,d} flagged though clean; "
        f"{clean.reasons()}"
    )


if __name__ == "__main__":
    main()
