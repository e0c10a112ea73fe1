"""The optimisation half of a GRPO step: log-probs, clipped loss, accumulation, updates.

Given a rollout batch (encoded prompts and their scored responses with
advantages), :class:`PolicyUpdater` makes ``ppo_epochs`` passes over
mini-batches of prompts. Each mini-batch accumulates micro-batches whose losses
are weighted by ``normaliser_units`` so the sum equals the configured
aggregation over the whole global mini-batch (token-mean: divided by the
global count of response tokens; seq-mean-token-sum-norm: by rows x
``max_new_tokens``), then takes one clipped AdamW step, skipped on a non-finite
gradient norm.

With several updates per rollout batch the "old" log-probs are computed once,
before the first update; with one update they *are* the current ones, so the
ratio is exactly 1 and ``loss/clip_frac`` 0 (on-policy; expected). The frozen
reference has the policy's parameter dtype and runs under the same autocast, so
the KL is exactly 0 before the first update.

Log-probs never materialise full-vocabulary logits for a micro-batch: the
output head runs on ``logprob_chunk_size`` response positions at a time
(:mod:`mmr1.rl.batch`), and the entropy metric is optional (``compute_entropy``).

Under DeepSpeed (ZeRO-1/2) the engine does the accumulation boundary, clipping,
step and non-finite skip itself; :func:`configure_deepspeed` fills its config
from the recipe before ``prepare``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from mmr1.models.loader import load_policy
from mmr1.rl.batch import EncodedPrompt, Rollout, collate, response_logprobs
from mmr1.rl.losses import normaliser_units, policy_loss
from mmr1.trainer.deepspeed import (
    accumulation_context,
    engine_step_outcome,
    fill_auto_entries,
    zero_stage,
)
from schemas.grpo import GRPOConfig

logger = logging.getLogger(__name__)

#: Per-token metrics averaged over all response tokens of a rollout batch
#: (``entropy`` only with ``compute_entropy``).
TOKEN_METRICS = ("pg_loss", "kl", "clip_frac", "ratio_mean", "approx_kl", "entropy")


def configure_deepspeed(
    accelerator: Accelerator, config: GRPOConfig, *, micro_steps: int, hidden_size: int
) -> None:
    """Check the ZeRO stage and fill the DeepSpeed config's "auto" entries (before ``prepare``).

    The engine accumulates ``micro_steps`` micro-batches per optimiser update
    (the boundary is also set explicitly per micro-batch, see
    :meth:`PolicyUpdater._accumulating`) and clips at ``max_grad_norm``.

    Only ZeRO-1/2: under ZeRO-3 the hf rollouts would run the policy's forward
    a different number of times on each process (generation lengths differ),
    which deadlocks ZeRO-3's per-forward parameter gathers, and the reference
    and the vLLM weight sync would need gathered parameters too.
    """
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    stage = zero_stage(ds)
    if stage not in (1, 2):
        raise ValueError(
            f"GRPO under DeepSpeed supports ZeRO stages 1 and 2, the config has stage {stage}: "
            "stage 3 shards the parameters that every process's rollouts need whole (use "
            "deployments/accelerate/deepspeed_zero2.yaml), and stage 0 is plain data "
            "parallelism (use ddp_gpu.yaml)"
        )
    fill_auto_entries(
        ds,
        micro_batch_size=config.micro_batch_size,
        accumulation_steps=micro_steps,
        max_grad_norm=config.max_grad_norm,
        hidden_size=hidden_size,
        num_processes=accelerator.num_processes,
    )


def load_reference(
    accelerator: Accelerator, prepared_model: torch.nn.Module, model_path: Path
) -> torch.nn.Module:
    """The frozen starting model, computing exactly as the prepared policy does.

    Same parameter dtype as the prepared policy (fp32 master weights under
    autocast; bf16 when DeepSpeed holds the module in bf16); its forward runs
    under ``accelerator.autocast()`` (:meth:`PolicyUpdater.reference_logprobs`),
    so before the first update the two log-probs, hence the KL, agree.
    """
    dtype = next(accelerator.unwrap_model(prepared_model).parameters()).dtype
    reference = load_policy(model_path, device=accelerator.device, dtype=dtype).model
    return reference.requires_grad_(False).eval()


@dataclass
class UpdateOutcome:
    """What one rollout batch's updates did: metrics, and updates applied / skipped."""

    metrics: dict[str, float]
    applied: int
    skipped: int


class _CollatedBatches:
    """Rollout rows collated into device batches, once per micro-batch (keyed by its first row)."""

    def __init__(
        self,
        prompts: Sequence[EncodedPrompt],
        rollouts: Sequence[Rollout],
        pad_id: int,
        is_vlm: bool,
        device: torch.device,
    ) -> None:
        self.prompts, self.rollouts = prompts, rollouts
        self.pad_id, self.is_vlm, self.device = pad_id, is_vlm, device
        self.batches: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The batch of rollout rows ``indices`` on the device."""
        key = indices[0]
        if key not in self.batches:
            rows = [self.rollouts[i] for i in indices]
            batch = collate(self.prompts, rows, self.pad_id, is_vlm=self.is_vlm)
            self.batches[key] = {k: v.to(self.device) for k, v in batch.items()}
        return self.batches[key]


@dataclass
class _TokenMetricSums:
    """Sums over a rollout batch's response tokens of the per-token metrics (``TOKEN_METRICS``)."""

    sums: dict[str, float] = field(default_factory=dict)
    tokens: float = 0.0

    def add(
        self, metrics: dict[str, torch.Tensor], entropy: torch.Tensor | None, mask: torch.Tensor
    ) -> None:
        """Add a micro-batch: each metric (a per-token mean) times its real tokens."""
        tokens = float(mask.sum())
        self.tokens += tokens
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * tokens
        if entropy is not None:
            self.sums["entropy"] = self.sums.get("entropy", 0.0) + float((entropy * mask).sum())

    def means(self, acc: Accelerator, *, with_entropy: bool) -> dict[str, float]:
        """Per-token means over all processes: ``loss/<name>``, and ``entropy`` if measured."""
        local = torch.tensor(
            [self.tokens, *[self.sums.get(n, 0.0) for n in TOKEN_METRICS]],
            dtype=torch.float64,
            device=acc.device,
        )
        reduced = acc.reduce(local, "sum").tolist()
        weight = max(reduced[0], 1.0)
        return {
            f"loss/{n}" if n != "entropy" else "entropy": v / weight
            for n, v in zip(TOKEN_METRICS, reduced[1:], strict=True)
            if n != "entropy" or with_entropy
        }


class PolicyUpdater:
    """Updates a prepared policy from rollout batches (module docstring)."""

    def __init__(
        self,
        config: GRPOConfig,
        accelerator: Accelerator,
        model: torch.nn.Module,
        optimizer: Any,
        *,
        reference: torch.nn.Module | None,
        suppress_ids: Sequence[int],
        pad_id: int,
        is_vlm: bool,
        deepspeed: bool,
    ) -> None:
        self.config = config
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.reference = reference
        self.suppress_ids = suppress_ids
        self.pad_id = pad_id
        self.is_vlm = is_vlm
        self.deepspeed = deepspeed
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def lr_factor(self, step: int) -> float:
        """The lr multiplier of training step ``step`` (1-based): linear warmup, then 1."""
        warmup = self.config.warmup_steps
        return min(1.0, step / warmup) if warmup > 0 else 1.0

    def update(
        self,
        prompts: Sequence[EncodedPrompt],
        rollouts: Sequence[Rollout],
        timings: dict[str, float],
        *,
        step: int,
    ) -> UpdateOutcome:
        """Train on one rollout batch; ``timings`` gains ``logprobs`` and ``update`` seconds.

        ``rollouts`` are grouped prompt by prompt (G consecutive rows per prompt of
        ``prompts``); ``step`` (1-based) sets the lr (:meth:`lr_factor`) and labels
        log messages.
        """
        cfg, acc = self.config, self.accelerator
        factor = self.lr_factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        minis = self._mini_batches(len(prompts))
        single_update = cfg.ppo_epochs == 1 and len(minis) == 1
        batch_of = _CollatedBatches(prompts, rollouts, self.pad_id, self.is_vlm, acc.device)

        began = time.perf_counter()
        old, ref = self._fixed_logprobs(minis, batch_of, with_old=not single_update)
        timings["logprobs"] = time.perf_counter() - began

        began = time.perf_counter()
        sums = _TokenMetricSums()
        grad_norms: list[float] = []
        applied = skipped = 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        for _ in range(cfg.ppo_epochs):
            for mini in minis:
                self._accumulate(mini, batch_of, rollouts, old, ref, sums)
                norm, stepped = self.optimizer_step(params)
                if stepped:
                    applied += 1
                else:
                    skipped += 1
                    logger.warning("step %d: non-finite grad norm (%s), update skipped", step, norm)
                grad_norms.append(norm)
        timings["update"] = time.perf_counter() - began
        out = sums.means(acc, with_entropy=cfg.compute_entropy)
        out["grad_norm"] = sum(grad_norms) / len(grad_norms)
        out["updates"] = float(len(grad_norms))
        out["lr"] = cfg.lr * factor
        return UpdateOutcome(metrics=out, applied=applied, skipped=skipped)

    def _mini_batches(self, n_prompts: int) -> list[list[int]]:
        """Rollout rows of each of this process's mini-batches (whole groups of G rows)."""
        cfg = self.config
        g = cfg.group_size
        per_rank = (
            cfg.mini_batch_prompts or cfg.prompts_per_step
        ) // self.accelerator.num_processes
        return [
            list(range(p * g, min(p + per_rank, n_prompts) * g))
            for p in range(0, n_prompts, per_rank)
        ]

    def _fixed_logprobs(
        self, minis: list[list[int]], batch_of: _CollatedBatches, *, with_old: bool
    ) -> tuple[dict[int, torch.Tensor] | None, dict[int, torch.Tensor]]:
        """Log-probs fixed for the whole rollout batch, per micro-batch (keyed by its first row).

        The policy's before any update ("old"; None unless ``with_old``) and the
        reference's (empty without one), each (rows, R).
        """
        old: dict[int, torch.Tensor] = {}
        ref: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for mini in minis:
                for micro in self._chunks(mini):
                    batch = batch_of(micro)
                    if with_old:
                        old[micro[0]] = self._policy_logprobs(batch)[0]
                    if self.reference is not None:
                        ref[micro[0]] = self.reference_logprobs(batch)
        return (old if with_old else None), ref

    def _accumulate(
        self,
        mini: list[int],
        batch_of: _CollatedBatches,
        rollouts: Sequence[Rollout],
        old: dict[int, torch.Tensor] | None,
        ref: dict[int, torch.Tensor],
        sums: _TokenMetricSums,
    ) -> None:
        """Backward of every micro-batch of ``mini``, weighted so the gradients sum to the
        mini-batch's loss aggregation over all processes; metrics go to ``sums``."""
        cfg, acc = self.config, self.accelerator
        micros = self._chunks(mini)
        counts = torch.stack(
            [normaliser_units(batch_of(m)["response_mask"], cfg.loss_agg) for m in micros]
        )
        total_units = float(acc.reduce(counts.sum().double().reshape(1), "sum")[0])
        # Accelerate divides the loss by its accumulation steps (1 under DDP; under
        # DeepSpeed the engine divides by its own, the same number): undo it, the
        # unit weights below already make the sum the mini-batch's aggregation.
        accumulation = acc.gradient_accumulation_steps
        for k, micro in enumerate(micros):
            batch = batch_of(micro)
            with self._accumulating(last=k == len(micros) - 1):
                logp, entropy = self._policy_logprobs(batch, with_entropy=cfg.compute_entropy)
                adv = torch.tensor([rollouts[i].advantage for i in micro], device=acc.device)
                loss, metrics = policy_loss(
                    logp,
                    logp.detach() if old is None else old[micro[0]],
                    adv,
                    batch["response_mask"],
                    clip_low=cfg.clip_low,
                    clip_high=cfg.clip_high,
                    agg=cfg.loss_agg,
                    ref_logp=ref.get(micro[0]),
                    kl_coef=cfg.kl_coef,
                    norm_len=cfg.sampling.max_new_tokens,
                )
                # DDP / DeepSpeed average over processes: scale back to the sum.
                scale = float(counts[k]) / max(total_units, 1.0) * acc.num_processes
                acc.backward(loss * (scale * accumulation))
            sums.add(metrics, entropy, batch["response_mask"])

    def _policy_logprobs(
        self, batch: dict[str, torch.Tensor], *, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs of the batch's responses under the policy, (rows, R), and their entropy."""
        return response_logprobs(
            self.model,
            batch,
            temperature=self.config.sampling.temperature,
            suppress_ids=self.suppress_ids,
            with_entropy=with_entropy,
            chunk_size=self.config.logprob_chunk_size,
        )

    def _chunks(self, indices: list[int]) -> list[list[int]]:
        size = self.config.micro_batch_size
        return [indices[i : i + size] for i in range(0, len(indices), size)]

    def reference_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log-probs of the batch's responses under the frozen reference, (rows, R).

        Under the accelerator's autocast: the prepared policy's forward runs in
        it, so with equal weights the two agree exactly (bf16 included).
        """
        with torch.no_grad(), self.accelerator.autocast():
            return response_logprobs(
                self.reference,
                batch,
                temperature=self.config.sampling.temperature,
                suppress_ids=self.suppress_ids,
                chunk_size=self.config.logprob_chunk_size,
            )[0]

    def _accumulating(self, last: bool) -> Any:
        """Context of one micro-batch's backward; ``last`` ends the accumulation
        (:func:`mmr1.trainer.deepspeed.accumulation_context`)."""
        return accumulation_context(
            self.accelerator, self.model, last=last, deepspeed=self.deepspeed
        )

    def optimizer_step(self, params: list[torch.nn.Parameter]) -> tuple[float, bool]:
        """Clip and step after a mini-batch; returns (global grad norm, update applied).

        Without DeepSpeed: clip to ``max_grad_norm`` and skip the step on a
        non-finite norm. Under DeepSpeed the engine has already done both inside
        the last ``backward`` (its ``gradient_clipping`` is ``max_grad_norm``, and
        ZeRO skips a step whose gradients overflow); read its norm and verdict.
        """
        acc = self.accelerator
        if self.deepspeed:
            return engine_step_outcome(acc, self.model)
        norm = acc.clip_grad_norm_(params, self.config.max_grad_norm)
        applied = bool(torch.isfinite(norm))
        if applied:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm), applied
