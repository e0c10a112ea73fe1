"""Difficulty: pass rates from K rollouts, easy/medium/hard buckets, type balancing.

docs/METHOD.md section 2. Two steps:

1. :func:`estimate_pass_rates` samples ``K = config.rollouts`` answers per
   question with the training prompt and scores them with the shared verifier;
   ``pass_rate = (1/K) * sum_i accuracy_i`` (accuracy only: format does not
   count, a verification timeout counts as wrong). It runs through
   :func:`~mmr1.data.shards.run_sharded`, so an interrupted estimate resumes.
   Shard ``s`` samples with seed ``derive_seed(seed, "difficulty", s)``.
2. :func:`bucket_and_filter` labels ``easy`` (``p >= easy_at``), ``hard``
   (``p <= hard_at``) or ``medium``, quarantines the buckets not in
   ``config.keep`` and, with ``target_size``, keeps a subset balanced across the
   value combinations of ``config.balance_by`` (by default ``type``; water-filling
   quotas, see :func:`balanced_quotas`).

Bounded memory: a caller streaming its rows computes :func:`pass_rate_plan`
once, estimates groups of whole shards with ``plan=`` (same shards and seeds as
one call over all rows), keeps only :func:`rated_columns` of the rated rows,
and :func:`filter_batches` decides on those and applies the verdict batch by
batch.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import polars as pl

from mmr1.data.frame import QUARANTINE_SCHEMA, StepResult, empty_quarantine
from mmr1.data.requests import backend_identity, build_requests
from mmr1.data.shards import (
    ShardPlan,
    derive_seed,
    run_shard_group,
    run_sharded,
    step_fingerprint,
)
from mmr1.generation import GenerationBackend
from mmr1.rewards import score_batch
from schemas.curation import DifficultyConfig
from schemas.rewards import RewardConfig

logger = logging.getLogger(__name__)

PASS_RATE_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    "pass_rate": pl.Float64(),
    "n_rollouts": pl.Int64(),
}
BUCKET_REASONS = {"easy": "too_easy", "hard": "too_hard", "medium": "medium_filtered"}
#: The group value of a row whose balancing column is null.
UNKNOWN_VALUE = "unknown"


def rated_columns(config: DifficultyConfig) -> tuple[str, ...]:
    """What :func:`filter_batches` needs of each rated row (the rest is read again)."""
    base = ("row_id", "source", "source_row_id", "pass_rate", "n_rollouts")
    return base + tuple(column for column in config.balance_by if column not in base)


# ------------------------------------------------------------------ pass rates


def _rate_params(
    config: DifficultyConfig,
    seed: int,
    backend: GenerationBackend,
    rewards: RewardConfig,
    checkpoint_hash: str | None,
) -> dict[str, object]:
    return {
        "step": "difficulty",
        "rollouts": config.rollouts,
        "sampling": config.sampling,
        "seed": seed,
        "backend": backend_identity(backend, checkpoint_hash),
        "rewards": rewards.model_dump(exclude={"num_workers"}),
    }


def pass_rate_plan(
    row_ids: Iterable[str],
    backend: GenerationBackend,
    config: DifficultyConfig,
    seed: int,
    *,
    rewards: RewardConfig | None = None,
    checkpoint_hash: str | None = None,
) -> ShardPlan:
    """The shard plan of a pass-rate estimate over rows with these ids (read once).

    ``checkpoint_hash``: the rating checkpoint's content hash, which identifies the
    model in the fingerprint instead of its directory (``backend_identity``).
    """
    params = _rate_params(config, seed, backend, rewards or RewardConfig(), checkpoint_hash)
    return ShardPlan.of(params, row_ids, config.shard_size)


def estimate_pass_rates(
    frame: pl.DataFrame,
    backend: GenerationBackend,
    config: DifficultyConfig,
    out_dir: Path,
    seed: int,
    *,
    rewards: RewardConfig | None = None,
    restart: bool = False,
    plan: ShardPlan | None = None,
    checkpoint_hash: str | None = None,
) -> pl.DataFrame:
    """``frame`` plus ``pass_rate`` (float in [0, 1]) and ``n_rollouts`` (= K), same row order.

    Needs the columns ``row_id``, ``problem``, ``answer``, ``images``, ``choices``.
    Shards of ``config.shard_size`` questions are written under ``out_dir``;
    a rerun with the same inputs, config, backend and seed reuses them.
    ``rewards`` sets the verification deadline and workers (default RewardConfig()).
    ``plan``: :func:`pass_rate_plan` of the whole run when ``frame`` is one group
    of whole shards of it (positioned at its first shard); without one,
    ``checkpoint_hash`` is as in :func:`pass_rate_plan`.
    """
    rewards = rewards or RewardConfig()
    missing = {"row_id", "problem", "answer", "images", "choices"} - set(frame.columns)
    if missing:
        raise ValueError(f"estimate_pass_rates: frame lacks columns {sorted(missing)}")
    frame = frame.drop([c for c in ("pass_rate", "n_rollouts") if c in frame.columns])
    row_ids = frame["row_id"].to_list()

    def process(indices: Sequence[int], shard: int) -> pl.DataFrame:
        rows = frame[list(indices)]
        if rows.is_empty():
            return pl.DataFrame(schema=PASS_RATE_SCHEMA)
        sampling = config.sampling.model_copy(
            update={
                "n": config.rollouts,
                "seed": derive_seed(seed, "difficulty", shard),
                "return_logprobs": False,
            }
        )
        completions = backend.generate(build_requests(rows), sampling)
        k = config.rollouts
        responses, golds, choices = [], [], []
        for row, completion in zip(rows.iter_rows(named=True), completions, strict=True):
            if len(completion.samples) != k:
                raise RuntimeError(
                    f"backend {backend.name!r} returned {len(completion.samples)} samples for "
                    f"row {row['row_id']!r}, expected {k}"
                )
            responses.extend(s.text for s in completion.samples)
            golds.extend([row["answer"]] * k)
            choices.extend([row["choices"]] * k)
        scores = score_batch(responses, golds, choices, config=rewards)
        correct = [s.accuracy == 1.0 for s in scores]
        rates = [sum(correct[i * k : (i + 1) * k]) / k for i in range(rows.height)]
        return pl.DataFrame(
            {"row_id": rows["row_id"], "pass_rate": rates, "n_rollouts": [k] * rows.height},
            schema=PASS_RATE_SCHEMA,
        )

    indices = list(range(frame.height))
    if plan is None:
        rates = run_sharded(
            indices,
            key=lambda i: row_ids[i],
            process=process,
            out_dir=out_dir,
            shard_size=config.shard_size,
            fingerprint=step_fingerprint(
                _rate_params(config, seed, backend, rewards, checkpoint_hash), row_ids
            ),
            restart=restart,
            desc="pass rates",
        )
    else:
        rates = run_shard_group(
            indices, row_ids, process, out_dir, plan, restart=restart, desc="pass rates"
        )
    return frame.join(rates, on="row_id", how="left", maintain_order="left")


# ------------------------------------------------------------------ buckets


def _quarantine(rows: pl.DataFrame, reason: str, detail: pl.Expr) -> pl.DataFrame:
    return rows.select(
        pl.col("source").cast(pl.String),
        pl.col("source_row_id").cast(pl.String),
        pl.lit(reason, dtype=pl.String).alias("reason"),
        detail.cast(pl.String).alias("detail"),
        pl.lit(None, dtype=pl.String).alias("duplicate_of"),
    ).cast(QUARANTINE_SCHEMA)


def balanced_quotas(counts: Mapping[str, int], target: int, seed: int) -> dict[str, int]:
    """Rows to keep per group: as equal as the counts allow, summing to ``min(target, total)``.

    Water-filling: each round, every open group's fair share is
    ``remaining // open_groups``; groups with no more rows than that keep all of
    them and leave the round, which raises the share of the others. When no
    group is capped, the shares are final and the ``remaining % open_groups``
    extra rows go to open groups picked by a ``seed``-shuffled order.
    """
    quotas = {name: 0 for name in counts}
    remaining = min(target, sum(counts.values()))
    open_types = sorted(name for name, count in counts.items() if count > 0)
    while open_types and remaining > 0:
        share = remaining // len(open_types)
        capped = [t for t in open_types if counts[t] <= share]
        if not capped:
            order = list(open_types)
            random.Random(derive_seed(seed, "balance", remaining, len(order))).shuffle(order)
            extra = set(order[: remaining % len(order)])
            for name in open_types:
                quotas[name] = share + (name in extra)
            break
        for name in capped:
            quotas[name] = counts[name]
            remaining -= counts[name]
        open_types = [t for t in open_types if t not in capped]
    return quotas


def _rank_keys(row_ids: Sequence[str], seed: int) -> list[str]:
    # A row's rank depends on (seed, row_id) alone: stable across row order and polars versions.
    return [hashlib.sha256(f"{seed}/{rid}".encode()).hexdigest() for rid in row_ids]


def bucket_and_filter(frame: pl.DataFrame, config: DifficultyConfig, seed: int) -> StepResult:
    """Label buckets, drop unwanted ones, then balance across groups (see module docstring).

    Reasons: ``too_easy`` / ``too_hard`` / ``medium_filtered`` (bucket not in
    ``config.keep``; detail "pass rate 0.875 over 8 rollouts") and
    ``balanced_out`` (over its group's quota). A group is one combination of the
    ``config.balance_by`` columns' values (a null value counts as "unknown");
    with no columns a ``target_size`` keeps a seeded uniform subset. Kept rows
    stay in input order and gain ``difficulty_bucket``.
    """
    missing = set(rated_columns(config)) - set(frame.columns)
    if missing:
        raise ValueError(f"bucket_and_filter: frame lacks columns {sorted(missing)}")
    unestimated = frame.filter(pl.col("pass_rate").is_null())
    if not unestimated.is_empty():
        raise ValueError(
            f"bucket_and_filter: {unestimated.height} row(s) have no pass_rate "
            f"(first: row {unestimated['row_id'][0]!r}); run estimate_pass_rates first"
        )
    p = pl.col("pass_rate")
    labelled = frame.with_columns(
        pl.when(p >= config.easy_at)
        .then(pl.lit("easy"))
        .when(p <= config.hard_at)
        .then(pl.lit("hard"))
        .otherwise(pl.lit("medium"))
        .alias("difficulty_bucket")
    )
    quarantined = []
    detail = pl.format("pass rate {} over {} rollouts", p.round(3), pl.col("n_rollouts"))
    for bucket, reason in BUCKET_REASONS.items():
        if bucket not in config.keep:
            dropped = labelled.filter(pl.col("difficulty_bucket") == bucket)
            quarantined.append(_quarantine(dropped, reason, detail))
    kept = labelled.filter(pl.col("difficulty_bucket").is_in(list(config.keep)))

    if config.target_size is not None and kept.height > config.target_size:
        kept, dropped = _balance(kept, config, seed)
        quarantined.append(dropped)
    elif config.balance_by and config.target_size is None:
        logger.info("balance_by without target_size: every kept row stays")
    result = StepResult(
        kept=kept,
        quarantined=pl.concat(quarantined) if quarantined else empty_quarantine(),
    )
    logger.info("difficulty buckets: kept %d, quarantined %s", kept.height, result.reasons())
    return result


def _balance(
    kept: pl.DataFrame, config: DifficultyConfig, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep ``target_size`` rows: per-group quotas, lowest seeded rank first."""
    assert config.target_size is not None
    group = (
        pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null(UNKNOWN_VALUE) for c in config.balance_by],
            separator="/",
        )
        if config.balance_by
        else pl.lit("all")
    )
    ranked = kept.with_columns(
        group.alias("_group"),
        pl.Series("_rank", _rank_keys(kept["row_id"].to_list(), seed)),
    )
    counts = dict(ranked.group_by("_group").len().iter_rows())
    quotas = balanced_quotas(counts, config.target_size, seed)
    ranked = ranked.with_columns(
        (
            pl.col("_rank").rank("ordinal").over("_group")
            <= pl.col("_group").replace_strict(quotas)
        ).alias("_keep")
    )
    per_group = ", ".join(f"{name} {quotas[name]}/{counts[name]}" for name in sorted(counts))
    by = "/".join(config.balance_by) or "all"
    detail = pl.format(
        "{}: over its quota of {} (target {} rows; kept per {}: {})",
        pl.col("_group"),
        pl.col("_group").replace_strict(quotas),
        pl.lit(config.target_size),
        pl.lit(by),
        pl.lit(per_group),
    )
    dropped = _quarantine(ranked.filter(~pl.col("_keep")), "balanced_out", detail)
    balanced = ranked.filter(pl.col("_keep")).drop("_group", "_rank", "_keep")
    return balanced, dropped


def filter_batches(
    rated: pl.DataFrame, frames: Iterable[pl.DataFrame], config: DifficultyConfig, seed: int
) -> Iterator[StepResult]:
    """:func:`bucket_and_filter` decided on ``rated`` (:func:`rated_columns` of every row)
    and applied to the same rows read again as ``frames``, one result per frame.

    Each kept row gains ``pass_rate``, ``n_rollouts`` and ``difficulty_bucket``
    (replacing earlier values); the first result carries every quarantined row.
    """
    verdict = bucket_and_filter(rated, config, seed)
    decided = verdict.kept.select(
        "row_id", "pass_rate", "n_rollouts", _bucket=pl.col("difficulty_bucket")
    )
    quarantined = verdict.quarantined
    for frame in frames:
        frame = frame.drop([c for c in ("pass_rate", "n_rollouts") if c in frame.columns])
        kept = (
            frame.join(decided, on="row_id", how="inner", maintain_order="left")
            .with_columns(difficulty_bucket=pl.col("_bucket"))  # in place if it was there
            .drop("_bucket")
        )
        yield StepResult(kept=kept, quarantined=quarantined)
        quarantined = empty_quarantine()
