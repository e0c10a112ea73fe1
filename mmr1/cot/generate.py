"""Long-CoT generation with rejection sampling (docs/METHOD.md sections 2-3).

For every question, a teacher writes a chain of thought ending in
``<answer>\\boxed{...}</answer>``; a CoT is accepted only if (a) its final
answer verifies against the ground truth (accuracy 1, shared verifier), (b)
the format contract holds (format 1), and (c) the optional filters pass:
``min_chars <= len(cot) <= max_chars`` and ``repetition_penalty >= max_repetition``.

Model teacher, in rounds ``r = 0 .. max_attempts - 1``: round ``r`` samples one
answer for every still-unresolved question of the shard with seed
``derive_seed(seed, "cot", shard, r)``; the first accepted sample wins and its
question leaves the pool, so a resolved question is never asked again. A
question still unresolved after ``max_attempts`` rounds is quarantined
``cot_rejected`` with a tally of why its samples failed. Synthetic teacher: the
programmatic trace, judged once (``attempts`` = 1).

The per-shard rejection loop is the unit of :func:`~mmr1.data.shards.run_sharded`:
a killed run resumes at the first unfinished shard, and since every seed
derives from (seed, shard, round), the result equals an uninterrupted run's.
A caller streaming more rows than fit in memory computes :func:`cot_plan` over
all row ids once and calls :func:`generate_cot` on groups of whole shards
(:func:`~mmr1.data.shards.shard_groups`) with that plan: same shards, same seeds.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mmr1.cot.teacher import TeacherSolution, synthetic_solution
from mmr1.data.frame import QUARANTINE_SCHEMA, StepResult, ensure_raw_schema
from mmr1.data.requests import backend_identity, build_requests
from mmr1.data.shards import (
    ShardPlan,
    derive_seed,
    run_shard_group,
    run_sharded,
    step_fingerprint,
)
from mmr1.generation import GenerationBackend
from mmr1.prompts import training_prompt
from mmr1.rewards import score_batch
from schemas.curation import CoTConfig, ExistingTeacher, ModelTeacher
from schemas.records import ChatTurn, ImageData, SFTRecord
from schemas.rewards import RewardConfig
from schemas.synthetic import SyntheticConfig

logger = logging.getLogger(__name__)

KEPT_COLUMNS = (
    "row_id",
    "source",
    "source_row_id",
    "problem",
    "answer",
    "images",
    "choices",
    "type",
    "response",
    "attempts",
    "problem_is_prompt",
)
#: What a shard writes: one row per question.
OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    "status": pl.String(),  # "accepted", "cot_rejected" or "no_teacher_solution"
    "response": pl.String(),
    "attempts": pl.Int64(),
    "detail": pl.String(),
}
ACCEPTED = "accepted"


# ------------------------------------------------------------------ judging


def judge_cots(
    responses: Sequence[str],
    golds: Sequence[str],
    choices: Sequence[Sequence[str] | None],
    config: CoTConfig,
    rewards: RewardConfig,
) -> list[str | None]:
    """None for an acceptable CoT, else the first reason it fails.

    Reasons, checked in this order: ``verify timeout``, ``wrong answer``,
    ``bad format``, ``too short``, ``too long``, ``repetitive``.
    """
    scores = score_batch(responses, golds, choices, config=rewards)
    verdicts: list[str | None] = []
    for text, score in zip(responses, scores, strict=True):
        if score.timed_out:
            verdicts.append("verify timeout")
        elif score.accuracy != 1.0:
            verdicts.append("wrong answer")
        elif score.format != 1.0:
            verdicts.append("bad format")
        elif len(text) < config.min_chars:
            verdicts.append("too short")
        elif config.max_chars is not None and len(text) > config.max_chars:
            verdicts.append("too long")
        elif config.max_repetition is not None and score.repetition < config.max_repetition:
            verdicts.append("repetitive")
        else:
            verdicts.append(None)
    return verdicts


def describe_attempts(attempts: int, tally: Counter[str]) -> str:
    """E.g. ``"4 attempts: 3 wrong answer, 1 bad format"`` (most frequent first)."""
    parts = ", ".join(f"{n} {why}" for why, n in sorted(tally.items(), key=lambda t: (-t[1], t[0])))
    return f"{attempts} attempt{'s' if attempts != 1 else ''}: {parts}"


@dataclass
class _Question:
    row_id: str
    answer: str
    choices: list[str] | None
    attempts: int = 0
    response: str | None = None
    tally: Counter[str] = field(default_factory=Counter)


# ------------------------------------------------------------------ shards


def _outcomes(questions: Sequence[_Question], status_missing: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row_id": [q.row_id for q in questions],
            "status": [ACCEPTED if q.response is not None else status_missing for q in questions],
            "response": [q.response for q in questions],
            "attempts": [q.attempts for q in questions],
            "detail": [
                None if q.response is not None else describe_attempts(q.attempts, q.tally)
                for q in questions
            ],
        },
        schema=OUTCOME_SCHEMA,
    )


def _model_shard(
    rows: pl.DataFrame,
    shard: int,
    backend: GenerationBackend,
    config: CoTConfig,
    system: str | None,
    seed: int,
    rewards: RewardConfig,
) -> pl.DataFrame:
    """The rejection loop over one shard: round r re-asks only unresolved questions."""
    requests = build_requests(rows, system)
    questions = [
        _Question(r["row_id"], r["answer"], r["choices"])
        for r in rows.select("row_id", "answer", "choices").iter_rows(named=True)
    ]
    pending = list(range(len(questions)))
    for round_index in range(config.max_attempts):
        if not pending:
            break
        sampling = config.sampling.model_copy(
            update={
                "n": 1,
                "seed": derive_seed(seed, "cot", shard, round_index),
                "return_logprobs": False,
            }
        )
        completions = backend.generate([requests[i] for i in pending], sampling)
        texts = [c.samples[0].text if c.samples else "" for c in completions]
        verdicts = judge_cots(
            texts,
            [questions[i].answer for i in pending],
            [questions[i].choices for i in pending],
            config,
            rewards,
        )
        still = []
        for i, text, verdict in zip(pending, texts, verdicts, strict=True):
            question = questions[i]
            question.attempts += 1
            if verdict is None:
                question.response = text
            else:
                question.tally[verdict] += 1
                still.append(i)
        logger.debug(
            "cot shard %d round %d: %d asked, %d accepted",
            shard,
            round_index,
            len(pending),
            len(pending) - len(still),
        )
        pending = still
    return _outcomes(questions, "cot_rejected")


def _synthetic_shard(
    rows: pl.DataFrame,
    config: CoTConfig,
    templates: Mapping[str, SyntheticConfig] | None,
    rewards: RewardConfig,
) -> pl.DataFrame:
    """The programmatic solver: deterministic, so one attempt per question."""
    records = rows.select(
        "row_id", "source", "source_row_id", "problem", "answer", "choices"
    ).to_dicts()
    solutions = [synthetic_solution(r, templates) for r in records]
    return _judged_once(records, solutions, config, rewards)


def _existing_shard(rows: pl.DataFrame, config: CoTConfig, rewards: RewardConfig) -> pl.DataFrame:
    """The data's own chains of thought (``response``), judged once like generated ones."""
    records = rows.select("row_id", "answer", "choices", "response").to_dicts()
    missing = (
        "the row has no chain of thought: teacher 'existing' keeps the gpt turn of a source in "
        "the sharegpt layout (conversations), and this row came from another layout"
    )
    solutions = [TeacherSolution(r["response"], "" if r["response"] else missing) for r in records]
    return _judged_once(records, solutions, config, rewards)


def _judged_once(
    records: Sequence[Mapping[str, Any]],
    solutions: Sequence[TeacherSolution],
    config: CoTConfig,
    rewards: RewardConfig,
) -> pl.DataFrame:
    """Outcomes of one CoT per question (or none, with the reason in the solution)."""
    solved = [i for i, s in enumerate(solutions) if s.trace is not None]
    verdicts = judge_cots(
        [solutions[i].trace or "" for i in solved],
        [records[i]["answer"] for i in solved],
        [records[i]["choices"] for i in solved],
        config,
        rewards,
    )
    verdict_of = dict(zip(solved, verdicts, strict=True))
    statuses, responses, attempts, details = [], [], [], []
    for i, solution in enumerate(solutions):
        if solution.trace is None:
            statuses.append("no_teacher_solution")
            responses.append(None)
            attempts.append(0)
            details.append(solution.detail)
            continue
        verdict = verdict_of[i]
        attempts.append(1)
        if verdict is None:
            statuses.append(ACCEPTED)
            responses.append(solution.trace)
            details.append(None)
        else:
            statuses.append("cot_rejected")
            responses.append(None)
            details.append(describe_attempts(1, Counter({verdict: 1})))
    return pl.DataFrame(
        {
            "row_id": [r["row_id"] for r in records],
            "status": statuses,
            "response": responses,
            "attempts": attempts,
            "detail": details,
        },
        schema=OUTCOME_SCHEMA,
    )


# ------------------------------------------------------------------ entry point


def _cot_params(
    config: CoTConfig,
    seed: int,
    backend: GenerationBackend | None,
    rewards: RewardConfig,
    synthetic_configs: Mapping[str, SyntheticConfig] | None,
) -> dict[str, object]:
    """The parameters that identify a CoT run (its shards' fingerprint)."""
    teacher = config.teacher
    params: dict[str, object] = {
        "step": "cot",
        "config": config.model_dump(mode="json", exclude={"shard_size", "teacher"}),
        "teacher": teacher.kind,
        "seed": seed,
        "rewards": rewards.model_dump(exclude={"num_workers"}),
    }
    if isinstance(teacher, ModelTeacher):
        if backend is None:
            raise ValueError(
                "generate_cot: config.teacher is a model teacher; pass backend= (e.g. "
                "mmr1.generation.get_backend(config.teacher.backend))"
            )
        params["backend"] = backend_identity(backend)
        params["system"] = teacher.system
    else:
        params["synthetic_configs"] = {
            name: cfg.model_dump(mode="json")
            for name, cfg in sorted((synthetic_configs or {}).items())
        }
    return params


def cot_plan(
    row_ids: Iterable[str],
    config: CoTConfig,
    seed: int,
    *,
    backend: GenerationBackend | None = None,
    rewards: RewardConfig | None = None,
    synthetic_configs: Mapping[str, SyntheticConfig] | None = None,
) -> ShardPlan:
    """The shard plan of a CoT run over rows with these ids (in order; read once)."""
    params = _cot_params(config, seed, backend, rewards or RewardConfig(), synthetic_configs)
    return ShardPlan.of(params, row_ids, config.shard_size)


def generate_cot(
    frame: pl.DataFrame,
    config: CoTConfig,
    out_dir: Path,
    seed: int,
    *,
    backend: GenerationBackend | None = None,
    rewards: RewardConfig | None = None,
    synthetic_configs: Mapping[str, SyntheticConfig] | None = None,
    restart: bool = False,
    plan: ShardPlan | None = None,
) -> StepResult:
    """One verified long CoT per question, or a quarantined row saying why not.

    Args:
        frame: curation rows (``row_id``, ``source``, ``source_row_id``,
            ``problem``, ``answer``, ``images``, ``choices``, ``type``).
        config: teacher, attempts, sampling and filters.
        out_dir: shard directory (resumable; see :mod:`mmr1.data.shards`).
        seed: base seed; round ``r`` of shard ``s`` uses ``derive_seed(seed, "cot", s, r)``.
        backend: the model teacher's backend, built by the caller from
            ``config.teacher.backend`` (required for a ``ModelTeacher``, ignored
            for the synthetic one). Not closed here.
        rewards: verification deadline and workers (default ``RewardConfig()``).
        synthetic_configs: source name -> the ``SyntheticConfig`` it was generated
            with, for the synthetic teacher (default distribution otherwise).
        restart: clear ``out_dir``'s shards first.
        plan: :func:`cot_plan` of the whole run when ``frame`` is one group of
            whole shards of it (positioned at its first shard); None: ``frame``
            is the whole run.

    Returns:
        ``kept``: one row per accepted question with ``KEPT_COLUMNS``;
        ``quarantined``: ``cot_rejected`` (detail like "4 attempts: 3 wrong
        answer, 1 bad format") and ``no_teacher_solution`` rows.
    """
    rewards = rewards or RewardConfig()
    frame = _with_chat_columns(ensure_raw_schema(frame))
    params = _cot_params(config, seed, backend, rewards, synthetic_configs)
    row_ids = frame["row_id"].to_list()

    def process(indices: Sequence[int], shard: int) -> pl.DataFrame:
        rows = frame[list(indices)]
        return _teacher_shard(rows, shard, config, seed, backend, rewards, synthetic_configs)

    outcomes = _sharded_outcomes(row_ids, process, out_dir, config, params, plan, restart)
    result = _split_outcomes(frame, outcomes)
    logger.info("long CoT: accepted %d, quarantined %s", result.kept.height, result.reasons())
    return result


def _sharded_outcomes(
    row_ids: list[str],
    process: Callable[[Sequence[int], int], pl.DataFrame],
    out_dir: Path,
    config: CoTConfig,
    params: Mapping[str, object],
    plan: ShardPlan | None,
    restart: bool,
) -> pl.DataFrame:
    """Outcomes of the rows (by position), resumably: the whole run, or ``plan``'s group."""
    indices = list(range(len(row_ids)))
    if plan is None:
        return run_sharded(
            indices,
            key=lambda i: row_ids[i],
            process=process,
            out_dir=out_dir,
            shard_size=config.shard_size,
            fingerprint=step_fingerprint(params, row_ids),
            restart=restart,
            desc="long CoT",
        )
    if plan.shard_size != config.shard_size:
        raise ValueError(
            f"generate_cot: plan has shards of {plan.shard_size}, config {config.shard_size}"
        )
    return run_shard_group(
        indices, row_ids, process, out_dir, plan, restart=restart, desc="long CoT"
    )


def _teacher_shard(
    rows: pl.DataFrame,
    shard: int,
    config: CoTConfig,
    seed: int,
    backend: GenerationBackend | None,
    rewards: RewardConfig,
    synthetic_configs: Mapping[str, SyntheticConfig] | None,
) -> pl.DataFrame:
    """Outcomes of shard ``shard`` (:data:`OUTCOME_SCHEMA`) from the configured teacher."""
    teacher = config.teacher
    if rows.is_empty():
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    if isinstance(teacher, ModelTeacher):
        assert backend is not None
        return _model_shard(rows, shard, backend, config, teacher.system, seed, rewards)
    if isinstance(teacher, ExistingTeacher):
        return _existing_shard(rows, config, rewards)
    return _synthetic_shard(rows, config, synthetic_configs, rewards)


def _split_outcomes(frame: pl.DataFrame, outcomes: pl.DataFrame) -> StepResult:
    """Rows with an accepted CoT kept (``KEPT_COLUMNS``), the others quarantined with its status."""
    joined = frame.drop("response").join(outcomes, on="row_id", how="left", maintain_order="left")
    kept = joined.filter(pl.col("status") == ACCEPTED).select(KEPT_COLUMNS)
    quarantined = (
        joined.filter(pl.col("status") != ACCEPTED)
        .select(
            pl.col("source"),
            pl.col("source_row_id"),
            pl.col("status").alias("reason"),
            pl.col("detail"),
            pl.lit(None, dtype=pl.String).alias("duplicate_of"),
        )
        .cast(QUARANTINE_SCHEMA)
    )
    return StepResult(kept=kept, quarantined=quarantined)


def _with_chat_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the ShareGPT columns (``response``, ``problem_is_prompt``) as nulls where missing."""
    missing = {"response": pl.String, "problem_is_prompt": pl.Boolean}
    return frame.with_columns(
        pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in missing.items()
        if name not in frame.columns
    )


def to_sft_records(kept: pl.DataFrame) -> list[SFTRecord]:
    """MMR1-SFT rows from :func:`generate_cot`'s kept frame (id = ``row_id``).

    The human turn is ``training_prompt(problem, choices)``, or the problem itself
    when it already is the whole user turn (``problem_is_prompt``: a ShareGPT
    source); the gpt turn is the accepted CoT. Write them with
    :func:`mmr1.data.io.write_sft_dataset`.
    """
    return list(iter_sft_records([kept]))


def iter_sft_records(frames: Iterable[pl.DataFrame]) -> Iterator[SFTRecord]:
    """:func:`to_sft_records` of a stream of kept frames, one record at a time."""
    columns = (
        "row_id",
        "problem",
        "choices",
        "response",
        "images",
        "answer",
        "type",
        "source",
        "problem_is_prompt",
    )
    for kept in frames:
        for row in _with_chat_columns(kept).select(columns).iter_rows(named=True):
            human = (
                row["problem"]
                if row["problem_is_prompt"]
                else training_prompt(row["problem"], row["choices"])
            )
            yield SFTRecord(
                id=row["row_id"],
                conversations=[
                    ChatTurn.model_validate({"from": "human", "value": human}),
                    ChatTurn.model_validate({"from": "gpt", "value": row["response"]}),
                ],
                images=[ImageData(**image) for image in row["images"] or []],
                answer=row["answer"],
                type=row["type"] or "unknown",
                source=row["source"] or "unknown",
            )
