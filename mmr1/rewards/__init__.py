"""Rewards for MMR1 RL: answer extraction, binary verification, format and repetition.

docs/METHOD.md section 4. Modules, one job each:

- ``extract``: the final answer of a response (the project's one extractor);
- ``normalize``: canonical text and multiple-choice letters;
- ``guards``: cheap rejection of answers that would blow up SymPy;
- ``verify``: is an answer correct (choice letters, text, math-verify);
- ``format``: format reward and repetition penalty;
- ``pool``: worker processes with a parent-enforced per-task deadline;
- ``score``: weighted reward of one response or a batch.
"""

from mmr1.rewards.extract import extract_final_answer
from mmr1.rewards.format import format_reward, repetition_penalty
from mmr1.rewards.score import score_batch, score_response
from mmr1.rewards.verify import is_correct
from schemas.rewards import RewardConfig, RewardScore

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
