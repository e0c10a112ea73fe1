"""The GRPO policy loss: PPO clipped surrogate plus an optional k3 KL term (docs/METHOD.md 7).

Per response token t of sequence b, with ``ratio = exp(logp - old_logp)``::

    pg_t   = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)
    kl_t   = k3(logp, ref_logp) = exp(ref - logp) - (ref - logp) - 1, clamped to [-10, 10]
    loss_t = pg_t + kl_coef * kl_t

and the per-token losses are reduced to a scalar by one of ``LOSS_AGGREGATIONS``
over the response mask. Paper / released yaml: clip_low = clip_high = 0.2,
token-mean, kl_coef = 0.01 with the frozen SFT model as reference.

Gradient accumulation: a batch split into micro-batches (each padded to its own
width) gives the whole-batch gradient when micro-batch k's loss is weighted by
``normaliser_units(mask_k) / sum_j normaliser_units(mask_j)`` and, for
``seq-mean-token-sum-norm``, every micro-batch uses the same ``norm_len`` (the
trainer passes ``max_new_tokens``).

On-policy (one update per rollout batch) the old log-probs are the current ones,
so ``ratio`` is exactly 1 and ``clip_frac`` 0 at every step: expected, not a bug.

Numerical guards (same as verl): the log-ratios ``logp - old_logp`` and
``ref - logp`` are clamped to [-20, 20] before ``exp``. For k3 this changes
nothing (|k3| already exceeds 10 at |x| >= 20 and is then clamped anyway); for the
surrogate it caps the ratio at e^20, far beyond any ratio a real update reaches.
Padding positions are replaced by 0 *before* any arithmetic, so a -inf or NaN
log-prob on a padded token can leak into neither the loss nor the gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from schemas.registry import LOSS_AGGREGATIONS

LOG_RATIO_LIMIT = 20.0
"""Log-ratios are clamped to [-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT] before exponentiation."""

K3_LIMIT = 10.0
"""The k3 estimate is clamped to [-K3_LIMIT, K3_LIMIT] (released code, verl ``low_var_kl``)."""

LossAggregation = Callable[[Tensor, Tensor, int], Tensor]
"""``(loss, mask, norm_len) -> scalar``; ``loss`` float (batch, response_len), ``mask`` bool,
same shape; ``norm_len`` the constant length of ``seq-mean-token-sum-norm`` (others ignore it)."""

# LOSS_AGGREGATIONS (``schemas.registry``): how per-token losses become one scalar, by name;
# configs validate ``loss_agg`` against the names registered here.

NormaliserUnits = Callable[[Tensor], Tensor]
"""``mask -> 0-d count``: what an aggregation divides the summed loss by, up to ``norm_len``."""

NORMALISER_UNITS: dict[str, NormaliserUnits] = {}
"""The units of each aggregation in ``LOSS_AGGREGATIONS`` (see :func:`normaliser_units`)."""


def register_loss_aggregation(
    name: str, *, units: NormaliserUnits
) -> Callable[[LossAggregation], LossAggregation]:
    """Decorator adding an aggregation (and its ``units``) to the registries; a taken name raises.

    ``units(mask)`` must count what the aggregation divides the summed loss by
    (up to the constant ``norm_len``), so that micro-batch accumulation weighted
    by units reproduces the whole-batch loss exactly.
    """

    def add(function: LossAggregation) -> LossAggregation:
        LOSS_AGGREGATIONS.register(name)(function)
        NORMALISER_UNITS[name] = units
        return function

    return add


@register_loss_aggregation("token-mean", units=lambda mask: mask.sum())
def _token_mean(loss: Tensor, mask: Tensor, norm_len: int) -> Tensor:
    """``sum_{b,t} m_bt l_bt / sum_{b,t} m_bt``: every real token of the batch weighs the same.

    0 when the batch has no real token.
    """
    total = torch.where(mask, loss, torch.zeros_like(loss)).sum()
    return total / mask.sum().clamp(min=1)


@register_loss_aggregation("seq-mean-token-mean", units=lambda mask: mask.any(dim=1).sum())
def _seq_mean_token_mean(loss: Tensor, mask: Tensor, norm_len: int) -> Tensor:
    """``mean_b (sum_t m_bt l_bt / sum_t m_bt)`` over sequences with at least one real token.

    Every sequence weighs the same whatever its length (the original GRPO form).
    Sequences without a real token are left out of the mean; 0 if all are empty.
    """
    counts = mask.sum(dim=1)
    per_sequence = torch.where(mask, loss, torch.zeros_like(loss)).sum(dim=1) / counts.clamp(min=1)
    present = counts > 0
    return (per_sequence * present).sum() / present.sum().clamp(min=1)


@register_loss_aggregation(
    "seq-mean-token-sum-norm", units=lambda mask: torch.tensor(mask.shape[0], device=mask.device)
)
def _seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, norm_len: int) -> Tensor:
    """``sum_b (sum_t m_bt l_bt) / (batch * norm_len)``: Dr.GRPO's constant normaliser.

    Every row counts in ``batch``, empty ones (all padding, or masked truncations)
    contributing 0, and ``norm_len`` is a constant, the maximum response length
    (``max_new_tokens``), so no length bias enters through a per-sequence division
    and the loss scale does not depend on how far a micro-batch happens to be
    padded. Direct callers that omit it get the tensor width.
    """
    sums = torch.where(mask, loss, torch.zeros_like(loss)).sum()
    return sums / (loss.shape[0] * norm_len) if loss.shape[0] else sums


def aggregate_loss(
    loss: Tensor, mask: Tensor, agg: str = "token-mean", norm_len: int | None = None
) -> Tensor:
    """Reduce per-token ``loss`` (batch, response_len) over ``mask`` with aggregation ``agg``.

    ``mask`` (batch, response_len): nonzero / True for real response tokens.
    ``norm_len``: the constant length ``seq-mean-token-sum-norm`` divides by
    (None: ``response_len``, the padded width; pass the maximum response length
    for a normaliser that is the same for every micro-batch). See
    ``LOSS_AGGREGATIONS`` for the choices; an unknown name raises ``ValueError``.
    """
    if agg not in LOSS_AGGREGATIONS:
        raise ValueError(
            f"unknown loss aggregation {agg!r}; choose one of {sorted(LOSS_AGGREGATIONS)}"
        )
    if loss.shape != mask.shape or loss.dim() != 2:
        raise ValueError(
            f"loss and mask must both be (batch, response_len); got {tuple(loss.shape)} "
            f"and {tuple(mask.shape)}"
        )
    if norm_len is None:
        norm_len = max(int(loss.shape[1]), 1)
    elif norm_len < 1:
        raise ValueError(f"norm_len must be >= 1, got {norm_len}")
    return LOSS_AGGREGATIONS[agg](loss, mask.bool(), int(norm_len))


def normaliser_units(mask: Tensor, agg: str) -> Tensor:
    """What ``agg`` divides the summed loss by, up to the constant ``norm_len``: a 0-d tensor.

    token-mean: the real tokens; seq-mean-token-mean: the rows with at least one
    real token; seq-mean-token-sum-norm: every row (empty ones included).
    Gradient accumulation weights micro-batch ``k``'s loss by
    ``units_k / sum_j units_j``, which makes the accumulated gradient that of the
    aggregation over the whole batch, for every registered aggregation.
    """
    if agg not in NORMALISER_UNITS:
        raise ValueError(
            f"unknown loss aggregation {agg!r}; choose one of {sorted(LOSS_AGGREGATIONS)}"
        )
    return NORMALISER_UNITS[agg](mask.bool())


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref), clamped to [-10, 10].

    ``logp``, ``ref_logp``: any matching shape, typically (batch, response_len), the
    log-probabilities of the sampled tokens under the policy and the reference.
    With ``x = ref_logp - logp``: ``k3 = exp(x) - x - 1``, which is >= 0, 0 when the
    two log-probs agree, and an unbiased estimate of the KL for samples of pi
    (Schulman's "k3"). ``x`` is clamped to [-20, 20] before ``exp`` so no inf or NaN
    (value or gradient) comes out of finite or infinite inputs; the result is the
    same as clamping the unguarded k3 to [-10, 10].
    """
    log_ratio = (ref_logp - logp).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(-K3_LIMIT, K3_LIMIT)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """``sum_{b,t} m_bt v_bt / max(1, sum_{b,t} m_bt)``: the mean of ``values`` over real tokens."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def importance_ratio(logp: Tensor, old_logp: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token ``ratio = exp(x)``, ``x = clamp(logp - old_logp, -20, 20)``; returns (ratio, x).

    Shapes: any matching shape, typically (batch, response_len). The clamp
    (``LOG_RATIO_LIMIT``) keeps ``exp`` finite; no real update comes near e^20.
    """
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return torch.exp(log_ratio), log_ratio


def clipped_surrogate(
    ratio: Tensor, advantages: Tensor, clip_low: float, clip_high: float
) -> tuple[Tensor, Tensor]:
    """Per-token PPO-clip loss and where its clipped branch is the active one.

    ``pg_t = max(-r_t A_t, -clip(r_t, 1 - clip_low, 1 + clip_high) A_t)``, i.e.
    ``-min(r A, clip(r) A)``; ``clipped_t = -clip(r_t) A_t > -r_t A_t`` (ratio above
    ``1 + clip_high`` with A > 0, or below ``1 - clip_low`` with A < 0): the token
    then gives no gradient. ``ratio`` (batch, response_len); ``advantages`` the same
    shape or broadcastable to it. Returns ``(pg, clipped)``, float and bool.
    """
    unclipped = -ratio * advantages
    clipped = -ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    return torch.maximum(unclipped, clipped), clipped > unclipped


def kl_penalised_loss(
    pg_per_token: Tensor,
    logp: Tensor,
    ref_logp: Tensor,
    real: Tensor,
    *,
    kl_coef: float,
    agg: str,
    norm_len: int | None,
) -> tuple[Tensor, Tensor]:
    """``agg_{b,t}(pg_bt + kl_coef * k3_bt)`` over the ``real`` tokens, and the mean k3 over them.

    ``k3_bt = kl_k3(logp_bt, ref_bt)`` (:func:`kl_k3`), with the reference's log-probs
    set to 0 on padding and detached; all tensors (batch, response_len).
    Returns ``(loss, kl)``: a scalar carrying the gradient, and a detached scalar.
    """
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    kl_per_token = kl_k3(logp, torch.where(real, ref_logp.detach(), zero))
    loss = aggregate_loss(pg_per_token + kl_coef * kl_per_token, real, agg, norm_len)
    return loss, _masked_mean(kl_per_token.detach(), real)


def _checked_advantages(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    ref_logp: Tensor | None,
    clip_low: float,
    clip_high: float,
) -> Tensor:
    """``advantages`` as (batch, 1) or (batch, response_len), once shapes and clips are checked."""
    if logp.dim() != 2:
        raise ValueError(f"logp must be (batch, response_len), got {tuple(logp.shape)}")
    for name, tensor in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp)):
        if tensor is not None and tensor.shape != logp.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)}, logp has {tuple(logp.shape)}"
            )
    if advantages.shape == logp.shape[:1]:
        advantages = advantages.unsqueeze(1)
    elif advantages.shape != logp.shape:
        raise ValueError(
            f"advantages must be (batch,) or (batch, response_len) = {tuple(logp.shape)}, "
            f"got {tuple(advantages.shape)}"
        )
    if clip_low < 0 or clip_high < 0:
        raise ValueError(
            f"clip ranges must be >= 0, got clip_low={clip_low}, clip_high={clip_high}"
        )
    return advantages


def _without_padding(
    real: Tensor, logp: Tensor, old_logp: Tensor, advantages: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(logp, old_logp, A)`` with 0 on padding (``~real``); ``old_logp`` and ``A`` detached.

    Done before any arithmetic: ``where`` routes no gradient to the unselected
    branch, so garbage log-probs on padding never reach ``exp``.
    """
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    logp = torch.where(real, logp, zero)
    old_logp = torch.where(real, old_logp.detach(), zero)
    return logp, old_logp, torch.where(real, advantages.detach().to(logp.dtype), zero)


def _policy_metrics(
    pg_loss: Tensor, kl: Tensor, clipped: Tensor, ratio: Tensor, log_ratio: Tensor, real: Tensor
) -> dict[str, Tensor]:
    """Detached metrics: ``pg_loss``, ``kl`` and, over real tokens, the means of ``clipped``
    (1.0 where the clipped branch is active), ``ratio`` and ``0.5 x^2`` (``x`` the log-ratio)."""
    with torch.no_grad():
        return {
            "pg_loss": pg_loss.detach(),
            "kl": kl,
            "clip_frac": _masked_mean(clipped, real),
            "ratio_mean": _masked_mean(ratio.detach(), real),
            "approx_kl": _masked_mean(0.5 * log_ratio.detach() ** 2, real),
        }


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token-mean",
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    norm_len: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO-clip policy loss of GRPO with an optional k3 KL penalty, and its metrics.

    Shapes: ``logp`` (the current policy, carries the gradient), ``old_logp`` (the
    policy that sampled, no gradient needed), ``ref_logp`` (the frozen reference)
    and ``mask`` are (batch, response_len); ``mask`` is nonzero / True on real
    response tokens and 0 on padding. ``advantages`` is per token (batch,
    response_len) or per sequence (batch,), then broadcast over the tokens.

    Per token: ``ratio = exp(logp - old_logp)``,
    ``pg = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)`` and, when
    ``ref_logp`` is given, ``loss = pg + kl_coef * kl_k3(logp, ref_logp)``; the result
    is reduced with ``aggregate_loss(loss, mask, agg, norm_len)`` (``norm_len``:
    the constant length of ``seq-mean-token-sum-norm``; None: the tensor width).

    Returns ``(loss, metrics)``; metrics are detached 0-d tensors:

    - ``pg_loss``: the policy-gradient part alone, aggregated like the loss;
    - ``kl``: mean k3 over real tokens (0 without ``ref_logp``);
    - ``clip_frac``: fraction of real tokens where the clipped branch is the active
      one (ratio > 1 + clip_high with A > 0, or ratio < 1 - clip_low with A < 0),
      i.e. where the token gives no gradient;
    - ``ratio_mean``: mean ratio over real tokens;
    - ``approx_kl``: mean ``0.5 (logp - old_logp)^2`` over real tokens, a cheap
      measure of how far the policy moved since sampling.

    Sequences without a real token contribute nothing and produce no NaN; a batch
    without any real token gives a loss of 0 (still differentiable).
    """
    advantages = _checked_advantages(
        logp, old_logp, advantages, mask, ref_logp, clip_low, clip_high
    )
    real = mask.bool()
    logp, old_logp, advantages = _without_padding(real, logp, old_logp, advantages)
    ratio, log_ratio = importance_ratio(logp, old_logp)
    pg_per_token, clipped = clipped_surrogate(ratio, advantages, clip_low, clip_high)
    pg_loss = aggregate_loss(pg_per_token, real, agg, norm_len)
    if ref_logp is not None:
        loss, kl = kl_penalised_loss(
            pg_per_token, logp, ref_logp, real, kl_coef=kl_coef, agg=agg, norm_len=norm_len
        )
    else:
        loss, kl = pg_loss, torch.zeros((), dtype=logp.dtype, device=logp.device)
    return loss, _policy_metrics(pg_loss, kl, clipped.to(logp.dtype), ratio, log_ratio, real)
