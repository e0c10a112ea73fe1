"""Rejection sampling of teacher chains of thought (METHOD.md section 2).

A CoT is kept only if its final answer verifies against the ground truth with
the shared verifier (``mmr1.rewards``); we also require the training format
(``<think>..</think><answer>..</answer>``) so SFT never teaches a broken
contract. Every rejected CoT becomes a quarantined row with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mmr1.rewards import score_batch
from schemas.catalog import QuarantinedRow
from schemas.records import SFTRecord
from schemas.rewards import RewardConfig


@dataclass
class RejectionResult:
    kept: list[SFTRecord] = field(default_factory=list)
    rejected: list[QuarantinedRow] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        total = len(self.kept) + len(self.rejected)
        return len(self.kept) / total if total else 0.0


def _response(record: SFTRecord) -> str:
    for turn in reversed(record.conversations):
        if turn.from_ == "gpt":
            return turn.value
    raise ValueError(f"SFT record {record.id}: no assistant ('gpt') turn to verify")


def keep_verified(
    records: Sequence[SFTRecord],
    choices: Sequence[list[str] | None] | None = None,
    *,
    source: str,
    config: RewardConfig | None = None,
) -> RejectionResult:
    """Split candidate SFT records into verified ones and quarantined rejections.

    ``choices`` aligns with ``records`` (option texts for multiple choice).
    Reasons: ``cot_wrong_answer`` (final answer does not verify),
    ``cot_bad_format`` (answer verifies but the format contract is broken),
    ``cot_verify_timeout`` (verification exceeded its deadline).
    """
    config = config or RewardConfig()
    responses = [_response(r) for r in records]
    scores = score_batch(
        responses,
        [r.answer for r in records],
        list(choices) if choices is not None else None,
        timeout_s=config.timeout_s,
        config=config,
    )
    result = RejectionResult()
    for record, response, score in zip(records, responses, scores, strict=True):
        if score.accuracy == 1.0 and score.format == 1.0:
            result.kept.append(record)
            continue
        if score.timed_out:
            reason, detail = "cot_verify_timeout", "verification exceeded its deadline"
        elif score.accuracy != 1.0:
            reason = "cot_wrong_answer"
            detail = f"final answer {score.extracted!r} does not match gold {record.answer!r}"
        else:
            reason = "cot_bad_format"
            detail = "answer verifies but the <think>/<answer> format is broken"
        result.rejected.append(
            QuarantinedRow(
                source=source,
                source_row_id=record.id,
                reason=reason,
                detail=detail,
                payload={"response": response[:2000]},
            )
        )
    return result
