"""What a GRPO step reports: rollout statistics across ranks and sample rollouts on disk."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from accelerate import Accelerator

from mmr1.data.io import decode_image
from schemas.generation import CompletionSample
from schemas.records import ImageData


def rollout_stats(
    acc: Accelerator,
    samples: Sequence[CompletionSample],
    scores: Sequence[Any],
    rewards: torch.Tensor,
    group_size: int,
) -> dict[str, float]:
    """Reward, accuracy, format, zero-variance groups and lengths, reduced over all ranks.

    ``rewards`` is (n_prompts * group_size,) ordered group by group; ``_tokens`` is
    the global count of generated tokens (for throughput). ``zero_variance_frac``
    counts groups whose G rewards are all equal (no gradient: docs/METHOD.md section 6);
    ``zero_accuracy_variance_frac`` groups whose G accuracies are (p in {0, 1}, the
    case OVS scores 0 and VAS draws less often; the format reward can still vary).
    """
    grouped = rewards.view(-1, group_size)
    zero_var = (grouped.max(dim=1).values == grouped.min(dim=1).values).float()
    accuracies = torch.tensor([float(s.accuracy) for s in scores]).view(-1, group_size)
    zero_acc_var = (accuracies.max(dim=1).values == accuracies.min(dim=1).values).float()
    lengths = torch.tensor([len(s.token_ids) for s in samples], dtype=torch.float64)
    local = torch.tensor(
        [
            float(len(samples)),
            float(rewards.sum()),
            float((rewards.double() ** 2).sum()),
            sum(s.accuracy for s in scores),
            sum(s.format for s in scores),
            float(zero_var.sum()),
            float(zero_acc_var.sum()),
            float(len(zero_var)),
            float(lengths.sum()),
            float(sum(s.finish_reason == "length" for s in samples)),
        ],
        dtype=torch.float64,
        device=acc.device,
    )
    n, r_sum, r_sq, a_sum, f_sum, zv, zav, groups, l_sum, trunc = acc.reduce(local, "sum").tolist()
    max_len = float(acc.reduce(lengths.max().to(acc.device), "max"))
    mean = r_sum / n
    return {
        "reward/mean": mean,
        "reward/std": math.sqrt(max(r_sq / n - mean * mean, 0.0)),
        "reward/accuracy": a_sum / n,
        "reward/format": f_sum / n,
        "zero_variance_frac": zv / groups,
        "zero_accuracy_variance_frac": zav / groups,
        "response/length_mean": l_sum / n,
        "response/length_max": max_len,
        "response/truncated_frac": trunc / n,
        "_tokens": l_sum,
    }


#: Share of a run's steps at each end that :func:`run_summary` averages training accuracy over.
EDGE_FRACTION = 0.1


def run_summary(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """What a GRPO run did overall, from its per-step history (catalog metrics of its checkpoints).

    With ``n`` logged steps and ``m = max(1, ceil(0.1 n))``:

    - ``run/zero_variance_frac_mean``: mean over steps of ``zero_variance_frac``
      (groups whose rewards are all equal, no gradient);
    - ``run/zero_accuracy_variance_frac_mean``: the same for accuracies (p in {0, 1});
    - ``run/accuracy_first_10pct`` / ``run/accuracy_last_10pct``: mean training
      accuracy (``reward/accuracy`` of the rollouts) over the first / last ``m`` steps;
    - ``run/steps``: ``n``.

    Empty when ``history`` is empty; a key is left out when no step has its metric.
    """
    if not history:
        return {}
    edge = max(1, math.ceil(EDGE_FRACTION * len(history)))

    def mean(rows: Sequence[Mapping[str, float]], key: str) -> float | None:
        values = [float(row[key]) for row in rows if key in row]
        return sum(values) / len(values) if values else None

    summary = {
        "run/zero_variance_frac_mean": mean(history, "zero_variance_frac"),
        "run/zero_accuracy_variance_frac_mean": mean(history, "zero_accuracy_variance_frac"),
        "run/accuracy_first_10pct": mean(history[:edge], "reward/accuracy"),
        "run/accuracy_last_10pct": mean(history[-edge:], "reward/accuracy"),
        "run/steps": float(len(history)),
    }
    return {key: value for key, value in summary.items() if value is not None}


def write_samples(
    out: Path,
    rows: pl.DataFrame,
    samples: Sequence[Sequence[CompletionSample]],
    scores: Sequence[Any],
    group_size: int,
    max_prompts: int = 4,
) -> None:
    """``out/rollouts.jsonl`` (prompt, answer, response, reward) and a thumbnail per prompt."""
    out.mkdir(parents=True, exist_ok=True)
    g = group_size
    lines = []
    for i, row in enumerate(rows.head(max_prompts).iter_rows(named=True)):
        thumbnail = None
        if row["images"]:
            image = decode_image(ImageData(**row["images"][0]))
            image.thumbnail((128, 128))
            thumbnail = f"prompt{i}.png"
            image.save(out / thumbnail)
        for j, sample in enumerate(samples[i]):
            score = scores[i * g + j]
            lines.append(
                json.dumps(
                    {
                        "prompt_id": row["row_id"],
                        "problem": row["problem"],
                        "answer": row["answer"],
                        "image": thumbnail,
                        "response": sample.text,
                        "reward": score.overall,
                        "accuracy": score.accuracy,
                        "finish_reason": sample.finish_reason,
                    }
                )
            )
    (out / "rollouts.jsonl").write_text("\n".join(lines) + "\n")
