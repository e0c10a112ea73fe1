"""ShareGPT conversations (the MMR1-SFT layout) -> curation record fields.

MMR1-SFT rows hold ``conversations``, a list of turns ``{"from": "human" |
"gpt", "value": ...}`` (``{"role": "user" | "assistant", "content": ...}`` is
read too), and ``images``; the human turn carries one ``<image>`` per image.
Ingest reads such a row as:

- ``problem``: the human turn, verbatim (it is the whole user prompt, so the SFT
  writer keeps it as is: ``problem_is_prompt`` is true);
- ``response``: the gpt turn, the chain of thought the ``existing`` teacher keeps
  once it passes the same checks as a generated one;
- ``answer``: the source's gold answer column when it has one (the CoT must then
  verify against it), else the final answer extracted from the gpt turn.

One optional leading system turn is allowed (its text is not kept). A row
whose conversation is not one human turn followed by one gpt turn is
quarantined ``invalid_field``; one whose gpt turn has no final answer when the
source has no answer column is quarantined ``cot_no_answer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmr1.data.coerce import RowError
from mmr1.rewards.extract import extract_final_answer

HUMAN_ROLES = ("human", "user")
GPT_ROLES = ("gpt", "assistant")
SYSTEM_ROLES = ("system",)


def _turn(item: Any, i: int) -> tuple[str, str]:
    """(role, text) of one turn; raises ``RowError`` naming the turn."""
    if not isinstance(item, dict):
        raise RowError(
            "invalid_field",
            f"field 'conversations'[{i}]: expected a turn object, got {type(item).__name__}",
        )
    role = item.get("from", item.get("role"))
    text = item.get("value", item.get("content"))
    if not isinstance(role, str) or not isinstance(text, str):
        raise RowError(
            "invalid_field",
            f"field 'conversations'[{i}]: expected text 'from'/'value' (or 'role'/'content')",
        )
    return role.strip().lower(), text


def split_conversation(value: Any) -> tuple[str, str]:
    """(human text, gpt text) of a single-exchange conversation; raises ``RowError``."""
    if isinstance(value, dict) or not isinstance(value, Sequence) or isinstance(value, str):
        raise RowError(
            "invalid_field",
            f"field 'conversations': expected a list of turns, got {type(value).__name__}",
        )
    turns = [_turn(item, i) for i, item in enumerate(value)]
    while turns and turns[0][0] in SYSTEM_ROLES:
        turns = turns[1:]
    roles = [role for role, _ in turns]
    if len(turns) != 2 or roles[0] not in HUMAN_ROLES or roles[1] not in GPT_ROLES:
        raise RowError(
            "invalid_field",
            "field 'conversations': expected one human turn then one gpt turn, got "
            f"[{', '.join(roles) or 'no turns'}]",
        )
    return turns[0][1], turns[1][1]


def conversation_fields(value: Any, has_gold: bool) -> tuple[str, str, str | None]:
    """``(problem, response, answer)`` of one row; ``answer`` is None when ``has_gold``.

    ``has_gold``: the row has a non-null answer column, which is then the answer;
    otherwise the gpt turn's final answer is extracted. Raises ``RowError``.
    """
    human, gpt = split_conversation(value)
    if has_gold:
        return human, gpt, None
    answer = extract_final_answer(gpt)
    if answer is None or not answer.strip():
        raise RowError(
            "cot_no_answer",
            "field 'conversations': the gpt turn has no final answer (\\boxed{} or "
            "<answer>) and the source has no answer column",
        )
    return human, gpt, answer
