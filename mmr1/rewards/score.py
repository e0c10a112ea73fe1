"""Reward of a response: accuracy + format (+ repetition), one or a batch at a time.

    overall = accuracy_weight * accuracy + format_weight * format
              + repetition_weight * repetition

Accuracy is checked on :func:`extract_final_answer` of the response (no answer
-> 0). In :func:`score_batch` the check runs in worker processes of a shared
:class:`~mmr1.rewards.pool.DeadlinePool`, each item under a wall-clock deadline
enforced by this (parent) process: an item that misses it scores accuracy 0
with ``timed_out=True``, and the stuck worker is killed and replaced.
Extraction, format and repetition are linear-time string scans done here.

The pool is started lazily on the first call, reused by later calls (a new
one if ``num_workers`` changes) and shut down at interpreter exit. Calls are
serialised by a lock, so threads may share it. ``num_workers=0`` checks inline
in the calling thread: bounded by math-verify's signal timeouts in the main
thread, unbounded elsewhere.

Workers are started with ``forkserver``/``spawn``, which re-import the main
script in each worker: a script that calls :func:`score_batch` must do so under
``if __name__ == "__main__":`` (as for any ``multiprocessing`` code).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Sequence

from mmr1.rewards.extract import extract_final_answer
from mmr1.rewards.format import format_reward, repetition_penalty
from mmr1.rewards.guards import MAX_ANSWER_CHARS
from mmr1.rewards.pool import DeadlinePool, TaskOutcome
from mmr1.rewards.verify import Verdict, check_answer
from schemas.rewards import RewardConfig, RewardScore

logger = logging.getLogger(__name__)

_POOL: DeadlinePool | None = None
_POOL_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def verify_task(prediction: str, gold: str, choices: list[str] | None, timeout_s: float) -> Verdict:
    """What a worker runs for one item (top-level so it pickles by reference)."""
    return check_answer(prediction, gold, choices, timeout_s=timeout_s)


def shutdown_pool() -> None:
    """Stop the shared verification workers (they restart on the next score_batch)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


def _shared_pool(num_workers: int) -> DeadlinePool:
    """The module's pool with ``num_workers`` workers; call with ``_POOL_LOCK`` held."""
    global _POOL, _ATEXIT_REGISTERED
    if _POOL is not None and (_POOL.num_workers != num_workers or _POOL.owner_pid != os.getpid()):
        _POOL.close()  # close() leaves an inherited (forked) pool's workers alone
        _POOL = None
    if _POOL is None:
        _POOL = DeadlinePool(verify_task, num_workers, preload=("mmr1.rewards.score",))
        if not _ATEXIT_REGISTERED:
            atexit.register(shutdown_pool)
            _ATEXIT_REGISTERED = True
    return _POOL


def _verdict_from(outcome: TaskOutcome) -> Verdict:
    if outcome.status == "ok":
        return outcome.value
    if outcome.status == "timeout":
        return Verdict(False, timed_out=True, rule="deadline")
    logger.warning("answer verification %s: %s", outcome.status, outcome.error or "no detail")
    return Verdict(False, rule=outcome.status)


def _combine(
    response: str, extracted: str | None, verdict: Verdict, config: RewardConfig
) -> RewardScore:
    accuracy = 1.0 if verdict.correct else 0.0
    fmt = format_reward(response)
    repetition = repetition_penalty(response, config.repetition_ngram)
    overall = (
        config.accuracy_weight * accuracy
        + config.format_weight * fmt
        + config.repetition_weight * repetition
    )
    return RewardScore(
        accuracy=accuracy,
        format=fmt,
        repetition=repetition,
        overall=overall,
        timed_out=verdict.timed_out,
        extracted=extracted,
    )


def _aligned_choices(
    choices: Sequence[Sequence[str] | None] | None, n: int
) -> list[list[str] | None]:
    if choices is None:
        return [None] * n
    if len(choices) != n:
        raise ValueError(f"score_batch: got {n} responses but {len(choices)} choices entries")
    return [list(c) if c is not None else None for c in choices]


def score_batch(
    responses: Sequence[str],
    golds: Sequence[str],
    choices: Sequence[Sequence[str] | None] | None = None,
    timeout_s: float | None = None,
    config: RewardConfig | None = None,
) -> list[RewardScore]:
    """Score ``responses[i]`` against ``golds[i]``; results in input order.

    ``choices`` is None or one entry per response (None or that item's option
    texts in letter order). ``timeout_s`` overrides ``config.timeout_s``, the
    per-item deadline measured from when a worker receives the item.
    """
    config = config or RewardConfig()
    deadline = config.timeout_s if timeout_s is None else float(timeout_s)
    if not deadline > 0:
        raise ValueError(f"score_batch: timeout_s must be > 0, got {timeout_s}")
    if len(responses) != len(golds):
        raise ValueError(f"score_batch: got {len(responses)} responses but {len(golds)} golds")
    item_choices = _aligned_choices(choices, len(responses))
    extracted = [extract_final_answer(r) for r in responses]
    verdicts = [Verdict(False, rule="no_answer") for _ in responses]
    # Items with no answer or an over-long one are decided here, without a worker round trip.
    todo = []
    for i, answer in enumerate(extracted):
        if answer is None:
            continue
        if len(answer) > MAX_ANSWER_CHARS:
            verdicts[i] = Verdict(False, rule="guard:too_long")
            continue
        todo.append(i)
    jobs = [(extracted[i], str(golds[i]), item_choices[i], deadline) for i in todo]
    if jobs and config.num_workers == 0:
        for i, job in zip(todo, jobs, strict=True):
            verdicts[i] = verify_task(*job)
    elif jobs:
        with _POOL_LOCK:
            outcomes = _shared_pool(config.num_workers).map(jobs, deadline)
        for i, outcome in zip(todo, outcomes, strict=True):
            verdicts[i] = _verdict_from(outcome)
    return [
        _combine(response, answer, verdict, config)
        for response, answer, verdict in zip(responses, extracted, verdicts, strict=True)
    ]


def score_response(
    response: str,
    gold: str,
    choices: list[str] | None = None,
    config: RewardConfig | None = None,
) -> RewardScore:
    """Score one response; same rules and deadline as :func:`score_batch` (a batch of one)."""
    return score_batch([response], [gold], [choices], config=config)[0]
