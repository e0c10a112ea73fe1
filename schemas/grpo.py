"""GRPO with Variance-Aware Sampling: recipe settings, flow parameters and a run's result.

Defaults are the paper's (docs/METHOD.md section 7, Table 6): G = 8, temperature
0.6, top-p 1.0, PPO clip 0.2/0.2, token-mean loss, k3 KL with coefficient
0.01 against the frozen starting model, AdamW lr 1e-6 with weight decay 0.01,
constant schedule, gradient clipping at 1.0, VAS with lambda = 0.5 and
re-estimation every 35 steps with N = 32 rollouts per prompt.

Vocabulary: a **step** is one rollout batch (``prompts_per_step`` prompts x
``group_size`` rollouts); it makes ``ppo_epochs * ceil(prompts_per_step /
mini_batch_prompts)`` optimiser updates. With one update per rollout batch (the
default, as in the paper) training is on-policy: the old log-probs are the
current ones, so the PPO ratio is exactly 1 and ``loss/clip_frac`` is 0 at every
step. That is expected; clipping only acts from the second update on a batch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from schemas.base import ConfigModel
from schemas.generation import SamplingParams, VLLMBackendConfig
from schemas.rewards import RewardConfig
from schemas.sft_flow import LaunchConfig
from schemas.vas import VPSScoreConfig


class VLLMRolloutConfig(VLLMBackendConfig):
    """The colocated vLLM engine of ``rollout_backend: vllm`` (one per training process).

    Weights are pushed from the trained policy into the engine lazily: after an
    optimiser update the engine is marked stale and synced right before the next
    generation (training rollouts or a VPS re-estimation).
    """

    model: str | None = Field(  # type: ignore[assignment]
        default=None,
        description="Checkpoint the engine starts from; None: the policy's own starting "
        "checkpoint (its weights are replaced by the policy's after every update anyway).",
    )
    gpu_memory_utilization: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="Share of the GPU the engine may take; the rest holds the policy, the "
        "reference, optimizer states and activations.",
    )


class GRPOConfig(ConfigModel):
    """How to run GRPO-with-VAS: rollouts, loss, optimiser, VPS refresh, checkpoints."""

    seed: int = Field(default=0, description="Seeds the sampler, rollouts and everything else.")
    steps: int = Field(default=200, ge=1, description="Rollout batches to train on.")
    prompts_per_step: int = Field(
        default=512, ge=1, description="B: prompts per rollout batch, across all processes."
    )
    group_size: int = Field(default=8, ge=2, description="G: rollouts per prompt (paper: 8).")
    mini_batch_prompts: int | None = Field(
        default=None,
        ge=1,
        description="Prompts per optimiser update; None: one update per rollout batch. "
        "With several updates the old log-probs are those of the rollout policy.",
    )
    ppo_epochs: int = Field(default=1, ge=1, description="Passes over each rollout batch.")
    micro_batch_size: int = Field(
        default=8, ge=1, description="Sequences per forward/backward (gradient accumulation)."
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.6, top_p=1.0, max_new_tokens=4096),
        description="Rollout sampling (n and seed are set per step).",
    )
    rollout_batch_size: int = Field(
        default=16,
        ge=1,
        description="Prompts per generation call (one forward batch of the hf backend).",
    )
    rollout_backend: Literal["hf", "vllm"] = Field(
        default="hf",
        description="'hf': generate with the very module being trained (CPU or GPU); 'vllm': "
        "a colocated vLLM engine per process (GPU trainer environment), synced with the "
        "policy weights before generating after each update.",
    )
    vllm: VLLMRolloutConfig = Field(
        default_factory=VLLMRolloutConfig,
        description="Engine settings for rollout_backend 'vllm' (ignored for 'hf').",
    )
    truncated: Literal["keep", "mask"] = Field(
        default="keep",
        description="Responses that hit max_new_tokens: 'keep' trains on them with their "
        "reward; 'mask' excludes their tokens from the loss (they still count in the group "
        "statistics).",
    )
    # -- loss
    advantage_scale: Literal["group", "none"] = Field(
        default="group", description="(r - mean) / (std + eps), or r - mean (Dr.GRPO)."
    )
    clip_low: float = Field(default=0.2, ge=0.0, lt=1.0, description="PPO epsilon_low.")
    clip_high: float = Field(
        default=0.2, ge=0.0, description="PPO epsilon_high (> clip_low: clip-higher)."
    )
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = Field(
        default="token-mean",
        description="How per-token losses are aggregated (paper: token-mean). "
        "seq-mean-token-sum-norm (Dr.GRPO) divides by rows x sampling.max_new_tokens.",
    )
    kl_coef: float = Field(
        default=0.01, ge=0.0, description="k3 KL coefficient; 0 skips the reference model."
    )
    # -- optimiser
    lr: float = Field(default=1e-6, gt=0.0, description="AdamW learning rate (constant).")
    weight_decay: float = Field(default=0.01, ge=0.0)
    betas: tuple[float, float] = Field(default=(0.9, 0.999))
    max_grad_norm: float = Field(
        default=1.0,
        gt=0.0,
        description="Global gradient clipping (under DeepSpeed: its gradient_clipping).",
    )
    freeze_vision: bool = Field(default=False, description="Paper: the vision tower is trained.")
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 autocast on GPUs that support it, else fp32. The frozen "
        "reference runs exactly like the policy (same dtype, same autocast).",
    )
    # -- sampling of prompts (VAS)
    sampling_mode: Literal["uniform", "vas"] = Field(
        default="vas",
        description="'uniform': plain GRPO (shuffled passes); 'vas': Variance-Aware Sampling.",
    )
    mix_ratio: float = Field(
        default=0.5, ge=0.0, le=1.0, description="lambda: VPS-weighted share of each batch."
    )
    vps_floor: float = Field(default=1e-3, gt=0.0, description="Added to every VPS weight.")
    vps_prior: float | None = Field(
        default=None,
        ge=0.0,
        description="VPS of prompts never scored; None: the mean of the known scores.",
    )
    vps: VPSScoreConfig = Field(default_factory=VPSScoreConfig)
    vps_update_every: int | None = Field(
        default=35,
        ge=1,
        description="T_update: refresh the pool's VPS every this many steps (None: never).",
    )
    vps_refresh: Literal["estimate", "catalog"] = Field(
        default="estimate",
        description="'estimate': roll out the current policy on the pool (N rollouts each); "
        "'catalog': read the newest VPS table of the dataset (e.g. written by the scheduled "
        "estimate_vps deployment), keeping the current scores if there is none newer.",
    )
    vps_rollouts: int = Field(
        default=32, ge=2, description="N rollouts per prompt for a re-estimation (paper: 32)."
    )
    online_vps: bool = Field(
        default=True,
        description="Update the sampled prompts' VPS from their G training rollouts each step.",
    )
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    reward_function: str | None = Field(
        default=None,
        pattern=r"^[\w.]+:\w+$",
        description="'package.module:function' replacing the shared verifier: called as "
        "f(responses, golds, choices) -> list[RewardScore]. Must be deterministic for exact "
        "resume. None: accuracy + format from mmr1.rewards (the paper's reward).",
    )
    # -- bookkeeping
    log_every: int = Field(default=1, ge=1)
    save_every: int = Field(default=50, ge=1, description="Checkpoint every this many steps.")
    keep_last: int = Field(default=2, ge=1, description="Checkpoints kept on disk.")
    samples_every: int = Field(
        default=25, ge=1, description="Write sample rollouts every this many steps."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads (None: torch's)."
    )

    @model_validator(mode="after")
    def _check(self) -> GRPOConfig:
        if self.clip_high < self.clip_low:
            raise ValueError(
                f"clip_high ({self.clip_high}) < clip_low ({self.clip_low}); clip-higher "
                "means clip_high >= clip_low"
            )
        if self.mini_batch_prompts is not None and self.mini_batch_prompts > self.prompts_per_step:
            raise ValueError(
                f"mini_batch_prompts ({self.mini_batch_prompts}) > prompts_per_step "
                f"({self.prompts_per_step})"
            )
        if self.rollout_backend == "vllm":
            if self.vllm.tensor_parallel_size != 1:
                raise ValueError(
                    "rollout_backend 'vllm' colocates one engine with each training process: "
                    f"vllm.tensor_parallel_size must be 1, got {self.vllm.tensor_parallel_size}"
                )
            if self.vllm.max_model_len <= self.sampling.max_new_tokens:
                raise ValueError(
                    f"vllm.max_model_len ({self.vllm.max_model_len}) must exceed "
                    f"sampling.max_new_tokens ({self.sampling.max_new_tokens}) plus the prompt"
                )
        return self


class GRPOStageConfig(ConfigModel):
    """Parameters of the ``grpo_vas`` flow (a form in the Prefect UI)."""

    dataset: str = Field(default="synthetic-rl", description="Catalog ref of the RL pool.")
    init_model: str = Field(
        default="tiny-sft", description="Catalog ref of the starting (and reference) model."
    )
    vps_table: str | None = Field(
        default=None,
        description="Catalog ref of the initial VPS table; None: the newest table of the "
        "dataset, or none (scores start at the prior) when there is none.",
    )
    output_name: str = Field(default="grpo", description="Catalog name of the RL checkpoints.")
    register_every_save: bool = Field(
        default=True,
        description="Register every saved checkpoint as a new catalog version, so scheduled "
        "VPS re-estimation can follow the run ('latest checkpoint of this run').",
    )
    train: GRPOConfig = Field(default_factory=GRPOConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)


class GRPOResult(BaseModel):
    """What a finished GRPO run reports (``result.json`` in its output directory)."""

    final_checkpoint: str
    steps: int
    history: list[dict[str, float]] = Field(default_factory=list)
    vps_tables: list[str] = Field(
        default_factory=list, description="Catalog refs of the VPS tables read, in order."
    )
    refreshes: int = Field(default=0, description="Full VPS refreshes performed.")
    skipped_updates: int = Field(default=0, description="Updates skipped for a non-finite norm.")
    saved: list[str] = Field(default_factory=list, description="Checkpoint directories written.")
