"""VPS estimation: roll out N answers per prompt, verify them, score each prompt.

For every prompt of an RL pool (docs/METHOD.md section 5)::

    a_i  = accuracy of rollout i (binary, shared verifier; a timeout counts as wrong)
    p    = mean(a_i)
    OVS  = ovs_scale * p (1 - p)
    TDS  = diversity of the N unpadded trajectories (token ids or words)
    VPS  = alpha * OVS + beta * TDS

Work is cut into resumable shards (:func:`mmr1.data.shards.run_sharded`): shard
``s`` samples with ``derive_seed(seed, "vps", s)``, so an interrupted estimate
that is restarted gives the same table as an uninterrupted one. A shard's
frame holds one row per rollout (the audit trail) with its prompt's scores
repeated; :func:`vps_table` reduces it to one row per prompt.

The same scoring is used by GRPO's online update (:func:`score_groups`), where
the G training rollouts of a sampled prompt refresh its VPS at no extra cost.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mmr1.data.requests import backend_identity, build_requests
from mmr1.data.shards import derive_seed, run_sharded, step_fingerprint
from mmr1.generation import GenerationBackend
from mmr1.rewards import score_batch
from mmr1.vas.vps import variance_promotion_score
from schemas.generation import Completion, CompletionSample
from schemas.vas import VPSEstimateConfig, VPSScoreConfig

logger = logging.getLogger(__name__)

#: One row per rollout: what was generated and how it scored, plus its prompt's VPS terms.
ROLLOUT_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "sample": pl.Int64(),
    "response": pl.String(),
    "n_tokens": pl.Int64(),
    "finish_reason": pl.String(),
    "extracted": pl.String(),
    "accuracy": pl.Float64(),
    "format": pl.Float64(),
    "reward": pl.Float64(),
    "timed_out": pl.Boolean(),
    "pass_rate": pl.Float64(),
    "ovs": pl.Float64(),
    "tds": pl.Float64(),
    "vps": pl.Float64(),
}

#: One row per prompt: the VPS table the sampler reads.
VPS_TABLE_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.String(),
    "pass_rate": pl.Float64(),
    "ovs": pl.Float64(),
    "tds": pl.Float64(),
    "vps": pl.Float64(),
    "n_rollouts": pl.Int64(),
    "mean_tokens": pl.Float64(),
    "truncated_frac": pl.Float64(),
    "checkpoint_ref": pl.String(),
    "dataset_ref": pl.String(),
}
# No timestamp in the table: its content hash is its catalog identity, and a run resumed
# from its shards must register the same version as an uninterrupted one. When it was
# estimated is the catalog entry's created_at.

VPS_TABLE_FILE = "vps.parquet"
ROLLOUTS_FILE = "rollouts.parquet"


def trajectory_units(sample: CompletionSample, unit: str, prompt_id: str) -> list[int] | list[str]:
    """What TDS compares for one rollout: its token ids (unpadded) or its words."""
    if unit == "words":
        return sample.text.split()
    if not sample.token_ids and sample.text:
        raise ValueError(
            f"prompt {prompt_id!r}: the backend returned text without token ids, so token-level "
            "TDS is impossible; set score.tds_unit='words' for this backend"
        )
    return list(sample.token_ids)


def score_groups(
    accuracies: Sequence[Sequence[float]],
    trajectories: Sequence[Sequence[Sequence[int] | Sequence[str]]],
    config: VPSScoreConfig,
) -> list[tuple[float, float, float, float]]:
    """``(pass_rate, ovs, tds, vps)`` per group of rollouts (one group per prompt)."""
    out = []
    for accs, trajs in zip(accuracies, trajectories, strict=True):
        record = variance_promotion_score(
            accs,
            trajs,
            alpha=config.alpha,
            beta=config.beta,
            ovs_scale=config.ovs_scale,
            tds_method=config.tds_method,
        )
        out.append((record.pass_rate, record.ovs, record.tds, record.vps))
    return out


@dataclass
class _Throughput:
    rollouts: int = 0
    tokens: int = 0
    generate_s: float = 0.0
    score_s: float = 0.0


def _rollout_frame(
    rows: pl.DataFrame,
    completions: Sequence[Completion],
    config: VPSEstimateConfig,
    backend_name: str,
    timing: _Throughput,
) -> pl.DataFrame:
    n = config.rollouts
    prompt_ids = rows["row_id"].to_list()
    responses, golds, choices = [], [], []
    for prompt_id, answer, options, completion in zip(
        prompt_ids, rows["answer"], rows["choices"], completions, strict=True
    ):
        if len(completion.samples) != n:
            raise RuntimeError(
                f"backend {backend_name!r} returned {len(completion.samples)} samples for "
                f"prompt {prompt_id!r}, expected {n}"
            )
        responses.extend(s.text for s in completion.samples)
        golds.extend([answer] * n)
        choices.extend([options] * n)
    began = time.perf_counter()
    rewards = score_batch(responses, golds, choices, config=config.rewards)
    timing.score_s += time.perf_counter() - began

    accuracies = [[rewards[i * n + j].accuracy for j in range(n)] for i in range(len(prompt_ids))]
    trajectories = [
        [trajectory_units(s, config.score.tds_unit, pid) for s in c.samples]
        for pid, c in zip(prompt_ids, completions, strict=True)
    ]
    scored = score_groups(accuracies, trajectories, config.score)
    columns: dict[str, list[Any]] = {name: [] for name in ROLLOUT_SCHEMA}
    for i, (prompt_id, completion) in enumerate(zip(prompt_ids, completions, strict=True)):
        pass_rate, ovs, tds, vps = scored[i]
        for j, sample in enumerate(completion.samples):
            reward = rewards[i * n + j]
            n_tokens = len(sample.token_ids) if sample.token_ids else len(sample.text.split())
            timing.tokens += n_tokens
            values = (
                prompt_id,
                j,
                sample.text,
                n_tokens,
                sample.finish_reason,
                reward.extracted,
                reward.accuracy,
                reward.format,
                reward.overall,
                reward.timed_out,
                pass_rate,
                ovs,
                tds,
                vps,
            )
            for name, value in zip(ROLLOUT_SCHEMA, values, strict=True):
                columns[name].append(value)
    timing.rollouts += len(responses)
    return pl.DataFrame(columns, schema=ROLLOUT_SCHEMA)


@dataclass
class VPSEstimate:
    """The result of :func:`estimate_vps`."""

    table: pl.DataFrame
    rollouts: pl.DataFrame
    stats: dict[str, float] = field(default_factory=dict)


def estimate_vps(
    frame: pl.DataFrame,
    backend: GenerationBackend,
    config: VPSEstimateConfig,
    out_dir: Path,
    *,
    dataset_ref: str,
    checkpoint_ref: str,
    checkpoint_hash: str | None = None,
) -> VPSEstimate:
    """Roll out ``config.rollouts`` answers per prompt of ``frame`` and score every prompt.

    ``frame`` needs ``row_id``, ``problem``, ``answer``, ``images``, ``choices``
    (an RL pool read with :func:`read_pool_frame`). Shards go under ``out_dir``;
    a rerun with the same inputs, config and backend reuses the finished ones
    (``config.restart`` discards them). ``dataset_ref`` / ``checkpoint_ref`` are
    recorded in every row of the table. ``checkpoint_hash`` (the catalog
    checkpoint's content hash) identifies the model in the shards' fingerprint
    instead of the directory the backend loads it from (:func:`backend_identity`).
    """
    missing = {"row_id", "problem", "answer", "images", "choices"} - set(frame.columns)
    if missing:
        raise ValueError(f"estimate_vps: frame lacks columns {sorted(missing)}")
    if frame.is_empty():
        raise ValueError(f"estimate_vps: dataset {dataset_ref} has no prompts")
    row_ids = frame["row_id"].to_list()
    identity = backend_identity(backend, checkpoint_hash)
    fingerprint = step_fingerprint(
        {
            "step": "vps",
            "rollouts": config.rollouts,
            "sampling": config.sampling,
            "seed": config.seed,
            "score": config.score,
            "rewards": config.rewards.model_dump(exclude={"num_workers"}),
            "backend": identity,
            "checkpoint": checkpoint_ref,
        },
        row_ids,
    )
    timing = _Throughput()

    def process(indices: Sequence[int], shard: int) -> pl.DataFrame:
        rows = frame[list(indices)]
        if rows.is_empty():
            return pl.DataFrame(schema=ROLLOUT_SCHEMA)
        sampling = config.sampling.model_copy(
            update={
                "n": config.rollouts,
                "seed": derive_seed(config.seed, "vps", shard),
                "return_logprobs": False,
            }
        )
        began = time.perf_counter()
        completions = backend.generate(build_requests(rows), sampling)
        timing.generate_s += time.perf_counter() - began
        return _rollout_frame(rows, completions, config, str(identity["name"]), timing)

    began = time.perf_counter()
    rollouts = run_sharded(
        list(range(frame.height)),
        key=lambda i: row_ids[i],
        process=process,
        out_dir=out_dir,
        shard_size=config.shard_size,
        fingerprint=fingerprint,
        restart=config.restart,
        desc="vps rollouts",
    )
    wall = time.perf_counter() - began
    table = vps_table(rollouts, dataset_ref, checkpoint_ref)
    stats = summarise(table)
    stats |= {
        "rollouts_generated": float(timing.rollouts),
        "rollouts_per_s": timing.rollouts / wall if timing.rollouts and wall > 0 else 0.0,
        "tokens_per_s": timing.tokens / timing.generate_s if timing.generate_s > 0 else 0.0,
        "generate_s": timing.generate_s,
        "score_s": timing.score_s,
        "wall_s": wall,
    }
    return VPSEstimate(table=table, rollouts=rollouts, stats=stats)


def vps_table(rollouts: pl.DataFrame, dataset_ref: str, checkpoint_ref: str) -> pl.DataFrame:
    """One row per prompt (first-seen order) from per-rollout rows."""
    return (
        rollouts.group_by("prompt_id", maintain_order=True)
        .agg(
            pl.col("pass_rate").first(),
            pl.col("ovs").first(),
            pl.col("tds").first(),
            pl.col("vps").first(),
            pl.len().cast(pl.Int64).alias("n_rollouts"),
            pl.col("n_tokens").mean().cast(pl.Float64).alias("mean_tokens"),
            (pl.col("finish_reason") == "length").mean().cast(pl.Float64).alias("truncated_frac"),
        )
        .with_columns(
            pl.lit(checkpoint_ref, dtype=pl.String).alias("checkpoint_ref"),
            pl.lit(dataset_ref, dtype=pl.String).alias("dataset_ref"),
        )
        .select(list(VPS_TABLE_SCHEMA))
        .cast(VPS_TABLE_SCHEMA)
    )


def summarise(table: pl.DataFrame) -> dict[str, float]:
    """Headline statistics of a VPS table (all floats, MLflow-ready)."""
    if table.is_empty():
        return {"prompts": 0.0}
    p = table["pass_rate"]
    vps = table["vps"]
    quantiles = {f"vps_p{q}": float(vps.quantile(q / 100, "nearest") or 0.0) for q in (10, 50, 90)}
    return {
        "prompts": float(table.height),
        "pass_rate_mean": float(p.mean() or 0.0),
        "frac_p0": float((p == 0.0).mean() or 0.0),
        "frac_p1": float((p == 1.0).mean() or 0.0),
        "frac_zero_variance": float(((p == 0.0) | (p == 1.0)).mean() or 0.0),
        "vps_mean": float(vps.mean() or 0.0),
        "vps_std": float(vps.std() or 0.0) if table.height > 1 else 0.0,
        "ovs_mean": float(table["ovs"].mean() or 0.0),
        "tds_mean": float(table["tds"].mean() or 0.0),
        "mean_tokens": float(table["mean_tokens"].mean() or 0.0),
        "truncated_frac": float(table["truncated_frac"].mean() or 0.0),
        **quantiles,
    }


def read_pool_frame(path: Path, limit: int | None = None) -> pl.DataFrame:
    """An RL pool written by ``write_rl_dataset`` as a frame keyed by ``row_id``."""
    from mmr1.data.io import parquet_files

    files = parquet_files(Path(path))
    frame = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    if "id" not in frame.columns:
        raise ValueError(f"{path}: not an RL pool (no 'id' column; columns {frame.columns})")
    frame = frame.rename({"id": "row_id"})
    return frame.head(limit) if limit is not None else frame


def read_vps_table(path: Path) -> pl.DataFrame:
    """A VPS table directory (or its parquet file), checked against the schema."""
    path = Path(path)
    file = path / VPS_TABLE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no VPS table at {file}")
    table = pl.read_parquet(file)
    missing = set(VPS_TABLE_SCHEMA) - set(table.columns)
    if missing:
        raise ValueError(f"{file}: not a VPS table, lacks columns {sorted(missing)}")
    return table


def write_vps_table(estimate: VPSEstimate, out_dir: Path) -> int:
    """Write ``vps.parquet`` and ``rollouts.parquet`` into ``out_dir``; returns the row count."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    estimate.table.write_parquet(out_dir / VPS_TABLE_FILE, compression="zstd", statistics=False)
    estimate.rollouts.write_parquet(out_dir / ROLLOUTS_FILE, compression="zstd", statistics=False)
    return estimate.table.height


def text_histogram(values: Sequence[float], bins: int = 10, width: int = 40) -> str:
    """A terminal histogram of values in [0, 1]: one line per bin with a bar and a count."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    counts = [0] * bins
    for value in values:
        if math.isnan(value):
            continue
        counts[min(bins - 1, max(0, int(value * bins)))] += 1
    top = max(counts) or 1
    lines = []
    for i, count in enumerate(counts):
        lo, hi = i / bins, (i + 1) / bins
        bar = "#" * round(width * count / top)
        closing = "]" if i == bins - 1 else ")"
        lines.append(f"[{lo:.2f}, {hi:.2f}{closing} {bar:<{width}} {count}")
    return "\n".join(lines)
