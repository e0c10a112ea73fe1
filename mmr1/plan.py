"""Per-GPU memory and tokens per step of a training config, from the model's shapes (``mmr1 plan``).

Estimates, not measurements: they say which phase of a step needs what, and
which field to change when a GPU is too small. All byte counts are per GPU.

Notation: Psi parameters, Psi_t the trainable ones (Psi minus the vision tower
when it is frozen); N data-parallel processes (GPUs of the whole job); l
layers, h hidden size, i MLP width, k KV heads x head dim, V vocabulary; b_p
bytes of a parameter as the job holds it, b_c bytes of a computed value.

**Parameters** (Qwen2 decoder, Qwen2.5-VL vision tower; exact for those, checked
against transformers): per decoder layer ``2h^2 + 2hk`` attention weights plus
``h + 2k`` biases (q, k, v), ``3hi`` MLP, ``2h`` norms; embeddings ``Vh`` (twice
when the output head is untied) and a final norm ``h``. Vision (width w, MLP
width m, merge size s, patch p, temporal patch t, channels c): patch embedding
``c t p^2 w``; per block ``4w^2 + 4w`` attention, ``3wm + 2m + w`` MLP, ``2w``
norms; merger ``w + (s^2 w)^2 + s^2 w + s^2 w h + h``. Qwen2.5-VL-7B: 8,292,166,656
(7,615,616,512 language + 676,550,144 vision), i.e. 15.45 GiB (16.58 GB) in bf16.

**Model states** (weights / gradients / optimizer), by how the job is launched:

==================  ============  ==========================  =====================
layout              weights       gradients                   AdamW states
==================  ============  ==========================  =====================
DDP (fp32+autocast) 4 Psi         4 Psi_t + 4 Psi_t buckets   8 Psi_t (m, v)
FSDP full shard     4 Psi / N     4 Psi_t / N                 8 Psi_t / N
ZeRO-0/1, bf16      2 Psi         2 Psi_t                     12 Psi_t (/ N if 1)
ZeRO-2, bf16        2 Psi         2 Psi_t / N                 12 Psi_t / N
ZeRO-3, bf16        2 Psi / N     2 Psi_t / N                 12 Psi_t / N
==================  ============  ==========================  =====================

(12 = fp32 master copy 4 + m 4 + v 4; without bf16 DeepSpeed keeps fp32 weights
and gradients and 8 bytes of states; an optimizer offloaded to CPU costs no GPU
memory, nor do offloaded ZeRO-3 parameters). DDP's reducer keeps its own copy of
the gradients in buckets (``gradient_as_bucket_view`` is off); a lone process has none.

**Reference model** (GRPO with ``kl_coef > 0``): a full, unsharded copy in the
policy's parameter dtype, ``b_p Psi``.

**KV cache** of one ``generate`` call (hf rollouts): ``2 l k b_c`` bytes per token
x sequences x (prompt + new tokens); 7B in bf16: 57,344 bytes per token, so 256
sequences x 6,144 tokens ~ 84 GiB. vLLM takes ``gpu_memory_utilization`` of the
GPU instead (its weights ``2 Psi``, KV cache and activations).

**Activations** of a micro-batch of T tokens: ``A = 28h + 8i`` bytes per token
and layer in bf16 compute (attention with O(T) memory, fp32 norm inputs).
Without gradient checkpointing ``l T A``; with it the layer inputs ``l T h b_p``
(the residual stream has the parameter dtype) plus one layer recomputed, ``T A``.
The vision tower's activations are left out (small next to long responses).

**Logits**: GRPO runs the output head ``logprob_chunk_size`` positions at a time:
``chunk x V x 8`` bytes with the entropy metric (fp32 logits and probabilities),
``x 6`` without, plus the head's weight gradient in the backward pass,
``V h b_c`` (and a cast copy ``V h (b_c + b_p)`` when the weights are fp32).
SFT's loss projects ``loss_chunk_size`` positions at a time too (``chunk x V x 6``:
fp32 logits and their gradient in place); unchunked it holds ``T x V x 10`` bytes (bf16 logits,
their fp32 copy and fp32 log-softmax).

**Budget**: ``usable = 0.9 x GPU memory`` (CUDA context, NCCL buffers,
allocator fragmentation take the rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

GIB = 1024**3
#: Share of a GPU's memory a plan may fill (the rest: CUDA context, NCCL, fragmentation).
USABLE_FRACTION = 0.9
#: vLLM's own activations and CUDA graphs inside its share, on top of weights and KV cache.
VLLM_OVERHEAD_BYTES = 2 * GIB
#: Prompt length assumed when a GRPO config sets no max_prompt_length (the paper's limit).
ASSUMED_PROMPT_TOKENS = 2048


@dataclass(frozen=True)
class VisionShape:
    """A Qwen2.5-VL vision tower (``vision_config`` of config.json)."""

    depth: int
    hidden_size: int
    intermediate_size: int
    out_hidden_size: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    in_channels: int = 3
    spatial_merge_size: int = 2

    @property
    def params(self) -> int:
        w, m, s2 = self.hidden_size, self.intermediate_size, self.spatial_merge_size**2
        patch = self.in_channels * self.temporal_patch_size * self.patch_size**2 * w
        block = (4 * w * w + 4 * w) + (3 * w * m + 2 * m + w) + 2 * w
        merged = s2 * w
        merger = w + merged * merged + merged + merged * self.out_hidden_size + self.out_hidden_size
        return patch + self.depth * block + merger


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need of a model: its text decoder, and its vision tower if any."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int | None = None
    vision: VisionShape | None = None

    @property
    def kv_dim(self) -> int:
        """k: key (= value) width, KV heads x head dim."""
        head_dim = self.head_dim or self.hidden_size // self.num_heads
        return self.num_kv_heads * head_dim

    @property
    def language_params(self) -> int:
        h, k, i = self.hidden_size, self.kv_dim, self.intermediate_size
        layer = (2 * h * h + 2 * h * k) + (h + 2 * k) + 3 * h * i + 2 * h
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embeddings + h

    @property
    def vision_params(self) -> int:
        return self.vision.params if self.vision else 0

    @property
    def params(self) -> int:
        return self.language_params + self.vision_params

    def kv_bytes_per_token(self, compute_bytes: int) -> int:
        """``2 l k b_c``: keys and values of every layer for one token."""
        return 2 * self.num_layers * self.kv_dim * compute_bytes

    def activation_bytes_per_token_layer(self) -> int:
        """``A = 28h + 8i`` (bf16 compute; see the module docstring)."""
        return 28 * self.hidden_size + 8 * self.intermediate_size


@dataclass(frozen=True)
class Layout:
    """How the job holds model states: plain DDP, FSDP, or DeepSpeed ZeRO at ``zero_stage``."""

    kind: Literal["ddp", "fsdp", "zero"]
    bf16: bool
    zero_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    source: str = ""

    @property
    def param_bytes(self) -> int:
        """b_p: DeepSpeed's bf16 engine holds bf16 weights; otherwise fp32 master weights."""
        return 2 if self.kind == "zero" and self.bf16 else 4

    @property
    def compute_bytes(self) -> int:
        return 2 if self.bf16 else 4

    def describe(self) -> str:
        name = {"ddp": "DDP", "fsdp": "FSDP (full shard)"}.get(
            self.kind, f"DeepSpeed ZeRO-{self.zero_stage}"
        )
        extra = [x for x, on in (("optimizer on CPU", self.offload_optimizer),) if on]
        extra += ["parameters on CPU"] if self.offload_params else []
        precision = "bf16" if self.bf16 else "fp32"
        return ", ".join([name, precision, *extra])


def model_states(
    shape: ModelShape, layout: Layout, processes: int, trainable: int
) -> tuple[int, int, int]:
    """(weights, gradients, optimizer states) in bytes per GPU (module docstring table)."""
    n, psi = max(1, processes), shape.params
    if layout.kind == "ddp":  # the reducer's buckets copy the gradients (several processes)
        return 4 * psi, (8 if n > 1 else 4) * trainable, 8 * trainable
    if layout.kind == "fsdp":
        return 4 * psi // n, 4 * trainable // n, 8 * trainable // n
    stage, b = layout.zero_stage, layout.param_bytes
    states = (12 if layout.bf16 else 8) * trainable
    weights = b * psi // n if stage >= 3 else b * psi
    gradients = b * trainable // n if stage >= 2 else b * trainable
    optimizer = states // n if stage >= 1 else states
    if layout.offload_optimizer:
        optimizer = 0
    if layout.offload_params and stage >= 3:
        weights = 0
    return weights, gradients, optimizer


def activation_bytes(shape: ModelShape, tokens: int, *, checkpointing: bool, layout: Layout) -> int:
    """Activations kept for the backward pass of one micro-batch of ``tokens`` tokens."""
    per_layer = shape.activation_bytes_per_token_layer() * tokens
    if not checkpointing:
        return shape.num_layers * per_layer
    return shape.num_layers * tokens * shape.hidden_size * layout.param_bytes + per_layer


def gathered_bytes(shape: ModelShape, layout: Layout) -> int:
    """ZeRO-3 gathers each module's parameters before using them: the largest ones at a time."""
    h, k, i = shape.hidden_size, shape.kv_dim, shape.intermediate_size
    layer = 2 * h * h + 2 * h * k + 3 * h * i
    return layout.param_bytes * (shape.vocab_size * h + layer)


def head_bytes(shape: ModelShape, layout: Layout) -> int:
    """Transient of the output head's backward: its weight gradient (and cast copies)."""
    vh = shape.vocab_size * shape.hidden_size
    b_c, b_p = layout.compute_bytes, layout.param_bytes
    return vh * b_c if b_c == b_p else vh * (2 * b_c + b_p)


@dataclass
class Component:
    """One term of a phase: its size, and the config field that controls it."""

    name: str
    bytes: int
    field: str | None = None
    note: str = ""
    detail: str = ""


@dataclass
class Phase:
    """What is on one GPU at the peak of a phase of a step."""

    name: str
    components: list[Component]

    @property
    def total(self) -> int:
        return sum(c.bytes for c in self.components)

    def get(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


@dataclass
class Plan:
    """The estimate for one stage config on ``gpus`` GPUs of ``gpu_memory`` bytes."""

    stage: Literal["sft", "grpo"]
    model: str
    shape: ModelShape
    layout: Layout
    gpus: int
    gpu_memory: int
    phases: list[Phase]
    tokens: dict[str, int]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # the config fields the problems name

    @property
    def usable(self) -> int:
        return int(self.gpu_memory * USABLE_FRACTION)

    @property
    def fits(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """JSON form (GiB, rounded to 0.01)."""
        return {
            "stage": self.stage,
            "model": self.model,
            "params": self.shape.params,
            "vision_params": self.shape.vision_params,
            "layout": self.layout.describe(),
            "gpus": self.gpus,
            "gpu_memory_gib": round(self.gpu_memory / GIB, 2),
            "usable_gib": round(self.usable / GIB, 2),
            "phases": {
                p.name: {
                    **{c.name: round(c.bytes / GIB, 2) for c in p.components},
                    "total": round(p.total / GIB, 2),
                }
                for p in self.phases
            },
            "tokens": self.tokens,
            "fits": self.fits,
            "problems": self.problems,
            "fields_to_change": self.fields,
            "notes": self.notes,
        }


def gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def _static(
    shape: ModelShape, layout: Layout, gpus: int, trainable: int, *, gradients: bool
) -> list[Component]:
    weights, grads, optimizer = model_states(shape, layout, gpus, trainable)
    parts = [
        Component("weights", weights, "launch.accelerate_config"),
        Component("optimizer states", optimizer, "launch.accelerate_config"),
    ]
    if layout.kind == "zero" and layout.zero_stage >= 3:
        parts.append(
            Component(
                "gathered parameters",
                gathered_bytes(shape, layout),
                detail="ZeRO-3: the embedding and one decoder layer whole at a time",
            )
        )
    if gradients:
        parts.insert(1, Component("gradients", grads, "launch.accelerate_config"))
    elif layout.kind == "ddp" and gpus > 1:  # DDP's reducer buckets outlive the step
        parts.insert(1, Component("gradient buckets", grads // 2, "launch.accelerate_config"))
    return parts


def _check(plan: Plan) -> None:
    """Record a problem for every phase over budget, naming its largest controllable term."""
    for phase in plan.phases:
        if phase.total <= plan.usable:
            continue
        over = phase.total - plan.usable
        culprits = sorted(
            (c for c in phase.components if c.field), key=lambda c: c.bytes, reverse=True
        )
        hint = "; ".join(
            f"{c.name}{f' ({c.detail})' if c.detail else ''} {gib(c.bytes)} GiB: {c.field}{c.note}"
            for c in culprits[:3]
        )
        plan.fields += [c.field for c in culprits[:3] if c.field and c.field not in plan.fields]
        plan.problems.append(
            f"{phase.name}: {gib(phase.total)} GiB > {gib(plan.usable)} GiB usable "
            f"({gib(over)} GiB over). Largest terms: {hint}"
        )


def plan_grpo(
    config: Any, shape: ModelShape, layout: Layout, *, gpus: int, gpu_memory: int, model: str
) -> Plan:
    """Phases of a GRPO step (``config`` a ``schemas.grpo.GRPOConfig``): rollout, update."""
    cfg = config
    trainable = shape.params - (shape.vision_params if cfg.freeze_vision else 0)
    notes: list[str] = []
    response = cfg.sampling.max_new_tokens
    seq = _prompt_tokens(cfg, notes) + response
    per_rank = max(1, cfg.prompts_per_step // gpus)
    reference = (
        [Component("reference model", shape.params * layout.param_bytes, "train.kl_coef")]
        if cfg.kl_coef > 0
        else []
    )
    rollout_base = _static(shape, layout, gpus, trainable, gradients=False) + reference

    def generation(n: int, name: str) -> Phase:
        return _generation_phase(
            name, n, rollout_base, cfg, shape, layout, gpu_memory, per_rank=per_rank, seq=seq
        )

    phases = [generation(cfg.group_size, "rollout")]
    if cfg.sampling_mode == "vas" and cfg.vps_update_every and cfg.vps_refresh == "estimate":
        phases.append(generation(cfg.vps_rollouts, "VPS re-estimation"))
    update = _static(shape, layout, gpus, trainable, gradients=True) + reference
    update += _update_terms(cfg, shape, layout, gpu_memory, seq=seq, response=response)
    phases.append(Phase("update", update))
    per_step = cfg.prompts_per_step * cfg.group_size
    plan = Plan(
        "grpo",
        model,
        shape,
        layout,
        gpus,
        gpu_memory,
        phases,
        tokens={
            "sequences_per_step": per_step,
            "max_tokens_per_step": per_step * seq,
            "max_new_tokens_per_step": per_step * response,
            "max_tokens_per_gpu_per_step": per_rank * cfg.group_size * seq,
        },
        notes=notes,
    )
    if cfg.rollout_backend == "vllm":
        _check_vllm(plan, cfg, seq)
    _check(plan)
    return plan


def _prompt_tokens(cfg: Any, notes: list[str]) -> int:
    """``train.max_prompt_length``, or ``ASSUMED_PROMPT_TOKENS`` (noted in ``notes``) if unset."""
    if cfg.max_prompt_length is not None:
        return cfg.max_prompt_length
    notes.append(
        f"train.max_prompt_length is unset: prompts assumed {ASSUMED_PROMPT_TOKENS} tokens "
        "(images count; set it to drop longer prompts)"
    )
    return ASSUMED_PROMPT_TOKENS


def _generation_phase(
    name: str,
    n: int,
    base: list[Component],
    cfg: Any,
    shape: ModelShape,
    layout: Layout,
    gpu_memory: int,
    *,
    per_rank: int,
    seq: int,
) -> Phase:
    """Generating ``n`` samples per prompt: ``base`` + the vLLM share, or KV cache + logits (hf)."""
    if cfg.rollout_backend == "vllm":
        share = int(cfg.vllm.gpu_memory_utilization * gpu_memory)
        return Phase(
            name, [*base, Component("vLLM engine", share, "train.vllm.gpu_memory_utilization")]
        )
    kv_token = shape.kv_bytes_per_token(layout.compute_bytes)
    rows = _generate_rows(cfg, per_rank, n)
    kv = Component(
        "KV cache",
        rows * seq * kv_token,
        "train.generation_batch_size",
        f" <= {_max_rows(gpu_memory, base, seq * kv_token, n)}",
        detail=f"{rows} sequences x {seq} tokens per generate call",
    )
    logits = Component("sampling logits", rows * shape.vocab_size * 4)
    return Phase(name, [*base, kv, logits])


def _update_terms(
    cfg: Any, shape: ModelShape, layout: Layout, gpu_memory: int, *, seq: int, response: int
) -> list[Component]:
    """An update's terms beyond the model states: activations, logits chunk, head gradient
    (and the vLLM engine when it stays awake)."""
    chunk = cfg.logprob_chunk_size or cfg.micro_batch_size * response
    terms = [
        _activations(cfg, shape, layout, seq),
        Component(
            "logits chunk",
            chunk * shape.vocab_size * (8 if cfg.compute_entropy else 6),
            "train.logprob_chunk_size",
            detail=f"{chunk} positions x {shape.vocab_size} vocabulary",
        ),
        Component("output head gradient", head_bytes(shape, layout)),
    ]
    if cfg.rollout_backend == "vllm" and not cfg.vllm.sleep_between_rollouts:
        share = int(cfg.vllm.gpu_memory_utilization * gpu_memory)
        terms.append(
            Component(
                "vLLM engine (awake)",
                share,
                "train.vllm.sleep_between_rollouts",
                ": true frees it during updates",
            )
        )
    return terms


def _activations(cfg: Any, shape: ModelShape, layout: Layout, seq: int) -> Component:
    """Activations of one micro-batch of ``train.micro_batch_size`` sequences of ``seq`` tokens."""
    return Component(
        "activations",
        activation_bytes(
            shape,
            cfg.micro_batch_size * seq,
            checkpointing=cfg.gradient_checkpointing,
            layout=layout,
        ),
        "train.micro_batch_size",
        "" if cfg.gradient_checkpointing else " (or train.gradient_checkpointing: true)",
        detail=f"{cfg.micro_batch_size} sequences x {seq} tokens",
    )


def _generate_rows(cfg: Any, per_rank: int, n: int) -> int:
    """Sequences in one ``generate`` call of the hf backend (mmr1.generation.hf)."""
    prompts = min(cfg.rollout_batch_size, per_rank)
    limit = cfg.generation_batch_size
    if limit is None:
        return prompts * n
    if n <= limit:
        return min(prompts, max(1, limit // n)) * n
    return limit


def _max_rows(gpu_memory: int, base: list[Component], per_row: int, n: int) -> int:
    """Largest generation_batch_size whose KV cache fits next to ``base`` (0: none)."""
    free = int(gpu_memory * USABLE_FRACTION) - sum(c.bytes for c in base)
    return max(0, free // max(1, per_row))


def _check_vllm(plan: Plan, cfg: Any, seq: int) -> None:
    """The engine's share must hold its bf16 weights and at least one full-length sequence."""
    share = int(cfg.vllm.gpu_memory_utilization * plan.gpu_memory)
    kv_token = plan.shape.kv_bytes_per_token(2)
    free = share - 2 * plan.shape.params - VLLM_OVERHEAD_BYTES
    sequences = free // (kv_token * cfg.vllm.max_model_len) if free > 0 else 0
    plan.tokens["vllm_kv_cache_tokens"] = max(0, free // kv_token)
    if sequences < 1:
        plan.fields.append("train.vllm.gpu_memory_utilization")
        plan.problems.append(
            f"vLLM: gpu_memory_utilization {cfg.vllm.gpu_memory_utilization} gives the engine "
            f"{gib(share)} GiB, not enough for its bf16 weights ({gib(2 * plan.shape.params)} "
            f"GiB) and one {cfg.vllm.max_model_len}-token sequence: raise "
            "train.vllm.gpu_memory_utilization (or lower train.vllm.max_model_len)"
        )
    else:
        plan.notes.append(
            f"vLLM engine: {gib(max(free, 0))} GiB KV cache = {sequences} concurrent sequences "
            f"of max_model_len {cfg.vllm.max_model_len} ({seq} needed per rollout)"
        )


def _sft_logits(cfg: Any, tokens: int, vocab: int) -> Component:
    """The loss's logits: ``loss_chunk_size`` positions at a time, else the whole micro-batch."""
    if cfg.loss_chunk_size is None:
        return Component(
            "logits",
            tokens * vocab * 10,
            "train.loss_chunk_size",
            detail=f"{tokens} positions x {vocab} vocabulary, not chunked",
        )
    chunk = min(cfg.loss_chunk_size, tokens)
    return Component(
        "logits chunk",
        chunk * vocab * 6,
        "train.loss_chunk_size",
        detail=f"{chunk} positions x {vocab} vocabulary",
    )


def plan_sft(
    config: Any, shape: ModelShape, layout: Layout, *, gpus: int, gpu_memory: int, model: str
) -> Plan:
    """The one phase of an SFT step (``config`` a ``schemas.sft.SFTConfig``): forward/backward."""
    cfg = config
    trainable = shape.params - (shape.vision_params if cfg.freeze_vision else 0)
    tokens = cfg.micro_batch_size * cfg.cutoff_len
    step = _static(shape, layout, gpus, trainable, gradients=True)
    step += [
        _activations(cfg, shape, layout, cfg.cutoff_len),
        _sft_logits(cfg, tokens, shape.vocab_size),
        Component("output head gradient", head_bytes(shape, layout)),
    ]
    global_batch = cfg.micro_batch_size * cfg.grad_accum * gpus
    plan = Plan(
        "sft",
        model,
        shape,
        layout,
        gpus,
        gpu_memory,
        [Phase("train step", step)],
        tokens={
            "sequences_per_step": global_batch,
            "max_tokens_per_step": global_batch * cfg.cutoff_len,
            "max_tokens_per_gpu_per_step": cfg.micro_batch_size * cfg.grad_accum * cfg.cutoff_len,
        },
    )
    _check(plan)
    return plan
