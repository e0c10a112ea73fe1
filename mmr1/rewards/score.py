"""Reward of a response: accuracy + format (+ repetition), one or a batch at a time.

    overall = accuracy_weight * accuracy + format_weight * format
              + repetition_weight * repetition

Accuracy is checked on :func:`extract_final_answer` of the response (no answer
-> 0). :func:`score_batch` works in three tiers, all with the same verdicts:

1. Here, in the calling thread: extraction, format, repetition (linear-time
   string scans) and every verdict that needs no math-verify call
   (:func:`~mmr1.rewards.verify.quick_verdict`: option letters, text, plain
   numbers, guards). These cost microseconds and need no deadline.
2. The rest goes to worker processes of a shared
   :class:`~mmr1.rewards.pool.DeadlinePool` (``python -m mmr1.rewards.worker``,
   which never imports the caller's ``__main__``: no ``if __name__ ==
   "__main__":`` guard is needed, and ``python -c`` and notebooks work). Each
   item runs under a wall-clock deadline enforced by this process: an item that
   misses it scores accuracy 0 with ``timed_out=True``, and the stuck worker is
   killed and replaced. Format and repetition are computed while workers verify.
3. In-process fallback (:func:`~mmr1.rewards.inprocess.run_bounded`): when
   ``num_workers=0``, or when workers cannot start (launch fails, they die while
   starting, or none is ready within ``WORKER_START_TIMEOUT_S`` on a loaded
   machine). Items still get the deadline (a helper thread is abandoned at
   it), but SymPy stuck in C code is not interrupted; see that module for the
   limits. The first fallback logs one warning. Workers that cannot be launched
   or die while starting switch this process to the fallback for good; a slow
   start only that call (the workers keep starting and serve later calls).

The pool is started lazily (on the first batch with an item for it), its
workers in parallel, and is reused by later calls (a new one if
``num_workers`` changes) and shut down at interpreter exit. Calls to the pool
are serialised by a lock, so threads may share it.

``$MMR1_VERIFIER_PYTHON`` names the interpreter for workers (default:
``sys.executable``); pointing it at something that cannot run forces the fallback.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterator, Sequence

from mmr1.rewards.extract import extract_final_answer
from mmr1.rewards.format import format_reward, repetition_penalty
from mmr1.rewards.guards import MAX_ANSWER_CHARS
from mmr1.rewards.inprocess import run_bounded
from mmr1.rewards.pool import DeadlinePool, TaskOutcome, WorkerStartError
from mmr1.rewards.verify import Verdict, math_verify_api, quick_verdict, verify_item
from schemas.rewards import RewardConfig, RewardScore

logger = logging.getLogger(__name__)

_POOL: DeadlinePool | None = None
_POOL_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False
_WORKERS_UNAVAILABLE: str | None = None  # why workers cannot be used in this process
_FALLBACK_WARNED = False
_TERMS_STEP = 32  # responses per step of the format/repetition work done while workers run


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
        # math_verify (SymPy) is imported before a worker reports ready, so no item's
        # deadline pays for it.
        preload = ("mmr1.rewards.verify", "math_verify")
        _POOL = DeadlinePool(verify_item, num_workers, preload=preload)
        if not _ATEXIT_REGISTERED:
            atexit.register(shutdown_pool)
            _ATEXIT_REGISTERED = True
    return _POOL


def _warn_fallback(reason: str) -> None:
    global _FALLBACK_WARNED
    if not _FALLBACK_WARNED:
        _FALLBACK_WARNED = True
        logger.warning(
            "answer verification falls back to this process (%s): each item still has "
            "its deadline, but SymPy stuck in C code cannot be interrupted and items run "
            "one at a time. Later fallbacks are not logged.",
            reason,
        )


def _in_process(jobs: list[tuple], deadline: float) -> list[TaskOutcome]:
    """Tier 3: ``verify_item(*job)`` in this process, each under ``deadline``."""
    if not jobs:
        return []
    math_verify_api()  # import SymPy here, not inside the first item's deadline
    return run_bounded(verify_item, jobs, deadline)


def _verify(
    jobs: list[tuple], deadline: float, num_workers: int, background: Iterator[None]
) -> list[TaskOutcome]:
    """Outcomes of ``verify_item(*job)`` for each job: in workers, else in this process."""
    global _WORKERS_UNAVAILABLE, _POOL
    if not jobs or num_workers == 0:
        return _in_process(jobs, deadline)
    with _POOL_LOCK:
        if _WORKERS_UNAVAILABLE is None:
            try:
                return _shared_pool(num_workers).map(jobs, deadline, background=background)
            except WorkerStartError as exc:
                done = exc.outcomes or [None] * len(jobs)
                reason = str(exc)
                if exc.permanent:
                    _WORKERS_UNAVAILABLE = reason
                    if _POOL is not None:
                        _POOL.close()
                        _POOL = None
        else:
            done, reason = [None] * len(jobs), _WORKERS_UNAVAILABLE
    _warn_fallback(reason)
    rest = [i for i, outcome in enumerate(done) if outcome is None]
    fallback = _in_process([jobs[i] for i in rest], deadline)
    for i, outcome in zip(rest, fallback, strict=True):
        done[i] = outcome
    return [o if o is not None else TaskOutcome("crashed") for o in done]


def _verdict_from(outcome: TaskOutcome) -> Verdict:
    if outcome.status == "ok":
        return outcome.value
    if outcome.status == "timeout":
        return Verdict(False, timed_out=True, rule="deadline")
    logger.warning("answer verification %s: %s", outcome.status, outcome.error or "no detail")
    return Verdict(False, rule=outcome.status)


def _terms(
    responses: Sequence[str], ngram: int, fmt: list[float], rep: list[float]
) -> Iterator[None]:
    """Append format reward and repetition penalty of each response, a step at a time."""
    for start in range(0, len(responses), _TERMS_STEP):
        for response in responses[start : start + _TERMS_STEP]:
            fmt.append(format_reward(response))
            rep.append(repetition_penalty(response, ngram))
        yield


def _aligned_choices(
    choices: Sequence[Sequence[str] | None] | None, n: int
) -> list[list[str] | None]:
    if choices is None:
        return [None] * n
    if len(choices) != n:
        raise ValueError(f"score_batch: got {n} responses but {len(choices)} choices entries")
    return [list(c) if c is not None else None for c in choices]


def _settle_here(extracted: list[str | None], golds: Sequence[str], choices: list) -> list:
    """Verdicts decided without math-verify (tier 1); None where a worker must decide."""
    verdicts: list[Verdict | None] = []
    for answer, gold, item_choices in zip(extracted, golds, choices, strict=True):
        if answer is None:
            verdicts.append(Verdict(False, rule="no_answer"))
        elif len(answer) > MAX_ANSWER_CHARS:
            verdicts.append(Verdict(False, rule="guard:too_long"))
        else:
            verdicts.append(quick_verdict(answer, str(gold), item_choices))
    return verdicts


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
    per-item deadline measured from when a worker can start the item.
    """
    config = config or RewardConfig()
    deadline = config.timeout_s if timeout_s is None else float(timeout_s)
    if not deadline > 0:
        raise ValueError(f"score_batch: timeout_s must be > 0, got {timeout_s}")
    if len(responses) != len(golds):
        raise ValueError(f"score_batch: got {len(responses)} responses but {len(golds)} golds")
    item_choices = _aligned_choices(choices, len(responses))
    extracted = [extract_final_answer(r) for r in responses]
    verdicts = _settle_here(extracted, golds, item_choices)
    todo = [i for i, verdict in enumerate(verdicts) if verdict is None]
    jobs = [(extracted[i], str(golds[i]), item_choices[i], deadline) for i in todo]
    fmt: list[float] = []
    rep: list[float] = []
    terms = _terms(responses, config.repetition_ngram, fmt, rep)
    outcomes = _verify(jobs, deadline, config.num_workers, terms)
    for _ in terms:  # whatever the workers left undone
        pass
    for i, outcome in zip(todo, outcomes, strict=True):
        verdicts[i] = _verdict_from(outcome)
    return [
        _combine(answer, verdict, f, r, config)  # type: ignore[arg-type]
        for answer, verdict, f, r in zip(extracted, verdicts, fmt, rep, strict=True)
    ]


def _combine(
    extracted: str | None, verdict: Verdict, fmt: float, repetition: float, config: RewardConfig
) -> RewardScore:
    accuracy = 1.0 if verdict.correct else 0.0
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


def score_response(
    response: str,
    gold: str,
    choices: list[str] | None = None,
    config: RewardConfig | None = None,
) -> RewardScore:
    """Score one response; same rules and deadline as :func:`score_batch` (a batch of one)."""
    return score_batch([response], [gold], [choices], config=config)[0]
