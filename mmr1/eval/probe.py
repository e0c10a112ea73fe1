"""A quick look at what a policy does on a handful of prompts.

Samples ``n`` answers per prompt with any generation backend, scores them with
the shared verifier and summarises the numbers that matter for MMR1: accuracy,
format reward, pass@n, and the fraction of prompts whose ``n`` rewards are all
equal (the zero-variance groups that give GRPO no gradient and that
variance-aware sampling tries to avoid).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydantic import BaseModel

from mmr1.data.io import decode_image
from mmr1.generation import GenerationBackend, GenerationRequest, SamplingParams
from mmr1.prompts import training_prompt
from mmr1.rewards import score_batch
from schemas.records import RLRecord
from schemas.rewards import RewardConfig


class ProbeRollout(BaseModel):
    prompt_id: str
    sample: int
    response: str
    gold: str
    accuracy: float
    format: float
    overall: float
    n_tokens: int


class ProbeResult(BaseModel):
    metrics: dict[str, float]
    rollouts: list[ProbeRollout]


def build_requests(records: Sequence[RLRecord]) -> list[GenerationRequest]:
    """Training-prompt requests (instruction + question + options) with decoded images."""
    return [
        GenerationRequest(
            prompt=training_prompt(r.problem, r.choices),
            images=[decode_image(image) for image in r.images],
            request_id=r.id,
        )
        for r in records
    ]


def probe_policy(
    backend: GenerationBackend,
    records: Sequence[RLRecord],
    sampling: SamplingParams,
    rewards: RewardConfig,
) -> ProbeResult:
    """Roll out ``sampling.n`` answers per record and score them."""
    if not records:
        raise ValueError("probe_policy needs at least one record")
    started = time.perf_counter()
    completions = backend.generate(build_requests(records), sampling)
    gen_seconds = time.perf_counter() - started

    flat = [
        (record, i, sample)
        for record, completion in zip(records, completions, strict=True)
        for i, sample in enumerate(completion.samples)
    ]
    scores = score_batch(
        [sample.text for _, _, sample in flat],
        [record.answer for record, _, _ in flat],
        [record.choices for record, _, _ in flat],
        timeout_s=rewards.timeout_s,
        config=rewards,
    )
    rollouts = [
        ProbeRollout(
            prompt_id=record.id,
            sample=i,
            response=sample.text,
            gold=record.answer,
            accuracy=score.accuracy,
            format=score.format,
            overall=score.overall,
            n_tokens=len(sample.token_ids),
        )
        for (record, i, sample), score in zip(flat, scores, strict=True)
    ]
    groups: dict[str, list[ProbeRollout]] = {}
    for rollout in rollouts:
        groups.setdefault(rollout.prompt_id, []).append(rollout)
    n_tokens = sum(r.n_tokens for r in rollouts)
    metrics = {
        "accuracy": sum(r.accuracy for r in rollouts) / len(rollouts),
        "format": sum(r.format for r in rollouts) / len(rollouts),
        "overall": sum(r.overall for r in rollouts) / len(rollouts),
        "pass_at_n": sum(any(r.accuracy == 1.0 for r in g) for g in groups.values()) / len(groups),
        "zero_variance_groups": sum(len({r.overall for r in g}) == 1 for g in groups.values())
        / len(groups),
        "mean_response_tokens": n_tokens / len(rollouts),
        "generation_tokens_per_s": n_tokens / gen_seconds if gen_seconds > 0 else 0.0,
        "generation_seconds": gen_seconds,
    }
    return ProbeResult(metrics=metrics, rollouts=rollouts)
