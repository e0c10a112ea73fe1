"""Evaluation during SFT: held-out loss and greedy answers scored by the project's reward.

``eval_accuracy`` and ``eval_format`` come from the same reward code as RL
(``mmr1.rewards.score_batch``: binary accuracy of the extracted final answer,
binary ``<think>/<answer>`` format), on greedy completions of the held-out
prompts produced by the ``hf`` generation backend around the in-memory model.
Only single-exchange records (``[system?, human, gpt]``) are answered: a
multi-turn record has no single prompt whose answer is ``record.answer``.
SFT records carry no option texts, so choices are not passed; option letters
still compare as letters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import torch

from mmr1.data.io import decode_image
from mmr1.generation.hf import HFBackend
from mmr1.models.loader import Policy
from mmr1.sft.loss import token_cross_entropy
from schemas.generation import GenerationRequest, HFBackendConfig, SamplingParams
from schemas.records import SFTRecord
from schemas.rewards import RewardConfig

#: Prompts per greedy-generation batch.
GENERATION_BATCH = 16


def single_turn(record: SFTRecord) -> tuple[str | None, str] | None:
    """``(system, human text)`` of a ``[system?, human, gpt]`` record; None for other shapes."""
    turns = record.conversations
    system = None
    if turns and turns[0].from_ == "system":
        system, turns = turns[0].value, turns[1:]
    if [t.from_ for t in turns] != ["human", "gpt"]:
        return None
    return system, turns[0].value


def answerable(records: Iterable[SFTRecord], limit: int) -> list[SFTRecord]:
    """The first ``limit`` single-exchange records (the ones greedy generation answers).

    Stops reading ``records`` (possibly a lazy reader) once it has them.
    """
    return list(islice((r for r in records if single_turn(r) is not None), limit))


def generation_metrics(
    policy: Policy,
    records: Sequence[SFTRecord],
    *,
    max_new_tokens: int,
    image_root: Path | None = None,
) -> dict[str, float]:
    """Greedy answers to ``records`` scored against ``record.answer``.

    Returns ``eval_accuracy`` and ``eval_format`` (means over the records) and
    ``eval_generated`` (how many); an empty dict when ``records`` is empty.
    """
    from mmr1.rewards import score_batch  # math-verify is imported only when needed

    if not records:
        return {}
    requests = []
    for record in records:
        system, prompt = single_turn(record)
        images = [decode_image(image, image_root) for image in record.images]
        requests.append(
            GenerationRequest(prompt=prompt, images=images, system=system, request_id=record.id)
        )
    backend = HFBackend(
        HFBackendConfig(model="in-memory policy", batch_size=GENERATION_BATCH), policy=policy
    )
    try:
        sampling = SamplingParams(
            temperature=0.0, max_new_tokens=max_new_tokens, return_logprobs=False
        )
        completions = backend.generate(requests, sampling)
    finally:
        backend.close()
    # Verified inline: the answers are short and the trainer runs in its main thread,
    # where math-verify's signal-based timeouts work.
    scores = score_batch(
        [c.samples[0].text for c in completions],
        [r.answer for r in records],
        config=RewardConfig(num_workers=0),
    )
    n = len(scores)
    return {
        "eval_accuracy": sum(s.accuracy for s in scores) / n,
        "eval_format": sum(s.format for s in scores) / n,
        "eval_generated": float(n),
    }


def improves(
    value: float, best: float | None, metric: Literal["eval_loss", "eval_accuracy"]
) -> bool:
    """Whether ``value`` beats ``best`` (lower loss / higher accuracy; anything beats None)."""
    if best is None:
        return True
    return value < best if metric == "eval_loss" else value > best


def heldout_loss(
    model: Any, batches: Iterable[dict[str, torch.Tensor]], device: torch.device
) -> torch.Tensor:
    """``[sum_CE, labelled tokens]`` (float64) of ``model`` over collated batches."""
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            logits = model(**inputs, use_cache=False).logits
            loss_sum, count = token_cross_entropy(logits, batch["labels"].to(device))
            totals += torch.stack([loss_sum.double(), count.double()])
    return totals
