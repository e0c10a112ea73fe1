"""Supervised fine-tuning (the long-CoT cold start): recipe settings and what a run returns.

Defaults are the paper's (docs/METHOD.md section 8: AdamW lr 1e-5, cosine decay,
warmup ratio 0.1, weight decay 0, grad clip 1.0, effective batch 32, 3 epochs,
cutoff 16,384, bf16, best checkpoint by validation). A randomly initialised
tiny model needs a far higher learning rate (1.5e-3 in the ``sft-demo`` preset).

The effective (global) batch is ``micro_batch_size * grad_accum * world_size``
samples per optimiser step; the recipe shards each global batch over the
processes so that N processes see exactly the batch one process would.

The dataset is never loaded whole: each process reads and encodes the samples
of its own micro-batches when they are drawn (``num_workers`` DataLoader
workers), so memory does not grow with the dataset and training starts without
a pass over it (``mmr1.sft.stream``).

Sequence packing is deliberately not offered: Qwen2.5-VL's M-RoPE positions
and attention would have to be reset per packed sample, which the model's
forward does not support through ``attention_mask`` alone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from schemas.base import ConfigModel


class SFTConfig(ConfigModel):
    """How to fine-tune: optimiser, schedule, batch, sequence limits, eval and checkpoints."""

    # Optimiser.
    lr: float = Field(default=1e-5, gt=0.0, description="Peak AdamW learning rate (paper: 1e-5).")
    weight_decay: float = Field(
        default=0.0,
        ge=0.0,
        description="AdamW decoupled weight decay on matrices (biases and norms never decay).",
    )
    betas: tuple[float, float] = Field(
        default=(0.9, 0.999), description="AdamW (beta1, beta2), each in [0, 1)."
    )
    max_grad_norm: float | None = Field(
        default=1.0,
        gt=0.0,
        description="Clip the global gradient norm to this value (None: no clipping; the norm "
        "is still logged). A step whose norm is not finite is skipped and counted.",
    )

    # Schedule.
    warmup_ratio: float = Field(
        default=0.1,
        ge=0.0,
        lt=1.0,
        description="Fraction of the optimiser steps with a linear warmup (ceil of ratio*steps).",
    )
    scheduler: Literal["cosine", "constant", "linear"] = Field(
        default="cosine", description="Decay after warmup: cosine (paper), linear, or constant."
    )
    min_lr_ratio: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Cosine/linear decay ends at min_lr_ratio * lr.",
    )

    # Length of training.
    epochs: float = Field(
        default=3.0,
        gt=0.0,
        description="Passes over the training split (fractions allowed; the paper's table says "
        "3, its text 5). Ignored when max_steps is set.",
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        description="Optimiser steps to run; overrides epochs and sets the schedule's horizon.",
    )

    # Batch.
    micro_batch_size: int = Field(
        default=1, ge=1, description="Samples per forward/backward pass on each process."
    )
    grad_accum: int = Field(
        default=32,
        ge=1,
        description="Micro-batches accumulated per optimiser step on each process. Effective "
        "batch = micro_batch_size * grad_accum * world_size (paper: 32).",
    )

    # Sequences.
    cutoff_len: int = Field(
        default=16384,
        ge=8,
        description="Longest tokenised sample (image tokens expanded); longer ones are handled "
        "by too_long when they are drawn.",
    )
    loss_chunk_size: int | None = Field(
        default=1024,
        ge=1,
        description="Positions whose output-head logits exist at once in the loss (forward and "
        "backward): full-vocabulary logits of a 16,384-token sample are ~10 GB in fp32, a chunk "
        "of 1,024 positions 0.6 GB. None: all positions at once (the plain cross-entropy).",
    )
    too_long: Literal["drop"] = Field(
        default="drop",
        description="What happens to a sample longer than cutoff_len: 'drop' leaves its slot "
        "in the batch empty when it is drawn (the step trains on the other samples) and counts "
        "it once (reported and logged). Samples are never truncated: a cut through an "
        "image-token run would crash the vision merge, and a cut answer teaches nothing.",
    )

    # Model.
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="'bf16': bf16 autocast with fp32 master weights (paper); 'fp32'; "
        "'auto': bf16 on a GPU that supports it, else fp32 (CPU).",
    )
    freeze_vision: bool = Field(
        default=False,
        description="Freeze the vision tower (patch embedding, ViT blocks and patch merger); "
        "frozen parameters are left out of the optimiser.",
    )
    vision_lr_scale: float = Field(
        default=1.0,
        gt=0.0,
        description="The vision tower's learning rate is lr x this (the paper: one lr for "
        "all, 1). A randomly initialised tiny model may learn to read its images sooner with "
        "a faster tower.",
    )
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in backward to save memory."
    )

    # Evaluation and model selection.
    eval_fraction: float = Field(
        default=0.05,
        ge=0.0,
        le=0.5,
        description="Share of the dataset held out for evaluation: the round(fraction * rows) "
        "rows with the smallest seeded hash of their row index (at least one when the fraction "
        "is > 0 and the dataset has two or more rows). 0: no evaluation.",
    )
    eval_every: int = Field(
        default=100, ge=1, description="Evaluate every this many optimiser steps (and at the end)."
    )
    eval_max_items: int = Field(
        default=64,
        ge=0,
        description="Held-out items answered by greedy generation for eval_accuracy and "
        "eval_format (0: loss only).",
    )
    eval_max_new_tokens: int = Field(
        default=256, ge=1, description="Generation budget of each evaluation answer."
    )
    best_metric: Literal["eval_loss", "eval_accuracy"] = Field(
        default="eval_loss",
        description="Which evaluation picks the best checkpoint (lower loss / higher accuracy).",
    )

    # Checkpoints and logging.
    save_every: int = Field(
        default=200,
        ge=1,
        description="Write a resumable checkpoint every this many steps (and at the end).",
    )
    keep_last: int = Field(default=2, ge=1, description="Resumable checkpoints to keep.")
    log_every: int = Field(
        default=10, ge=1, description="Report training metrics every this many steps."
    )

    # Runtime.
    seed: int = Field(
        default=0,
        ge=0,
        description="Seeds the eval split, the data order (one permutation per epoch from "
        "seed + epoch, identical on every process) and the global RNGs.",
    )
    num_workers: int = Field(
        default=0,
        ge=0,
        description="DataLoader worker processes per training process that read, decode, "
        "tokenise and collate the samples ahead of the step (0: the training process does it "
        "between steps). Batches are the same for any value.",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch.set_num_threads for each process (None: leave torch's default).",
    )

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        b1, b2 = self.betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must both lie in [0, 1), got {self.betas}")
        if self.best_metric == "eval_accuracy" and self.eval_max_items == 0:
            raise ValueError(
                "best_metric='eval_accuracy' needs generation at evaluation: set "
                "eval_max_items > 0 (or use best_metric='eval_loss')"
            )
        if self.best_metric == "eval_accuracy" and self.eval_fraction == 0:
            raise ValueError("best_metric='eval_accuracy' needs an eval split: eval_fraction > 0")
        return self

    def global_batch_size(self, world_size: int = 1) -> int:
        """Samples per optimiser step across all processes."""
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        return self.micro_batch_size * self.grad_accum * world_size


class SFTResult(BaseModel):
    """What :func:`mmr1.sft.recipe.run_sft` returns and writes to ``output_dir/result.json``."""

    final_checkpoint: str = Field(description="Directory of the final weights (save_pretrained).")
    best_checkpoint: str = Field(
        description="Directory of the best weights by best_metric (the final one if no eval)."
    )
    best_metric: float | None = Field(
        default=None, description="Value of best_metric at the best checkpoint (None: no eval)."
    )
    steps: int = Field(description="Optimiser steps completed (resumed steps included).")
    history: list[dict[str, Any]] = Field(
        default_factory=list, description="Training metrics, one entry per log step."
    )
    eval_history: list[dict[str, Any]] = Field(
        default_factory=list, description="Evaluation metrics, one entry per evaluation."
    )
    dropped_too_long: int = Field(
        default=0,
        description="Distinct samples found longer than cutoff_len and dropped: the training "
        "samples drawn so far (all of them after one epoch) plus the held-out ones.",
    )
    train_samples: int = Field(
        description="Rows in the training split (too-long ones included: dropped when drawn)."
    )
    eval_samples: int = Field(
        description="Rows in the eval split (too-long ones included: left out of eval_loss)."
    )
    tokens_per_s: float = Field(
        default=0.0, description="Non-padding tokens per second of training, this invocation."
    )
    skipped_steps: int = Field(
        default=0, description="Steps whose update was skipped for a non-finite gradient norm."
    )
