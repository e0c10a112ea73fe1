"""GRPO with Variance-Aware Sampling: recipe settings, flow parameters and a run's result.

Defaults are the paper's (docs/METHOD.md sections 6-7, Table 6): G = 8, temperature
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

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from schemas.base import ConfigModel, StageConfig
from schemas.generation import SamplingParams, VLLMBackendConfig
from schemas.launch import LaunchConfig
from schemas.refs import CheckpointInput, CheckpointOutput, DatasetInput, VPSInput
from schemas.registry import ADVANTAGE_SCALES, LOSS_AGGREGATIONS
from schemas.rewards import RewardConfig
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
        description="Share of the GPU the engine may take (its weights, KV cache and "
        "activations); the rest holds the policy, the reference, optimizer states and "
        "activations. It must be free when the engine starts (after the policy is loaded).",
    )
    sleep_between_rollouts: bool = Field(
        default=False,
        description="Put the engine to sleep after each generation (vLLM sleep mode level 1: "
        "weights copied to CPU memory, KV cache freed) and wake it before the next one, so "
        "the update phase gets that GPU memory back. Costs a host-to-device copy of the "
        "weights per wake-up and CPU memory for one copy per process.",
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
    max_prompt_length: int | None = Field(
        default=None,
        ge=1,
        description="Longest prompt in tokens, image tokens included (paper: 2048). Longer "
        "prompts are dropped from the pool before training (counted in the result as "
        "'prompt_too_long', listed in dropped_prompts.parquet), never cut. None: no limit.",
    )
    logprob_chunk_size: int | None = Field(
        default=512,
        ge=1,
        description="Response positions whose full-vocabulary logits exist at once when "
        "computing log-probs and entropy (memory ~ a few x chunk x vocab x 4 bytes; with "
        "gradients each chunk is recomputed in the backward pass). None: the whole "
        "micro-batch at once (rows x response length x vocab).",
    )
    compute_entropy: bool = Field(
        default=True,
        description="Log the mean token entropy of the policy in the update pass (a metric "
        "only, no entropy bonus; computed chunk by chunk without gradient).",
    )
    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.6, top_p=1.0, max_new_tokens=4096),
        description="Rollout sampling (n and seed are set per step).",
    )
    rollout_batch_size: int = Field(
        default=16,
        ge=1,
        description="Prompts per generation call; each chunk of this many prompts of a step "
        "samples with its own seed.",
    )
    generation_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="hf backend: most sequences per model.generate call (its KV cache grows "
        "with this x (prompt + max_new_tokens)); a call of rollout_batch_size x group_size "
        "sequences is cut into several. Deterministic for a given value, but a different "
        "value samples differently (see mmr1.generation.hf). None: rollout_batch_size x "
        "group_size at once. vLLM batches by itself within gpu_memory_utilization.",
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
    advantage_scale: Annotated[str, ADVANTAGE_SCALES.field()] = Field(
        default="group",
        description="A registered advantage scale: 'group' (r - mean) / (std + eps), or 'none' "
        "r - mean (Dr.GRPO).",
    )
    clip_low: float = Field(default=0.2, ge=0.0, lt=1.0, description="PPO epsilon_low.")
    clip_high: float = Field(
        default=0.2, ge=0.0, description="PPO epsilon_high (> clip_low: clip-higher)."
    )
    loss_agg: Annotated[str, LOSS_AGGREGATIONS.field()] = Field(
        default="token-mean",
        description="A registered loss aggregation (paper: token-mean; also seq-mean-token-mean). "
        "seq-mean-token-sum-norm (Dr.GRPO) divides by rows x sampling.max_new_tokens.",
    )
    kl_coef: float = Field(
        default=0.01, ge=0.0, description="k3 KL coefficient; 0 skips the reference model."
    )
    # -- optimiser
    lr: float = Field(
        default=1e-6, gt=0.0, description="AdamW learning rate (constant after any warmup)."
    )
    warmup_steps: int = Field(
        default=0,
        ge=0,
        description="Linear lr warmup over the first this many steps (step s trains at "
        "lr * s / warmup_steps). 0: the paper's constant lr from the first step.",
    )
    weight_decay: float = Field(default=0.01, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field(
        default=(0.9, 0.999), description="AdamW (beta1, beta2) moment decay rates."
    )
    max_grad_norm: float = Field(
        default=1.0,
        gt=0.0,
        description="Global gradient clipping (under DeepSpeed: its gradient_clipping).",
    )
    freeze_vision: bool = Field(default=False, description="Paper: the vision tower is trained.")
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less memory, ~30% slower.",
    )
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
    vps: VPSScoreConfig = Field(
        default_factory=VPSScoreConfig,
        description="How VPS combines its parts: alpha * OVS + beta * TDS (docs/METHOD.md 5).",
    )
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
    rewards: RewardConfig = Field(
        default_factory=RewardConfig,
        description="Reward weights and answer-verification limits (deadline, workers).",
    )
    reward_function: str | None = Field(
        default=None,
        pattern=r"^[\w.]+:\w+$",
        description="'package.module:function' replacing the shared verifier: called as "
        "f(responses, golds, choices) -> list[RewardScore]. Must be deterministic for exact "
        "resume. None: accuracy + format from mmr1.rewards (the paper's reward).",
    )
    # -- bookkeeping
    log_every: int = Field(
        default=1, ge=1, description="Log step metrics every this many steps (and the last)."
    )
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
            needed = (self.max_prompt_length or 0) + self.sampling.max_new_tokens
            if self.max_prompt_length is not None and self.vllm.max_model_len < needed:
                raise ValueError(
                    f"vllm.max_model_len ({self.vllm.max_model_len}) is shorter than "
                    f"max_prompt_length + sampling.max_new_tokens ({needed}): the longest "
                    "prompts kept could not finish their responses"
                )
        return self


class GRPOStageConfig(StageConfig):
    """Parameters of the ``grpo_vas`` flow (a form in the Prefect UI)."""

    REQUIRED = ("dataset", "init_model")

    dataset: DatasetInput | None = Field(
        default=None,
        description="Catalog ref of the RL pool. "
        "None: set by mmr1-pipeline; required when the flow runs on its own.",
    )
    init_model: CheckpointInput | None = Field(
        default=None,
        description="Starting (and reference) model: catalog ref, local directory or hub id. "
        "None: set by mmr1-pipeline; required when the flow runs on its own.",
    )
    vps_table: VPSInput | None = Field(
        default=None,
        description="Catalog ref of the initial VPS table; None: the newest table of the "
        "dataset, or none (scores start at the prior) when there is none.",
    )
    output_name: CheckpointOutput = Field(
        default="grpo", description="Catalog name of the RL checkpoints."
    )
    register_every_save: bool = Field(
        default=True,
        description="Register every saved checkpoint as a new catalog version, so scheduled "
        "VPS re-estimation can follow the run ('latest checkpoint of this run').",
    )
    train: GRPOConfig = Field(
        default_factory=GRPOConfig, description="The GRPO recipe: rollouts, loss, optimiser, VAS."
    )
    launch: LaunchConfig = Field(
        default_factory=LaunchConfig,
        description="Where training runs: in the flow's process, or an accelerate launch job.",
    )


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
    pool_prompts: int = Field(default=0, description="Prompts of the pool trained on (kept).")
    dropped_prompts: dict[str, int] = Field(
        default_factory=dict,
        description="Prompts dropped from the pool before training, by reason "
        "(e.g. 'prompt_too_long' for max_prompt_length).",
    )
