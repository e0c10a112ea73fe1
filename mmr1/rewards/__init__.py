"""Rewards for MMR1 RL: answer extraction, binary verification, format and repetition.

docs/METHOD.md section 4. Modules, one job each:

- ``extract``: the final answer of a response (the project's one extractor);
- ``normalize``: canonical text and multiple-choice letters;
- ``guards``: cheap rejection of answers that would blow up SymPy;
- ``verify``: is an answer correct (choice letters, text, math-verify);
- ``format``: format reward and repetition penalty;
- ``fastparse``: a faster LaTeX parser for math-verify, with identical results;
- ``pool``, ``worker``, ``wire``: worker processes (``python -m mmr1.rewards.worker``)
  with a parent-enforced per-task deadline;
- ``inprocess``: the same deadline for tasks run in this process (the fallback);
- ``score``: weighted reward of one response or a batch.

The names below are imported on first use (PEP 562), so a worker process, which
imports ``mmr1.rewards.worker``, does not pay for ``score`` and its pydantic schemas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmr1.rewards.extract import extract_final_answer
    from mmr1.rewards.format import format_reward, repetition_penalty
    from mmr1.rewards.score import score_batch, score_response
    from mmr1.rewards.verify import is_correct
    from schemas.rewards import RewardConfig, RewardScore

_HOMES = {
    "RewardConfig": "schemas.rewards",
    "RewardScore": "schemas.rewards",
    "extract_final_answer": "mmr1.rewards.extract",
    "format_reward": "mmr1.rewards.format",
    "is_correct": "mmr1.rewards.verify",
    "repetition_penalty": "mmr1.rewards.format",
    "score_batch": "mmr1.rewards.score",
    "score_response": "mmr1.rewards.score",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "RewardConfig",
    "RewardScore",
    "extract_final_answer",
    "format_reward",
    "is_correct",
    "repetition_penalty",
    "score_batch",
    "score_response",
]
