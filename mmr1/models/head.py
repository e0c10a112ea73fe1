"""The output head applied in chunks: token log-probs without full-vocabulary logits.

Shared by GRPO's re-scoring (:mod:`mmr1.rl.batch`) and the SFT loss
(:mod:`mmr1.sft.loss`). Full logits for a micro-batch are ``rows x T x V``
floats (4 x 4,097 x 151,936 x 4 bytes ~ 10 GB at GRPO's paper lengths; 16,384
positions for SFT). They are never built. The model runs up to its final hidden
states (a pre-hook on the output head takes its input and hands the head an
empty slice, :func:`final_hidden_states`), then the head is applied to the
positions that matter only, ``chunk_size`` positions at a time
(:func:`token_logprobs`)::

    z     = head(h_chunk).float() / T, z[:, masked ids] = -inf   # (chunk, V)
    logp  = z[target] - logsumexp(z)                             # (chunk,)
    H     = -sum_v p_v log p_v  (no gradient)                    # (chunk,)

Each chunk is one autograd node (:class:`_HeadLogprobs`) that keeps only its
hidden states and ``logsumexp(z)``, and recomputes its logits in the backward
pass, where they become the logits' gradient in place. Peak memory is a few
``chunk x V`` tensors whatever the sequence length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The output projection (``lm_head``) of ``model``, through DDP / DeepSpeed wrappers."""
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):
        inner = inner.module
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is None:
        raise ValueError(f"{type(inner).__name__} has no output embeddings (lm_head)")
    return head


def final_hidden_states(
    model: torch.nn.Module, head: torch.nn.Module, inputs: dict[str, torch.Tensor], *, keep: int
) -> tuple[torch.Tensor, torch.autocast]:
    """The hidden states the head would project for the last ``keep`` positions, (rows, keep, H),
    and the autocast state the head would have run under.

    ``model``'s own forward runs (with ``logits_to_keep=keep``); a forward
    pre-hook on ``head`` takes its input and gives it an empty slice, so no
    logits are computed there. A wrapped model may autocast inside its forward
    (Accelerate's mixed precision): the hook records that state so the chunks
    are projected in the same precision.
    """
    captured: list[torch.Tensor] = []
    states: list[torch.autocast] = []

    def take(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        device = hidden.device.type
        states.append(
            torch.autocast(
                device,
                dtype=torch.get_autocast_dtype(device),
                enabled=torch.is_autocast_enabled(device),
            )
        )
        captured.append(hidden)
        return (hidden[..., :0, :], *args[1:])

    handle = head.register_forward_pre_hook(take)
    try:
        model(**inputs, logits_to_keep=keep, use_cache=False)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one call of the output head, saw {len(captured)}")
    return captured[0], states[0]


def token_logprobs(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    head: torch.nn.Module,
    *,
    temperature: float,
    suppress_ids: Sequence[int],
    chunk_size: int | None = None,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log_softmax(masked(head(hidden)) / T)[targets]`` for N positions, chunked: (N,), (N,).

    ``hidden`` (N, H), ``targets`` (N,) long, ``head`` a ``torch.nn.Linear``. At
    most ``chunk_size`` rows of logits exist at a time (None: N), in the forward
    and in the backward pass (:class:`_HeadLogprobs` recomputes them). The head
    computes in the precision autocast would give it here. Chunking changes no
    value beyond the matmul's summation order.
    """
    if not isinstance(head, torch.nn.Linear):
        raise TypeError(f"the output head must be a torch.nn.Linear, got {type(head).__name__}")
    n = int(hidden.shape[0])
    size = n if chunk_size is None else max(1, int(chunk_size))
    suppress = (
        torch.tensor(list(suppress_ids), dtype=torch.long, device=hidden.device)
        if suppress_ids
        else None
    )
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        compute = torch.get_autocast_dtype(device)
    else:
        compute = torch.promote_types(hidden.dtype, head.weight.dtype)
    scale = float(temperature) if temperature > 0 else 1.0
    logps: list[torch.Tensor] = []
    entropies: list[torch.Tensor] = []
    for start in range(0, max(n, 1), size):
        logp, entropy = _HeadLogprobs.apply(
            hidden[start : start + size],
            head.weight,
            head.bias,
            targets[start : start + size],
            suppress,
            scale,
            compute,
            with_entropy,
        )
        logps.append(logp)
        entropies.append(entropy)
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)


def _scaled_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    suppress: torch.Tensor | None,
    scale: float,
    compute: torch.dtype,
) -> torch.Tensor:
    """``masked(linear(hidden) in `compute` precision, as float32) / T``, shape (chunk, V).

    The same operations as ``head(hidden).float() / T`` then ``[:, ids] = -inf``
    under autocast (inputs cast to ``compute``), one fp32 (chunk, V) tensor kept.
    """
    bias = None if bias is None else bias.to(compute)
    logits = torch.nn.functional.linear(hidden.to(compute), weight.to(compute), bias).float()
    if scale != 1.0:
        logits.div_(scale)
    if suppress is not None:
        logits.index_fill_(-1, suppress, float("-inf"))
    return logits


class _HeadLogprobs(torch.autograd.Function):
    """One chunk: the sampled tokens' log-probs (and entropy) from the head's input.

    Forward (no graph inside): ``z = masked(h W^T + b) / T`` (chunk, V) fp32,
    ``logp = z[target] - logsumexp(z)``, ``H = -sum p log p``; only the inputs and
    ``logsumexp(z)`` are saved. Backward recomputes ``z`` and turns it in place
    into the gradient of the logits, ``g (onehot(target) - softmax(z)) / T`` (0 at
    masked ids), then ``dh = dz W`` and ``dW = dz^T h`` in the forward's
    precision. Entropy carries no gradient (a metric).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        suppress: torch.Tensor | None,
        scale: float,
        compute: torch.dtype,
        with_entropy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(hidden.device.type, enabled=False):
            logits = _scaled_logits(hidden, weight, bias, suppress, scale, compute)
            normaliser = torch.logsumexp(logits, dim=-1)
            logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - normaliser
            entropy = logp.new_zeros(0)
            if with_entropy:
                probs = torch.softmax(logits, dim=-1)
                log_probs = logits.sub_(normaliser.unsqueeze(-1))
                # p log p is NaN exactly where p = 0 and log p = -inf (masked ids): they add 0.
                entropy = -probs.mul_(log_probs).nansum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, suppress, normaliser)
        ctx.scale, ctx.compute = scale, compute
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_logp: torch.Tensor, grad_entropy: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, targets, suppress, normaliser = ctx.saved_tensors
        compute = ctx.compute
        with torch.autocast(hidden.device.type, enabled=False):
            grad = _scaled_logits(hidden, weight, bias, suppress, ctx.scale, compute)
            grad.sub_(normaliser.unsqueeze(-1)).exp_()  # softmax(z); 0 at masked ids
            grad.mul_(-grad_logp.unsqueeze(-1))
            grad.scatter_add_(-1, targets.unsqueeze(-1), grad_logp.unsqueeze(-1).to(grad.dtype))
            if ctx.scale != 1.0:
                grad.div_(ctx.scale)
            if suppress is not None:  # masked logits are constants
                grad.index_fill_(-1, suppress, 0.0)
            grad = grad.to(compute)
            needs = ctx.needs_input_grad
            grad_hidden = (grad @ weight.to(compute)).to(hidden.dtype) if needs[0] else None
            grad_weight = (grad.t() @ hidden.to(compute)).to(weight.dtype) if needs[1] else None
            grad_bias = grad.sum(0).to(bias.dtype) if bias is not None and needs[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None
