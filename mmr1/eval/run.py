"""Evaluate one model on one benchmark: resumable generation, then scoring.

:func:`evaluate_benchmark` is the library half of the ``evaluate`` flow:

1. **Generate** (expensive, resumable). Items are cut into fixed shards by
   position and run through :func:`mmr1.data.shards.run_sharded`; shard ``s``
   samples with ``derive_seed(seed, "eval", s)``, so a run that was killed and
   restarted produces what an uninterrupted run would. A shard file holds the
   raw generations only (``item_id``, ``response``, ``n_tokens``,
   ``finish_reason``, and the ``k`` sampled answers of ``samples`` when given).
2. **Score** (cheap, always redone). Every response is scored by the adapter's
   official rule (or by an LLM judge), so a fix to a scorer changes the
   numbers on the next run without regenerating anything.

Besides the greedy answer, an item can get ``k`` sampled answers (``samples``
with ``n = k``, temperature > 0; shard ``s`` samples with
``derive_seed(seed, "eval-sampled", s)``). Their per-item correctness goes to
the predictions (``sampled_correct``), from which ``mmr1.eval.significance``
derives sampled accuracy, intervals and paired tests: a greedy answer is one
coin flip per item, k samples measure how often the model is right.

Scoring runs inline (``score_workers=0``) or in a
:class:`~mmr1.rewards.pool.DeadlinePool` of worker processes. Inline is the
fast path (about 1,600 mixed items/s on one core, ``bench/bench_eval.py``),
but only the main thread can bound math-verify with its ``signal.alarm``
timeouts, and SymPy can stall in C code where no signal reaches it; in a
Prefect task thread an adversarial answer could then hang the run. Workers
are killed at a per-item deadline by the parent, which makes the bound hold
anywhere; an item that misses it is scored wrong and flagged ``timed_out``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mmr1.data.requests import backend_identity
from mmr1.data.shards import derive_seed, run_sharded, step_fingerprint
from mmr1.eval.benchmarks import BenchmarkAdapter, get_adapter
from mmr1.eval.judge import judge_scores
from mmr1.generation import GenerationBackend
from mmr1.rewards.pool import DeadlinePool, TaskOutcome, WorkerStartError
from schemas.eval import EvalItem, ItemScore
from schemas.generation import Completion, CompletionSample, SamplingParams

logger = logging.getLogger(__name__)

#: One row per item in a generation shard.
GENERATION_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "response": pl.String(),
    "n_tokens": pl.Int64(),
    "finish_reason": pl.String(),
    "sampled_responses": pl.List(pl.String()),
    "sampled_n_tokens": pl.List(pl.Int64()),
    "sampled_finish_reasons": pl.List(pl.String()),
}

#: One row per item in the predictions file of an evaluation. ``sampled_*`` hold the
#: k sampled answers (empty lists when the evaluation took none).
PREDICTIONS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "response": pl.String(),
    "extracted": pl.String(),
    "correct": pl.Boolean(),
    "scorer": pl.String(),
    "timed_out": pl.Boolean(),
    "n_tokens": pl.Int64(),
    "finish_reason": pl.String(),
    "gold": pl.String(),
    "tags": pl.String(),
    "sampled_responses": pl.List(pl.String()),
    "sampled_correct": pl.List(pl.Boolean()),
}

PREDICTIONS_FILE = "predictions.parquet"


@dataclass
class BenchmarkRun:
    """What :func:`evaluate_benchmark` returns."""

    predictions: pl.DataFrame
    """One row per item, in item order (:data:`PREDICTIONS_SCHEMA`)."""
    scores: list[ItemScore]
    """One score per item, in item order (what ``adapter.aggregate`` takes)."""
    stats: dict[str, float] = field(default_factory=dict)
    """Throughput and length figures: ``generate_s``, ``score_s``, ``mean_tokens``, ..."""


# ----------------------------------------------------------------------- scoring

_WORKER_ADAPTERS: dict[str, BenchmarkAdapter] = {}


def score_task(benchmark: str, item: EvalItem, response: str) -> ItemScore:
    """What a scoring worker runs for one item (top-level so it pickles by reference)."""
    adapter = _WORKER_ADAPTERS.get(benchmark)
    if adapter is None:
        adapter = _WORKER_ADAPTERS[benchmark] = get_adapter(benchmark)
    return adapter.score(item, response)


def _from_outcome(item: EvalItem, outcome: TaskOutcome) -> tuple[ItemScore, bool]:
    """A worker's score, or a wrong one when it timed out, crashed or raised."""
    if outcome.status == "ok":
        return outcome.value, False
    timed_out = outcome.status == "timeout"
    if not timed_out:
        logger.warning(
            "scoring item %s: %s %s", item.item_id, outcome.status, outcome.error or "(no detail)"
        )
    wrong = ItemScore(item_id=item.item_id, correct=False, extracted="", scorer="rule")
    return wrong, timed_out


def score_responses(
    adapter: BenchmarkAdapter,
    items: Sequence[EvalItem],
    responses: Sequence[str],
    *,
    workers: int = 0,
    timeout_s: float = 10.0,
) -> tuple[list[ItemScore], list[bool]]:
    """Rule-based score of ``responses[i]`` for ``items[i]``, and whether each timed out.

    ``workers=0`` scores in the calling thread (no deadline outside the main
    thread); ``workers>0`` scores in that many worker processes, each item
    under a ``timeout_s`` wall-clock deadline (a missed deadline scores wrong).
    Items travel to the workers without their images, which scorers never read.
    """
    if len(items) != len(responses):
        raise ValueError(f"{len(items)} items but {len(responses)} responses")
    no_timeouts = [False] * len(items)
    if workers <= 0 or not items:
        pairs = zip(items, responses, strict=True)
        return [adapter.score(item, response) for item, response in pairs], no_timeouts
    jobs = [
        (adapter.name, item.model_copy(update={"images": []}), response)
        for item, response in zip(items, responses, strict=True)
    ]
    try:
        with DeadlinePool(score_task, workers, preload=("mmr1.eval.run",)) as pool:
            outcomes: list[TaskOutcome | None] = list(pool.map(jobs, timeout_s))
    except WorkerStartError as exc:
        # No worker could start (no POSIX pipes, a broken interpreter, a crowded machine):
        # score what the workers did not in this process, without per-item deadlines.
        logger.warning("scoring workers unavailable (%s): scoring in this process", exc)
        outcomes = list(exc.outcomes) or [None] * len(jobs)
    for i, outcome in enumerate(outcomes):
        if outcome is None:
            outcomes[i] = TaskOutcome("ok", adapter.score(items[i], responses[i]))
    scored = [
        _from_outcome(item, o) for item, o in zip(items, outcomes, strict=True) if o is not None
    ]
    return [score for score, _ in scored], [timed_out for _, timed_out in scored]


# ----------------------------------------------------------------------- generation


def _n_tokens(sample: CompletionSample) -> int:
    return len(sample.token_ids) if sample.token_ids else len(sample.text.split())


def _generation_frame(
    items: Sequence[EvalItem],
    completions: Sequence[Completion],
    sampled: Sequence[Completion] | None,
    k: int,
    backend_name: str,
) -> pl.DataFrame:
    """One row per item: the greedy answer and, when ``sampled`` is given, its k samples."""
    columns: dict[str, list[Any]] = {name: [] for name in GENERATION_SCHEMA}
    extra = sampled if sampled is not None else [None] * len(items)
    for item, completion, samples in zip(items, completions, extra, strict=True):
        if not completion.samples:
            raise RuntimeError(f"backend {backend_name!r} returned no sample for {item.item_id!r}")
        sample = completion.samples[0]
        columns["item_id"].append(item.item_id)
        columns["response"].append(sample.text)
        columns["n_tokens"].append(_n_tokens(sample))
        columns["finish_reason"].append(sample.finish_reason)
        drawn = samples.samples if samples is not None else []
        if samples is not None and len(drawn) != k:
            raise RuntimeError(
                f"backend {backend_name!r} returned {len(drawn)} samples for {item.item_id!r}, "
                f"not {k}"
            )
        columns["sampled_responses"].append([s.text for s in drawn])
        columns["sampled_n_tokens"].append([_n_tokens(s) for s in drawn])
        columns["sampled_finish_reasons"].append([s.finish_reason for s in drawn])
    return pl.DataFrame(columns, schema=GENERATION_SCHEMA)


@dataclass
class _ShardGeneration:
    """``process`` of the generation shards: shard ``s``'s greedy answers and k samples.

    ``generate_s`` and ``generated`` add up the time spent and the items
    generated in this run (shards reused from disk add nothing).
    """

    adapter: BenchmarkAdapter
    backend: GenerationBackend
    sampling: SamplingParams
    samples: SamplingParams | None
    prompt_style: str
    seed: int
    backend_name: str
    generate_s: float = 0.0
    generated: int = 0

    def __post_init__(self) -> None:
        if self.sampling.n != 1:
            raise ValueError(
                f"evaluation takes one answer per item; sampling.n is {self.sampling.n}"
            )
        if self.samples is not None and self.samples.temperature <= 0:
            raise ValueError("sampled answers need a temperature > 0 (k greedy answers are equal)")

    def __call__(self, shard_items: Sequence[EvalItem], shard: int) -> pl.DataFrame:
        """The generation frame of one shard (:data:`GENERATION_SCHEMA`)."""
        if not shard_items:
            return pl.DataFrame(schema=GENERATION_SCHEMA)
        requests = [self.adapter.build_request(item, self.prompt_style) for item in shard_items]
        shard_sampling = self.sampling.model_copy(
            update={"seed": derive_seed(self.seed, "eval", shard)}
        )
        began = time.perf_counter()
        completions = self.backend.generate(requests, shard_sampling)
        drawn = None
        if self.samples is not None:
            shard_samples = self.samples.model_copy(
                update={"seed": derive_seed(self.seed, "eval-sampled", shard)}
            )
            drawn = self.backend.generate(requests, shard_samples)
        self.generate_s += time.perf_counter() - began
        self.generated += len(shard_items)
        return _generation_frame(shard_items, completions, drawn, self.k, self.backend_name)

    @property
    def k(self) -> int:
        """Sampled answers per item (0: greedy only)."""
        return self.samples.n if self.samples is not None else 0

    def fingerprint(
        self, identity: Mapping[str, Any], extras: Mapping[str, Any] | None, ids: Sequence[str]
    ) -> str:
        """The shards' identity: everything that changes a generation, and the item ids."""
        return step_fingerprint(
            {
                "step": "eval",
                "benchmark": self.adapter.name,
                "prompt_style": self.prompt_style,
                "sampling": self.sampling.model_dump(mode="json", exclude={"seed"}),
                "samples": (
                    self.samples.model_dump(mode="json", exclude={"seed"}) if self.samples else None
                ),
                "seed": self.seed,
                "backend": identity,
                **dict(extras or {}),
            },
            ids,
        )


def _generate_all(
    items: Sequence[EvalItem],
    generate: _ShardGeneration,
    out_dir: Path,
    shard_size: int,
    fingerprint: str,
    restart: bool,
) -> pl.DataFrame:
    """The generation frame of all ``items`` in item order, reusing the finished shards."""
    generations = run_sharded(
        list(items),
        key=lambda item: item.item_id,
        process=generate,
        out_dir=out_dir,
        shard_size=shard_size,
        fingerprint=fingerprint,
        restart=restart,
        desc=f"eval {generate.adapter.name}",
    )
    if generations["item_id"].to_list() != [item.item_id for item in items]:
        raise RuntimeError(f"{out_dir}: the generation shards do not line up with the items")
    return generations


def _score_generations(
    items: Sequence[EvalItem],
    generations: pl.DataFrame,
    k: int,
    adapter: BenchmarkAdapter,
    judge: GenerationBackend | None,
    workers: int,
    timeout_s: float,
) -> tuple[list[ItemScore], list[bool]]:
    """Scores and timeouts of the greedy answers, then of item i's k samples at n + i * k + j."""
    # One scoring pass over the greedy answers and all the samples.
    responses = generations["response"].to_list()
    responses += [text for row in generations["sampled_responses"].to_list() for text in row]
    all_items = list(items) + [item for item in items for _ in range(k)]
    if judge is not None:
        return judge_scores(adapter.name, all_items, responses, judge), [False] * len(all_items)
    return score_responses(adapter, all_items, responses, workers=workers, timeout_s=timeout_s)


def _predictions_frame(
    items: Sequence[EvalItem],
    generations: pl.DataFrame,
    all_scores: Sequence[ItemScore],
    all_timed_out: Sequence[bool],
    k: int,
) -> pl.DataFrame:
    """The predictions (:data:`PREDICTIONS_SCHEMA`): generations with their greedy scores,
    gold answers, tags and the correctness of each item's k samples."""
    n_items = len(items)
    scores, timed_out = all_scores[:n_items], all_timed_out[:n_items]
    sampled_correct = [
        [s.correct for s in all_scores[n_items + i * k : n_items + (i + 1) * k]]
        for i in range(n_items)
    ]
    return generations.with_columns(
        pl.Series("extracted", [s.extracted for s in scores], dtype=pl.String),
        pl.Series("correct", [s.correct for s in scores], dtype=pl.Boolean),
        pl.Series("scorer", [s.scorer for s in scores], dtype=pl.String),
        pl.Series("timed_out", timed_out, dtype=pl.Boolean),
        pl.Series("gold", [item.answer for item in items], dtype=pl.String),
        pl.Series("tags", [json.dumps(item.tags, sort_keys=True) for item in items]),
        pl.Series("sampled_correct", sampled_correct, dtype=pl.List(pl.Boolean())),
    ).select(list(PREDICTIONS_SCHEMA))


def _run_stats(
    predictions: pl.DataFrame,
    generations: pl.DataFrame,
    generate: _ShardGeneration,
    score_s: float,
    wall_s: float,
    timed_out: Sequence[bool],
) -> dict[str, float]:
    """Throughput and length figures of a run (``BenchmarkRun.stats``)."""
    items = predictions.height
    n, k = max(items, 1), generate.k
    stats = {
        "items": float(items),
        "generated": float(generate.generated),
        "reused": float(items) - generate.generated,
        "generate_s": generate.generate_s,
        "score_s": score_s,
        "wall_s": wall_s,
        "mean_tokens": float(predictions["n_tokens"].sum()) / n,
        "truncated_frac": float((predictions["finish_reason"] == "length").sum()) / n,
        "timed_out": float(sum(timed_out)),
    }
    if k:
        sampled_tokens = generations["sampled_n_tokens"].explode()
        stats["sampled_mean_tokens"] = float(sampled_tokens.sum()) / (n * k)
        reasons = generations["sampled_finish_reasons"].explode()
        stats["sampled_truncated_frac"] = float((reasons == "length").sum()) / (n * k)
    return stats


def evaluate_benchmark(
    items: Sequence[EvalItem],
    adapter: BenchmarkAdapter,
    backend: GenerationBackend,
    sampling: SamplingParams,
    out_dir: Path,
    *,
    prompt_style: str = "mmr1",
    shard_size: int = 64,
    seed: int = 0,
    restart: bool = False,
    fingerprint_extras: Mapping[str, Any] | None = None,
    checkpoint_hash: str | None = None,
    score_workers: int = 0,
    score_timeout_s: float = 10.0,
    judge: GenerationBackend | None = None,
    samples: SamplingParams | None = None,
) -> BenchmarkRun:
    """Generate one answer per item (and k samples) with ``backend``, resumably; score all.

    Args:
        items: the benchmark items (``adapter.load``), in a fixed order.
        adapter: builds each request (``prompt_style``) and scores each response.
        backend: the model under evaluation; ``sampling.n`` must be 1.
        sampling: decoding settings; its seed is replaced per shard.
        out_dir: where the generation shards and their manifest live. A rerun
            with the same identity reuses the finished shards; another
            identity is refused (``ShardManifestError``) unless ``restart``.
        prompt_style: ``mmr1`` or ``official`` (see ``BenchmarkSpec``).
        shard_size: items per resumable shard.
        seed: base seed of the shard seeds.
        restart: discard the shards in ``out_dir`` first.
        fingerprint_extras: more identity for the shards (checkpoint ref, data
            source): anything that changes the generations.
        checkpoint_hash: the evaluated checkpoint's content hash; it identifies
            the model instead of the directory the backend loads it from, so a
            moved home keeps its shards (``backend_identity``).
        score_workers: 0 scores inline, N > 0 in N worker processes (module doc).
        score_timeout_s: per-item scoring deadline with workers.
        judge: when given, the LLM judge (:func:`mmr1.eval.judge.judge_scores`)
            scores instead of the rule (only for benchmarks that have one).
        samples: when given, ``samples.n`` (k) more answers per item with these
            settings (temperature > 0), scored like the greedy one into the
            ``sampled_correct`` column; its seed is replaced per shard.

    Returns:
        The predictions frame, the item scores (item order) and run figures.
    """
    ids = [item.item_id for item in items]
    identity = backend_identity(backend, checkpoint_hash)
    generate = _ShardGeneration(
        adapter, backend, sampling, samples, prompt_style, seed, str(identity["name"])
    )
    began = time.perf_counter()
    fingerprint = generate.fingerprint(identity, fingerprint_extras, ids)
    generations = _generate_all(items, generate, out_dir, shard_size, fingerprint, restart)
    scored_at = time.perf_counter()
    all_scores, all_timed_out = _score_generations(
        items, generations, generate.k, adapter, judge, score_workers, score_timeout_s
    )
    score_s = time.perf_counter() - scored_at
    predictions = _predictions_frame(items, generations, all_scores, all_timed_out, generate.k)
    wall_s = time.perf_counter() - began
    stats = _run_stats(predictions, generations, generate, score_s, wall_s, all_timed_out)
    return BenchmarkRun(predictions=predictions, scores=all_scores[: len(items)], stats=stats)


def write_predictions(predictions: pl.DataFrame, out_dir: Path) -> int:
    """Write ``predictions`` to ``out_dir/predictions.parquet``; return the row count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions.write_parquet(out_dir / PREDICTIONS_FILE, compression="zstd")
    return predictions.height
