"""Benchmark decontamination: quarantine training rows that overlap an evaluation benchmark.

docs/METHOD.md section 2: we train on nothing an evaluation benchmark asks. Build a
:class:`~mmr1.data.benchmark_index.BenchmarkIndex` once from the benchmark frames
(validated: the flow runs validation on benchmarks first, so ``problem_norm``,
``image_sha256`` and ``image_phash`` are computed exactly as for training rows), then
:func:`decontaminate` quarantines a training row when one of the rules below
fires for some benchmark row; ``detail`` names the first rule in this order,
the evidence and the matched benchmark ``row_id``.

Benchmarks reuse question templates across many items ("as shown in the figure
find x", "what is the colour of the big shape"): the same text asked about a
different picture, with a different answer, is not a leak. So text evidence
counts on its own only when it is *specific* to one benchmark item, and
otherwise only together with image evidence against the same benchmark row.

Definitions (``T`` is ``max_template_count``, ``n`` is ``ngram``):

- *Benchmark items*: benchmark rows, except that rows with the same
  ``problem_norm`` and the same ``image_sha256`` list count as one item (a
  benchmark registered in several versions, or an item listed twice, does not
  make its own question look templated). Counts below are of distinct items,
  over all benchmark frames together.
- A benchmark question is *specific* when it has at least ``n`` words and is
  the question of at most ``T`` items; otherwise it is *templated* (more than
  ``T`` items) or *short* (fewer than ``n`` words, so no n-gram).
- A word n-gram is *rare* when at most ``T`` items' questions contain it (its
  document frequency), otherwise *templated*.
- *Image evidence* between a training row and a benchmark row: one image of
  each with the same SHA-256 (same normalised pixels), or with perceptual
  hashes within ``image_hamming`` bits.

``contaminated_text`` (rules in the order ``detail`` reports them)

1. *Specific question*: its ``problem_norm`` equals a specific benchmark
   question. Images do not matter ("unique question", or "rare question" when
   ``T > 1`` and it is asked by 2..T items).
2. *Rare n-grams*: it shares at least ``min_overlap`` distinct rare
   n-grams with one benchmark question ("3 rare 8-grams shared").
3. - 5. *Templated or short question with image evidence*: its ``problem_norm``
   equals a templated or short benchmark question, and some benchmark row
   asking it shares an image with it (3: identical image, 4: phash within
   ``image_hamming`` bits) or (5) either of the two has no images: text-only
   problems, where the text is all there is. Every benchmark row asking the
   question is searched, not only the first.
6. - 7. *Templated n-grams with image evidence*: it shares at least
   ``min_overlap`` distinct n-grams (rare or not) with one benchmark question,
   fewer than ``min_overlap`` of them rare, and has image evidence with that
   same benchmark row (6: identical image, 7: phash within ``image_hamming``
   bits). Unlike rule 5, a row without images is not enough here: two
   questions that differ but share template phrases ("answer the question and
   provide the correct option letter") are different problems, images or not.

``contaminated_image``

8. *Identical image*: one of its images has the SHA-256 of a benchmark image,
   whatever the question: a benchmark picture seen in training is a leak
   whatever was asked.

Not contamination: a templated or short question, or template n-grams, asked
about a different picture; a perceptual-hash match without a text match with
the same benchmark row (the hashes are computed on grayscale, so colour-only
variants of one layout hash alike); a short benchmark question inside a longer
training question (it has no n-gram and is not equal). Text evidence wins
over image evidence in ``reason``: an identical image with a templated question
is reported as rule 3 (``contaminated_text``).

Limits: templatedness is seen only through the benchmarks' own counts. A
template that happens to be asked by at most ``T`` benchmark items looks
specific, so training rows using it are quarantined (on the 100-item
synthetic benchmark, 10 of its 29 question texts occur once). Raise
``max_template_count`` or add benchmark rows to see more of the templates.

All matching is columnar: n-grams are uint64 hashes (:mod:`mmr1.data.sketches`)
joined with polars, questions and images are joined on their text and digests.
Templated text never multiplies into all pairs of rows sharing it: rule 3-5
joins are keyed on (question, image); for rules 6-7 the n-grams found in
exactly the same benchmark rows form one group (a template phrase's n-grams
usually do), and image pairs are joined on (group, image), so a pair is found
for every group its questions share, and the row's n-grams in those groups are
counted. Phashes within ``h > 0`` bits are found through ``h + 1`` bit ranges
(pigeonhole: a close pair agrees on one) and then checked exactly; the ranges
narrow as ``h`` grows, so on heavily templated text ``image_hamming`` above
about 8 gets expensive (candidates grow like ``2^(-64 / (h + 1))``). With
``image_hamming >= 64`` every two images are near, so rules 4 and 7 need only
images on both sides (rule 7 with ``min_overlap > 1`` then counts every pair
sharing text).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mmr1.data.benchmark_index import BENCHMARK_COLUMNS, BenchmarkIndex
from mmr1.data.frame import QUARANTINE_SCHEMA, StepResult, empty_quarantine, require_columns
from mmr1.data.sketches import bit_bands, hamming64, iter_text_ngrams
from schemas.curation import DecontaminationConfig

REQUIRED_COLUMNS = ("source", "source_row_id", *BENCHMARK_COLUMNS)
REASONS = ("contaminated_text", "contaminated_image")
# Evidence codes: the module doc's rules, in order (the smallest code is reported).
_SPECIFIC_QUESTION, _RARE_NGRAMS = 1, 2
_QUESTION_SAME_IMAGE, _QUESTION_NEAR_IMAGE, _QUESTION_NO_IMAGES = 3, 4, 5
_NGRAMS_SAME_IMAGE, _NGRAMS_NEAR_IMAGE = 6, 7
_SAME_IMAGE = 8
_EVIDENCE_SCHEMA = {
    "pos": pl.UInt32,
    "bench": pl.UInt32,
    "rule": pl.Int8,
    "shared": pl.Int64,  # shared n-grams (rules 2, 6, 7)
    "distance": pl.Int64,  # phash distance (rules 4, 7)
}


def _evidence(
    frame: pl.DataFrame, rule: int, shared: str | None = None, distance: str | None = None
) -> pl.DataFrame:
    """``frame``'s (pos, bench) pairs as evidence rows: pos, bench, rule, shared, distance."""

    def value(name: str | None) -> pl.Expr:
        return pl.col(name) if name else pl.lit(None)

    return frame.select(
        "pos", "bench", rule=pl.lit(rule), shared=value(shared), distance=value(distance)
    ).cast(_EVIDENCE_SCHEMA)


def _no_evidence() -> pl.DataFrame:
    return pl.DataFrame(schema=_EVIDENCE_SCHEMA)


def _images(frame: pl.DataFrame, pos: pl.Series) -> pl.DataFrame:
    """pos, sha (list), phash (list) of the training rows ``pos`` of ``frame``."""
    return frame.select(
        pl.col("image_sha256").gather(pos).cast(pl.List(pl.String)).alias("sha"),
        pl.col("image_phash").gather(pos).cast(pl.List(pl.UInt64)).alias("phash"),
    ).with_columns(pos.alias("pos"))


def _has_images() -> pl.Expr:
    return pl.col("sha").list.len().fill_null(0) > 0


def _question_matches(frame: pl.DataFrame, index: BenchmarkIndex) -> pl.DataFrame:
    """Evidence of rules 1 and 3-5 (see the module doc)."""
    same = (
        frame.select(pl.col("problem_norm").cast(pl.String))
        .with_row_index("pos")
        .join(index.questions, on="problem_norm", how="inner")
    )
    found = [_no_evidence(), _evidence(same.filter(pl.col("specific")), _SPECIFIC_QUESTION)]
    templated = same.filter(~pl.col("specific"))
    if not templated.height:
        return pl.concat(found)
    # Every join is keyed on the question as well, so a templated question shared
    # by many rows never expands into all their pairs.
    rows = _images(frame, templated["pos"]).with_columns(
        templated["problem_norm"], bench=templated["bench"]
    )
    with_images = rows.filter(_has_images())
    found += [
        # No images on the training side: any benchmark row with the question.
        _evidence(rows.filter(~_has_images()), _QUESTION_NO_IMAGES),
        # Images on the training side: a benchmark row with the question but no images ...
        _evidence(
            with_images.select("pos", "problem_norm").join(
                index.templated_no_images, on="problem_norm", how="inner"
            ),
            _QUESTION_NO_IMAGES,
        ),
        # ... or one sharing an image.
        _evidence(
            with_images.select("pos", "problem_norm", "sha")
            .explode("sha")
            .join(index.templated_sha, on=["problem_norm", "sha"], how="inner"),
            _QUESTION_SAME_IMAGE,
        ),
    ]
    phashes = with_images.select("pos", "problem_norm", "phash").explode("phash")
    near = _near_phash(
        phashes.drop_nulls("phash"),
        index.templated_phash,
        index.image_hamming,
        on=("problem_norm",),
    )
    found.append(_evidence(near, _QUESTION_NEAR_IMAGE, distance="distance"))
    return pl.concat(found)


def _closest(pairs: pl.DataFrame, rows: pl.DataFrame, index: BenchmarkIndex) -> pl.DataFrame:
    """``pairs`` (pos, bench, ...) with distance: their closest phashes (rows: pos, phash)."""
    train = rows.select("pos", "phash").explode("phash").drop_nulls("phash")
    both = (
        pairs.select("pos", "bench")
        .join(train, on="pos", how="inner")
        .join(index.image_phash.rename({"phash": "bench_phash"}), on="bench", how="inner")
    )
    distance = hamming64(both["phash"].to_numpy(), both["bench_phash"].to_numpy())
    closest = (
        both.with_columns(distance=pl.Series(distance.astype(np.int64), dtype=pl.Int64))
        .group_by("pos", "bench")
        .agg(pl.col("distance").min())
    )
    return pairs.join(closest, on=["pos", "bench"], how="left")


def _templated_ngram_matches(
    hits: pl.DataFrame,
    rows: pl.DataFrame,
    index: BenchmarkIndex,
    config: DecontaminationConfig,
) -> list[pl.DataFrame]:
    """Evidence of rules 6-7 for training ``rows`` (pos, sha, phash; with images).

    ``hits`` holds their distinct n-grams that benchmark questions have (pos,
    gram, group). Image pairs are searched per shared n-gram group (keyed joins
    on (group, image)): rows sharing only template text never expand into all
    their pairs, and a template phrase's n-grams (one group) are searched once.
    A pair found for a group shares all of the row's n-grams of that group.
    """
    groups = (
        hits.join(rows.select("pos"), on="pos", how="semi").group_by("pos", "group").agg(n=pl.len())
    )
    used = groups.select("group").unique()
    bench_sha = index.group_sha.join(used, on="group", how="semi")
    bench_phash = index.group_phash.join(used, on="group", how="semi")
    keys = groups.select("pos", "group")
    same = (
        keys.join(rows.select("pos", "sha").explode("sha"), on="pos", how="inner")
        .join(bench_sha, on=["group", "sha"], how="inner")
        .select("pos", "group", "bench", rule=pl.lit(_NGRAMS_SAME_IMAGE, pl.Int8))
    )
    if index.image_hamming < 64:
        phashes = keys.join(
            rows.select("pos", "phash").explode("phash").drop_nulls("phash"), on="pos"
        )
        near = _near_phash(phashes, bench_phash, index.image_hamming, on=("group",))
    elif config.min_overlap > 1:  # every two images are near: every pair sharing text
        near = keys.join(bench_phash.select("group", "bench").unique(), on="group", how="inner")
    else:  # every two images are near, and one shared n-gram is enough: the first row
        first = bench_phash.group_by("group").agg(pl.col("bench").min())
        near = keys.join(first, on="group", how="inner")
    near = near.select("pos", "group", "bench", rule=pl.lit(_NGRAMS_NEAR_IMAGE, pl.Int8))
    pairs = (
        pl.concat([same, near])
        .group_by("pos", "bench", "group")
        .agg(pl.col("rule").min())
        .join(groups, on=["pos", "group"], how="inner")
        .group_by("pos", "bench")
        .agg(pl.col("rule").min(), shared=pl.col("n").sum())
        .filter(pl.col("shared") >= config.min_overlap)
    )
    return [
        _evidence(pairs.filter(pl.col("rule") == _NGRAMS_SAME_IMAGE), _NGRAMS_SAME_IMAGE, "shared"),
        _evidence(
            _closest(pairs.filter(pl.col("rule") == _NGRAMS_NEAR_IMAGE), rows, index),
            _NGRAMS_NEAR_IMAGE,
            "shared",
            "distance",
        ),
    ]


def _ngram_matches(
    frame: pl.DataFrame,
    index: BenchmarkIndex,
    config: DecontaminationConfig,
    settled: pl.Series,
) -> list[pl.DataFrame]:
    """Evidence of rules 2 and 6-7; rows ``settled`` (positions) need no rule 6-7 evidence."""
    found = [_no_evidence()]
    if not index.ngrams.height:
        return found
    rare_ngrams = index.ngrams.filter(pl.col("rare")).select("gram", "bench")
    for start, values, offsets in iter_text_ngrams(
        frame["problem_norm"], config.ngram, short="drop"
    ):
        pos = np.repeat(np.arange(start, start + len(offsets) - 1), np.diff(offsets))
        grams = pl.DataFrame(
            {"pos": pos, "gram": values}, schema={"pos": pl.UInt32, "gram": pl.UInt64}
        )
        # Distinct n-grams of each row that some benchmark question has.
        hits = grams.join(index.grams, on="gram", how="inner").unique(["pos", "gram"])
        if not hits.height:
            continue
        rare = (
            hits.filter(pl.col("rare"))
            .join(rare_ngrams, on="gram", how="inner")
            .group_by("pos", "bench")
            .agg(shared=pl.len())
            .filter(pl.col("shared") >= config.min_overlap)
        )
        found.append(_evidence(rare, _RARE_NGRAMS, shared="shared"))
        # Rules 6-7: rows with enough hits in all, not settled by a text rule already.
        candidates = (
            hits.group_by("pos")
            .agg(pl.len())
            .filter(pl.col("len") >= config.min_overlap)
            .join(rare.select("pos"), on="pos", how="anti")
            .filter(~pl.col("pos").is_in(settled.implode()))
            .sort("pos")
        )
        if candidates.height:
            rows = _images(frame, candidates["pos"]).filter(_has_images())
            found += _templated_ngram_matches(hits, rows, index, config)
    return found


def _text_matches(
    frame: pl.DataFrame, index: BenchmarkIndex, config: DecontaminationConfig
) -> pl.DataFrame:
    """Evidence of rules 1-7 (see the module doc), one row per flagged training row."""
    questions = _question_matches(frame, index)
    settled = questions["pos"].unique()
    return _best(pl.concat([questions, *_ngram_matches(frame, index, config, settled)]))


def _best(evidence: pl.DataFrame) -> pl.DataFrame:
    """One evidence row per training row: the first rule, then the strongest, then the first bench.

    Strongest: most shared n-grams, then smallest phash distance.
    """
    return evidence.sort(
        "pos", "rule", "shared", "distance", "bench", descending=[False, False, True, False, False]
    ).unique("pos", keep="first", maintain_order=True)


def _image_matches(frame: pl.DataFrame, index: BenchmarkIndex) -> pl.DataFrame:
    """Evidence of rule 8 (identical image), one row per flagged training row."""
    same = (
        frame.select(pl.col("image_sha256").cast(pl.List(pl.String)).alias("sha"))
        .with_row_index("pos")
        .explode("sha")
        .join(index.image_sha, on="sha", how="inner")
    )
    return _best(_evidence(same, _SAME_IMAGE))


def _banded(values: np.ndarray, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(band id, band value) of every value and band, flattened value-major."""
    bands = bit_bands(values, n_bands)
    ids = np.tile(np.arange(n_bands, dtype=np.uint8), len(values))
    return ids, bands.ravel()


def _near_phash(
    train: pl.DataFrame, bench: pl.DataFrame, hamming: int, on: tuple[str, ...]
) -> pl.DataFrame:
    """Training/benchmark image pairs agreeing on ``on`` with phashes within ``hamming`` bits.

    ``train`` has pos, ``on``, phash (non-null); ``bench`` has ``on``, phash, bench.
    Returns pos, ``on``, bench, distance. Within ``0 < hamming < 64`` bits, candidates
    come from ``hamming + 1`` bit ranges (pigeonhole) and are checked exactly;
    from 64 bits on every pair is close, so each training image is paired
    with the first benchmark row of its key only.
    """
    keys = list(on)
    empty = (
        train.select("pos", *keys)
        .clear()
        .with_columns(bench=pl.lit(None, pl.UInt32), distance=pl.lit(None, pl.Int64))
    )
    if not train.height or not bench.height:
        return empty
    if hamming == 0:
        return train.join(bench, on=[*keys, "phash"], how="inner").select(
            "pos", *keys, "bench", distance=pl.lit(0, pl.Int64)
        )
    bench = bench.rename({"phash": "bench_phash"})
    if hamming >= 64:
        first = bench.sort("bench").unique(keys, keep="first", maintain_order=True)
        pairs = train.join(first, on=keys, how="inner")
    else:
        n_bands = hamming + 1
        bench_values = bench["bench_phash"].to_numpy()
        band, value = _banded(bench_values, n_bands)
        bench_bands = bench.select(pl.all().gather(np.repeat(np.arange(bench.height), n_bands)))
        bench_bands = bench_bands.with_columns(band=pl.Series(band), value=pl.Series(value))
        train_values = train["phash"].to_numpy()
        band, value = _banded(train_values, n_bands)
        train_bands = train.select(pl.all().gather(np.repeat(np.arange(train.height), n_bands)))
        train_bands = train_bands.with_columns(band=pl.Series(band), value=pl.Series(value))
        pairs = train_bands.join(bench_bands, on=[*keys, "band", "value"], how="inner").unique(
            ["pos", *keys, "phash", "bench", "bench_phash"]
        )
    if not pairs.height:
        return empty
    distance = hamming64(pairs["phash"].to_numpy(), pairs["bench_phash"].to_numpy())
    return (
        pairs.with_columns(distance=pl.Series(distance.astype(np.int64)))
        .filter(pl.col("distance") <= hamming)
        .select("pos", *keys, "bench", "distance")
    )


def _details(config: DecontaminationConfig) -> pl.Expr:
    """The quarantine ``detail`` of an evidence row joined with ``BenchmarkIndex.rows``."""
    rule, items, matched = pl.col("rule"), pl.col("items"), pl.col("matched")
    n = pl.lit(config.ngram)
    question = (
        pl.when(pl.col("short"))
        .then(pl.format("short question (under {} words)", n))
        .when(items > config.max_template_count)
        .then(pl.format("templated question (asked in {} benchmark items)", items))
        .when(items == 1)
        .then(pl.lit("unique question"))
        .otherwise(pl.format("rare question (asked in {} benchmark items)", items))
    )
    same_question = pl.format("same normalised question as benchmark row {}", matched)
    near = pl.format("image phash within {} bits", "distance")
    templated_ngrams = pl.format("templated text ({} shared {}-grams)", "shared", n)
    shared_with = pl.format("shared with benchmark row {}", matched)
    return (
        pl.when(rule == _SPECIFIC_QUESTION)
        .then(pl.format("{}: {}", question, same_question))
        .when(rule == _RARE_NGRAMS)
        .then(pl.format("{} rare {}-grams {}", "shared", n, shared_with))
        .when(rule == _QUESTION_SAME_IMAGE)
        .then(pl.format("{} + identical image: {}", question, same_question))
        .when(rule == _QUESTION_NEAR_IMAGE)
        .then(pl.format("{} + {}: {}", question, near, same_question))
        .when(rule == _QUESTION_NO_IMAGES)
        .then(pl.format("{} + no images on one side: {}", question, same_question))
        .when(rule == _NGRAMS_SAME_IMAGE)
        .then(pl.format("{} + identical image {}", templated_ngrams, shared_with))
        .when(rule == _NGRAMS_NEAR_IMAGE)
        .then(pl.format("{} + {} {}", templated_ngrams, near, shared_with))
        .otherwise(pl.format("identical image (sha256) to an image of benchmark row {}", matched))
    )


def decontaminate(
    frame: pl.DataFrame, index: BenchmarkIndex, config: DecontaminationConfig
) -> StepResult:
    """Quarantine rows overlapping a benchmark (see the module doc); others kept in order."""
    if not config.enabled or frame.height == 0:
        return StepResult(frame, empty_quarantine())
    require_columns(frame, REQUIRED_COLUMNS, "decontaminate")
    built = (index.ngram, index.image_hamming, index.max_template_count)
    wanted = (config.ngram, config.image_hamming, config.max_template_count)
    if built != wanted:
        raise ValueError(
            "benchmark index was built with ngram={}, image_hamming={}, max_template_count={} "
            "but the config has ngram={}, image_hamming={}, max_template_count={}: "
            "rebuild it with this config".format(*built, *wanted)
        )
    if len(index) == 0:
        return StepResult(frame, empty_quarantine())
    text = _text_matches(frame, index, config)
    image = _image_matches(frame, index).join(text.select("pos"), on="pos", how="anti")
    matches = pl.concat([text, image]).sort("pos")
    flagged = np.zeros(frame.height, dtype=bool)
    flagged[matches["pos"].to_numpy()] = True
    if not flagged.any():
        return StepResult(frame, empty_quarantine())
    rows = frame.select(
        pl.col("source").cast(pl.String), pl.col("source_row_id").cast(pl.String)
    ).with_row_index("pos")
    quarantined = (
        matches.join(rows, on="pos", how="left")
        .join(index.rows.rename({"row_id": "matched"}), on="bench", how="left")
        .sort("pos")
        .select(
            "source",
            "source_row_id",
            reason=pl.when(pl.col("rule") < _SAME_IMAGE)
            .then(pl.lit(REASONS[0]))
            .otherwise(pl.lit(REASONS[1])),
            detail=_details(config),
            duplicate_of=pl.lit(None, pl.String),
        )
        .cast(QUARANTINE_SCHEMA)
    )
    return StepResult(kept=frame.filter(pl.Series(~flagged)), quarantined=quarantined)
