"""GRPO policy loss and k3 KL (mmr1/rl/losses.py): hand-computed values and a loop reference.

The clipped cases use log-ratios of +-1, so ratio = e or 1/e and each branch of
the surrogate is a number one can write down: with clip 0.2 the clipped loss is
exactly -(1 + 0.2) * A or -(1 - 0.2) * A.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmr1.rl.losses import (
    LOSS_AGGREGATIONS,
    aggregate_loss,
    kl_k3,
    normaliser_units,
    policy_loss,
    register_loss_aggregation,
)

E = math.e


def one_row(log_ratios: list[float], advantages: list[float]) -> dict[str, torch.Tensor]:
    old = torch.zeros(1, len(log_ratios), dtype=torch.float64)
    logp = (old + torch.tensor([log_ratios], dtype=torch.float64)).requires_grad_(True)
    return {
        "logp": logp,
        "old_logp": old,
        "advantages": torch.tensor([advantages], dtype=torch.float64),
        "mask": torch.ones_like(old),
    }


# (log-ratio, advantage) -> (per-token loss, clipped branch active)
#   ratio e,   A = +1: min(e, 1.2)     = 1.2    -> loss -1.2, clipped
#   ratio e,   A = -1: min(-e, -1.2)   = -e     -> loss e,    unclipped
#   ratio 1/e, A = +1: min(1/e, 0.8)   = 1/e    -> loss -1/e, unclipped
#   ratio 1/e, A = -1: min(-1/e, -0.8) = -0.8   -> loss 0.8,  clipped
CASES = [(1.0, 1.0, -1.2, True), (1.0, -1.0, E, False), (-1.0, 1.0, -1 / E, False),
         (-1.0, -1.0, 0.8, True)]  # fmt: skip


@pytest.mark.parametrize(("log_ratio", "advantage", "expected", "clipped"), CASES)
def test_clipped_surrogate_single_token(
    log_ratio: float, advantage: float, expected: float, clipped: bool
) -> None:
    inputs = one_row([log_ratio], [advantage])
    loss, metrics = policy_loss(**inputs)
    assert loss.item() == pytest.approx(expected)
    assert metrics["clip_frac"].item() == (1.0 if clipped else 0.0)
    loss.backward()
    # The clipped branch is constant in logp; the unclipped one has d/dlogp = -ratio * A.
    gradient = 0.0 if clipped else -math.exp(log_ratio) * advantage
    assert inputs["logp"].grad.item() == pytest.approx(gradient)


def test_clipped_surrogate_batch_and_metrics() -> None:
    inputs = one_row([c[0] for c in CASES], [c[1] for c in CASES])
    loss, metrics = policy_loss(**inputs)
    assert loss.item() == pytest.approx((-1.2 + E - 1 / E + 0.8) / 4)
    assert metrics["pg_loss"].item() == pytest.approx(loss.item())
    assert metrics["clip_frac"].item() == pytest.approx(0.5)
    assert metrics["ratio_mean"].item() == pytest.approx((E + E + 1 / E + 1 / E) / 4)
    assert metrics["approx_kl"].item() == pytest.approx(0.5)
    assert metrics["kl"].item() == 0.0
    assert all(not value.requires_grad and value.dim() == 0 for value in metrics.values())


def test_clip_higher_uses_its_own_bound() -> None:
    loss, _ = policy_loss(**one_row([1.0], [1.0]), clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-1.28)
    loss, _ = policy_loss(**one_row([-1.0], [-1.0]), clip_low=0.1, clip_high=0.28)
    assert loss.item() == pytest.approx(0.9)


def test_ratio_inside_the_range_is_unclipped() -> None:
    loss, metrics = policy_loss(**one_row([0.1, -0.1], [2.0, -3.0]))
    expected = (-math.exp(0.1) * 2.0 + math.exp(-0.1) * 3.0) / 2
    assert loss.item() == pytest.approx(expected)
    assert metrics["clip_frac"].item() == 0.0


# Per-token losses [[1, 2, 3], [4, -, -], [-, -, -]] (the third row is all padding):
#   token-mean               = (1 + 2 + 3 + 4) / 4               = 2.5
#   seq-mean-token-mean      = (6 / 3 + 4 / 1) / 2 (empty row out) = 3
#   seq-mean-token-sum-norm  = (6 / 3 + 4 / 3 + 0 / 3) / 3       = 10 / 9
AGGREGATED = {"token-mean": 2.5, "seq-mean-token-mean": 3.0, "seq-mean-token-sum-norm": 10 / 9}
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)


@pytest.mark.parametrize("agg", sorted(AGGREGATED))
def test_aggregations_with_unequal_lengths(agg: str) -> None:
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0], [7.0, 7.0, 7.0]])
    assert aggregate_loss(losses, MASK, agg).item() == pytest.approx(AGGREGATED[agg])

    # The same losses through policy_loss: ratio 1 and A = -loss give pg = loss. Padding
    # carries garbage log-probs (nan, -inf) that must reach neither loss nor gradient.
    logp = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.nan, -math.inf], [math.nan, 0.0, math.inf]])
    logp = logp.double().requires_grad_(True)
    old = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, math.nan], [-math.inf, 0.0, 0.0]]).double()
    advantages = -losses.double()
    ref = torch.where(MASK.bool(), torch.zeros_like(old), torch.full_like(old, math.nan))
    loss, metrics = policy_loss(logp, old, advantages, MASK, agg=agg, ref_logp=ref, kl_coef=0.1)
    assert loss.item() == pytest.approx(AGGREGATED[agg])
    assert metrics["kl"].item() == 0.0
    assert all(math.isfinite(value.item()) for value in metrics.values())
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert (logp.grad[~MASK.bool()] == 0).all()


def test_token_sum_norm_divides_by_the_given_constant_length() -> None:
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0], [7.0, 7.0, 7.0]])
    # (6 + 4 + 0) / (3 rows * 8): the width of the padded tensor (3) plays no part.
    got = aggregate_loss(losses, MASK, "seq-mean-token-sum-norm", norm_len=8)
    assert got.item() == pytest.approx(10 / 24)
    wider = torch.cat([losses, torch.full((3, 4), 5.0)], dim=1)
    wider_mask = torch.cat([MASK, torch.zeros(3, 4, dtype=MASK.dtype)], dim=1)
    assert aggregate_loss(wider, wider_mask, "seq-mean-token-sum-norm", norm_len=8).item() == (
        pytest.approx(10 / 24)
    )
    # The other aggregations ignore norm_len.
    for agg in ("token-mean", "seq-mean-token-mean"):
        got = aggregate_loss(losses, MASK, agg, norm_len=8)
        assert got.item() == pytest.approx(AGGREGATED[agg])


def test_normaliser_units_count_what_each_aggregation_divides_by() -> None:
    assert normaliser_units(MASK, "token-mean").item() == 4  # real tokens
    assert normaliser_units(MASK, "seq-mean-token-mean").item() == 2  # non-empty rows
    assert normaliser_units(MASK, "seq-mean-token-sum-norm").item() == 3  # every row


@pytest.mark.parametrize("agg", sorted(LOSS_AGGREGATIONS))
def test_micro_batches_accumulate_to_the_whole_batch_gradient(agg: str) -> None:
    """Micro-batches padded to their own widths, weighted by their units, give the
    gradient of the whole batch: unequal lengths, an empty (masked) row, a KL term."""
    generator = torch.Generator().manual_seed(3)
    lengths = [7, 2, 0, 5, 1, 3, 6]  # row 2 is a masked truncation: no trainable token
    rows, width, norm_len = len(lengths), max(lengths), 9
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).double()
    old = torch.randn(rows, width, generator=generator, dtype=torch.float64) - 1.0
    logp = old + 0.4 * torch.randn(rows, width, generator=generator, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(rows, width, generator=generator, dtype=torch.float64)
    advantages = torch.randn(rows, generator=generator, dtype=torch.float64)
    kwargs = {"agg": agg, "kl_coef": 0.05, "norm_len": norm_len, "clip_high": 0.28}

    whole_logp = logp.clone().requires_grad_(True)
    whole, _ = policy_loss(whole_logp, old, advantages, mask, ref_logp=ref, **kwargs)
    whole.backward()

    split_logp = logp.clone().requires_grad_(True)
    total_units = normaliser_units(mask, agg)
    accumulated = torch.zeros((), dtype=torch.float64)
    for micro in ([0, 1, 2], [3, 4], [5, 6]):
        w = max(max(lengths[i] for i in micro), 1)  # collate pads to the micro-batch's longest
        loss, _ = policy_loss(
            split_logp[micro, :w], old[micro, :w], advantages[micro], mask[micro, :w],
            ref_logp=ref[micro, :w], **kwargs,
        )  # fmt: skip
        weighted = loss * normaliser_units(mask[micro, :w], agg) / total_units
        weighted.backward()
        accumulated = accumulated + weighted.detach()
    torch.testing.assert_close(accumulated, whole.detach())
    torch.testing.assert_close(split_logp.grad, whole_logp.grad)
    assert whole_logp.grad.abs().sum() > 0


@pytest.mark.parametrize("agg", sorted(AGGREGATED))
def test_all_padding_batch_gives_zero_loss(agg: str) -> None:
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, metrics = policy_loss(logp, torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3), agg=agg)
    assert loss.item() == 0.0
    assert metrics["clip_frac"].item() == 0.0
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(2, 3))


def test_k3_hand_computed() -> None:
    logp = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    ref = torch.tensor([-1.0, -1.0, -1.5, -3.0])
    # x = ref - logp = 0, 1, -1, 0 -> k3 = 0, e - 2, 1/e, 0
    expected = [0.0, E - 2, 1 / E, 0.0]
    assert kl_k3(logp, ref).tolist() == pytest.approx(expected, rel=1e-6)


def test_k3_is_zero_for_equal_log_probs() -> None:
    logp = torch.randn(4, 7, generator=torch.Generator().manual_seed(0)) - 2.0
    assert torch.equal(kl_k3(logp, logp.clone()), torch.zeros(4, 7))


def test_k3_clamps_extremes_without_inf_or_nan() -> None:
    logp = torch.tensor([0.0, 0.0, -50.0, -math.inf, -1e30, -3.0], requires_grad=True)
    ref = torch.tensor([50.0, -50.0, 0.0, -1.0, 0.0, -math.inf])
    k3 = kl_k3(logp, ref)
    # x = 50 -> e^50 - 51; x = -50 -> 49; x = +inf; x = 1e30; x = -inf -> inf: all clamp to 10.
    assert k3.tolist() == [10.0] * 6
    k3.sum().backward()
    assert torch.isfinite(logp.grad).all()
    # Just inside the clamp: x = 2 gives e^2 - 3 = 4.389..., gradient d/dlogp = 1 - e^x.
    near = torch.tensor([0.0], requires_grad=True)
    kl_k3(near, torch.tensor([2.0])).backward()
    assert near.grad.item() == pytest.approx(1 - math.exp(2.0), rel=1e-6)


def test_kl_term_adds_coefficient_times_k3() -> None:
    inputs = one_row([0.0, 0.0], [1.0, -1.0])
    ref = torch.tensor([[1.0, -1.0]], dtype=torch.float64)  # x = 1, -1
    loss, metrics = policy_loss(**inputs, ref_logp=ref, kl_coef=0.01)
    kl = ((E - 2) + 1 / E) / 2
    assert metrics["kl"].item() == pytest.approx(kl)
    assert metrics["pg_loss"].item() == pytest.approx(0.0)  # (-1 + 1) / 2
    assert loss.item() == pytest.approx(0.01 * kl)
    loss.backward()
    # pg: -A; k3: d/dlogp (e^x - x - 1) = 1 - e^x; token-mean over 2 tokens.
    expected = [(-1.0 + 0.01 * (1 - E)) / 2, (1.0 + 0.01 * (1 - 1 / E)) / 2]
    assert inputs["logp"].grad[0].tolist() == pytest.approx(expected)


def test_per_sequence_advantages_broadcast_like_per_token() -> None:
    generator = torch.Generator().manual_seed(1)
    logp = torch.randn(3, 5, generator=generator) * 0.3
    old = torch.randn(3, 5, generator=generator) * 0.3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    per_sequence = torch.tensor([0.7, -1.3, 2.0])
    for agg in LOSS_AGGREGATIONS:
        a, metrics_a = policy_loss(logp, old, per_sequence, mask, agg=agg)
        b, metrics_b = policy_loss(logp, old, per_sequence[:, None].expand(3, 5), mask, agg=agg)
        assert torch.equal(a, b)
        assert metrics_a == metrics_b


def reference_policy_loss(
    logp: torch.Tensor,
    old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
    agg: str,
    ref: torch.Tensor | None,
    kl_coef: float,
    norm_len: int | None = None,
) -> torch.Tensor:
    """The loss written token by token, the way the docs/METHOD.md formulas read."""
    batch, length = logp.shape
    rows = []
    for b in range(batch):
        terms = []
        for t in range(length):
            if not mask[b, t]:
                continue
            ratio = torch.exp(logp[b, t] - old[b, t])
            a = advantages[b] if advantages.dim() == 1 else advantages[b, t]
            clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
            term = -torch.minimum(ratio * a, clipped * a)
            if ref is not None:
                x = ref[b, t] - logp[b, t]
                term = term + kl_coef * torch.clamp(torch.exp(x) - x - 1, -10, 10)
            terms.append(term)
        rows.append(terms)
    if agg == "token-mean":
        tokens = [term for terms in rows for term in terms]
        return sum(tokens) / len(tokens) if tokens else torch.tensor(0.0)
    if agg == "seq-mean-token-mean":
        means = [sum(terms) / len(terms) for terms in rows if terms]
        return sum(means) / len(means) if means else torch.tensor(0.0)
    assert agg == "seq-mean-token-sum-norm"
    norm = norm_len or length
    return sum(sum(terms) / norm if terms else 0.0 for terms in rows) / batch


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("agg", sorted(LOSS_AGGREGATIONS))
def test_vectorised_matches_loop_reference(seed: int, agg: str) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch = int(torch.randint(1, 6, (1,), generator=generator))
    length = int(torch.randint(1, 9, (1,), generator=generator))
    lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    lengths[0] = max(int(lengths[0]), 1)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).double()
    old = torch.randn(batch, length, generator=generator, dtype=torch.float64) - 1.0
    logp = old + 0.5 * torch.randn(batch, length, generator=generator, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(batch, length, generator=generator, dtype=torch.float64)
    per_token = seed % 2 == 0
    shape = (batch, length) if per_token else (batch,)
    advantages = torch.randn(*shape, generator=generator, dtype=torch.float64)
    clip_low, clip_high = 0.2, 0.2 + 0.1 * (seed % 3)
    use_ref = seed % 3 != 0
    kl_coef = 0.05 if use_ref else 0.0
    norm_len = None if seed % 2 else length + seed  # the padded width, or a constant beyond it

    fast_logp = logp.clone().requires_grad_(True)
    fast, metrics = policy_loss(
        fast_logp, old, advantages, mask, clip_low, clip_high, agg,
        ref if use_ref else None, kl_coef, norm_len=norm_len,
    )  # fmt: skip
    slow_logp = logp.clone().requires_grad_(True)
    slow = reference_policy_loss(
        slow_logp, old, advantages, mask, clip_low, clip_high, agg,
        ref if use_ref else None, kl_coef, norm_len,
    )  # fmt: skip
    torch.testing.assert_close(fast, torch.as_tensor(slow, dtype=torch.float64))
    fast.backward()
    slow.backward()
    torch.testing.assert_close(fast_logp.grad, slow_logp.grad)

    real = mask.bool()
    ratio = torch.exp(logp - old)[real]
    a = (advantages if per_token else advantages[:, None].expand(batch, length))[real]
    clipped = ((a > 0) & (ratio > 1 + clip_high)) | ((a < 0) & (ratio < 1 - clip_low))
    assert metrics["clip_frac"].item() == pytest.approx(clipped.double().mean().item())
    assert metrics["ratio_mean"].item() == pytest.approx(ratio.mean().item())


def test_bad_arguments_raise_clear_errors() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"unknown loss aggregation 'sum'.*seq-mean-token-mean"):
        policy_loss(x, x, torch.zeros(2), torch.ones(2, 3), agg="sum")
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(x, x, torch.zeros(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask has shape"):
        policy_loss(x, x, torch.zeros(2), torch.ones(2, 4))
    with pytest.raises(ValueError, match="already registered"):
        register_loss_aggregation("token-mean", units=lambda mask: mask.sum())(
            lambda loss, mask, norm_len: loss.sum()
        )
    with pytest.raises(ValueError, match="norm_len must be >= 1"):
        policy_loss(x, x, torch.zeros(2), torch.ones(2, 3), agg="seq-mean-token-sum-norm",
                    norm_len=0)  # fmt: skip
    with pytest.raises(ValueError, match="unknown loss aggregation 'sum'"):
        normaliser_units(torch.ones(2, 3), "sum")
