"""Variance-Aware Sampling on a simulated RL pool, and the cost of computing VPS.

Part 1, does VAS cut the zero-variance groups? A pool of ``--prompts`` prompts
gets true pass rates p from a mixture shaped like a real RL pool after
difficulty filtering: 40% very hard (p ~ Beta(0.3, 5), mean 0.06), 35% very
easy (p ~ Beta(5, 0.3), mean 0.94), 25% spread (p ~ Beta(1, 1)). A GRPO group of
G rollouts has zero reward variance, hence zero advantages and no gradient, with
probability ``z(p) = p^G + (1 - p)^G``. For each sampler, ``--batches`` batches of
``--batch-size`` prompts are drawn with ``MixedVarianceSampler`` and the bench
prints the zero-variance fraction (analytic: mean z(p) over the drawn prompts;
Monte Carlo: G fresh Bernoulli(p) rewards per drawn prompt), the effective
prompts per batch ``B * (1 - zero-variance fraction)``, and the distinct prompts
per batch (the weighted half draws with replacement, so a batch can repeat one).

* ``uniform``: mix_ratio 0, every prompt once per pass (the no-VAS baseline);
* ``VAS, true VPS``: mix_ratio 0.5, VPS = alpha * 4 p(1-p) + beta * TDS from the
  true p (an oracle);
* ``VAS, VPS from N rollouts``: the realistic case, OVS from the pass rate of
  ``--vps-rollouts`` simulated Bernoulli rollouts per prompt (independent of the
  training groups), via ``mmr1.vas.vps.outcome_variance``.

TDS is not simulated from text here: it is drawn per prompt from Beta(5, 5)
(mean 0.5) independently of p, i.e. the diversity term carries no information
about outcome variance and only dilutes OVS. That is the pessimistic choice;
a TDS correlated with p (diverse rollouts on prompts the policy is unsure of)
would only help. alpha = 0.8, beta = 0.2 (paper main text). Scores are static:
the re-estimation every T_update steps and a moving policy are not modelled.

Part 2, how long does VPS take? ``--prompts`` prompts x ``--rollouts`` rollouts
of ~``--tokens`` token ids each (lengths uniform in [0.8, 1.2] x tokens; one
seeded Zipf-like "skeleton" per prompt, each rollout re-draws 10-50% of its
tokens and 10% of them fall into a repeated 16-token loop, so n-grams repeat
within and across rollouts as they do in real samples). Each TDS method is
timed on one core (generation of the fake rollouts is not timed): self_bleu
(the default, through ``variance_promotion_score``) and distinct on every
prompt, edit on the first ``--edit-prompts`` prompts and extrapolated linearly
to all of them (it is O(L^2 / 64) per pair even bit-parallel). With
``--workers > 1`` self_bleu is timed again across worker processes (wall clock,
generation included). ``--methods`` picks the TDS methods timed.

Edit distance, before/after: 1,000 prompts x 8 rollouts x ~1k tokens, one
core of this 2-core machine, extrapolated to 15k prompts. Paired run (old and
new on each prompt in turn, machine busy with other work; all 1,000 TDS values
bit-equal, mean 0.548459)::

    bit-parallel Levenshtein in Python (before)   47.9 ms/prompt   718 s for 15k
    rapidfuzz (mmr1.edit_distance, now)            3.3 ms/prompt    50 s for 15k

This bench alone, now: ``--skip-sampling --methods edit --edit-prompts 1000``
gives 2.1-2.7 ms/prompt (31-40 s for 15k) depending on the load.

Full run (15k prompts, ~2 minutes on 2 CPU cores with --workers 2)::

    python bench/bench_vas.py [--prompts 15000] [--batches 2000] [--workers 2]

Quick run (~10 s): ``python bench/bench_vas.py --quick``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from itertools import islice

import numpy as np

from mmr1.vas.sampler import MixedVarianceSampler
from mmr1.vas.vps import outcome_variance, trajectory_diversity, variance_promotion_score
from schemas.vas import SamplerConfig

ALPHA, BETA, OVS_SCALE = 0.8, 0.2, 4.0
VOCAB = 151_665
"""Token ids are drawn below the Qwen2.5 vocabulary size."""


def simulate_pass_rates(num_prompts: int, seed: int) -> np.ndarray:
    """True pass rates, shape (num_prompts,): 40% near 0, 35% near 1, 25% spread."""
    rng = np.random.default_rng([seed, 1])
    component = rng.choice(3, size=num_prompts, p=[0.40, 0.35, 0.25])
    hard = rng.beta(0.3, 5.0, size=num_prompts)
    easy = rng.beta(5.0, 0.3, size=num_prompts)
    spread = rng.beta(1.0, 1.0, size=num_prompts)
    return np.choose(component, [hard, easy, spread])


def zero_variance_probability(p: np.ndarray, group_size: int) -> np.ndarray:
    """``p^G + (1 - p)^G``: all G Bernoulli(p) rewards of a group are equal."""
    return p**group_size + (1.0 - p) ** group_size


def draw_batches(
    num_prompts: int,
    scores: np.ndarray | None,
    mix_ratio: float,
    batch_size: int,
    batches: int,
    seed: int,
) -> np.ndarray:
    """Prompt indices of ``batches`` batches, shape (batches, batch_size), across passes."""
    config = SamplerConfig(batch_size=batch_size, mix_ratio=mix_ratio, seed=seed, drop_last=True)
    sampler = MixedVarianceSampler(num_prompts, config)
    if scores is not None:
        sampler.update_scores(list(range(num_prompts)), scores.tolist())
    out: list[list[int]] = []
    while len(out) < batches:
        out.extend(islice(iter(sampler), batches - len(out)))
    return np.array(out, dtype=np.int64)


def batch_statistics(
    indices: np.ndarray, pass_rates: np.ndarray, group_size: int, seed: int
) -> dict[str, float]:
    """Zero-variance fraction (analytic and Monte Carlo) and prompts per batch."""
    p = pass_rates[indices]
    analytic = float(zero_variance_probability(p, group_size).mean())
    rng = np.random.default_rng([seed, 2])
    rewards = rng.random((*p.shape, group_size)) < p[..., None]
    flat = rewards.all(axis=-1) | ~rewards.any(axis=-1)
    batch_size = indices.shape[1]
    distinct = np.mean([np.unique(row).size for row in indices])
    return {
        "analytic": analytic,
        "monte_carlo": float(flat.mean()),
        "effective": batch_size * (1.0 - float(flat.mean())),
        "distinct": float(distinct),
        "mean_p_var": float((p * (1 - p)).mean()),
    }


def sampling_part(args: argparse.Namespace) -> None:
    n, group_size, batch_size = args.prompts, args.group_size, args.batch_size
    pass_rates = simulate_pass_rates(n, args.seed)
    rng = np.random.default_rng([args.seed, 3])
    tds = rng.beta(5.0, 5.0, size=n)
    true_vps = ALPHA * OVS_SCALE * pass_rates * (1 - pass_rates) + BETA * tds
    accuracies = rng.random((n, args.vps_rollouts)) < pass_rates[:, None]
    estimated_ovs = np.array([outcome_variance(row.tolist(), OVS_SCALE) for row in accuracies])
    estimated_vps = ALPHA * estimated_ovs + BETA * tds

    pool_z = zero_variance_probability(pass_rates, group_size)
    print(
        f"pool: {n} prompts, mean p {pass_rates.mean():.3f}, "
        f"p<0.05 {np.mean(pass_rates < 0.05):.1%}, p>0.95 {np.mean(pass_rates > 0.95):.1%}; "
        f"z(p) = p^{group_size} + (1-p)^{group_size} over the pool: mean {pool_z.mean():.3f}; "
        f"{np.mean(np.all(accuracies == accuracies[:, :1], axis=1)):.1%} of prompts have "
        f"OVS 0 from {args.vps_rollouts} rollouts"
    )
    print(
        f"batches: {args.batches} x B={batch_size}, G={group_size}, "
        f"VAS mix_ratio={args.mix_ratio}, alpha={ALPHA}, beta={BETA}, "
        f"TDS ~ Beta(5,5) independent of p"
    )
    header = (
        f"{'sampler':34s} {'zero-var analytic':>17s} {'zero-var MC':>12s} "
        f"{'effective/batch':>16s} {'distinct/batch':>15s} {'weighted-part zero-var':>23s}"
    )
    print(header)
    runs = [
        ("uniform", None, 0.0),
        ("VAS, true VPS (oracle)", true_vps, args.mix_ratio),
        (f"VAS, VPS from N={args.vps_rollouts} rollouts", estimated_vps, args.mix_ratio),
    ]
    for label, scores, mix_ratio in runs:
        start = time.perf_counter()
        indices = draw_batches(n, scores, mix_ratio, batch_size, args.batches, args.seed)
        seconds = time.perf_counter() - start
        stats = batch_statistics(indices, pass_rates, group_size, args.seed)
        # The sampler puts its floor(lambda * B) weighted draws first in each batch.
        weighted_count = SamplerConfig(
            batch_size=batch_size, mix_ratio=mix_ratio
        ).weighted_per_batch()
        head = pass_rates[indices[:, :weighted_count]]
        weighted = f"{zero_variance_probability(head, group_size).mean():.3f}" if head.size else "-"
        print(
            f"{label:34s} {stats['analytic']:17.3f} {stats['monte_carlo']:12.3f} "
            f"{stats['effective']:16.1f} {stats['distinct']:15.1f} {weighted:>23s}"
            f"   ({seconds:.1f} s to draw)"
        )


def fake_rollouts(seed: int, prompt: int, rollouts: int, tokens: int) -> list[list[int]]:
    """One prompt's rollouts: token ids sharing a skeleton, with loops (see module doc)."""
    rng = np.random.default_rng([seed, 4, prompt])
    longest = int(1.2 * tokens)
    skeleton = (rng.zipf(1.3, size=longest) - 1) % VOCAB
    out = []
    for _ in range(rollouts):
        length = int(rng.integers(int(0.8 * tokens), longest + 1))
        seq = skeleton[:length].copy()
        redraw = rng.random(length) < rng.uniform(0.1, 0.5)
        seq[redraw] = (rng.zipf(1.3, size=int(redraw.sum())) - 1) % VOCAB
        if rng.random() < 0.1:  # a degenerate loop until the length limit
            start = int(rng.integers(0, max(1, length - 16)))
            loop = seq[start : start + 16]
            seq[start:] = np.resize(loop, length - start)
        out.append(seq.tolist())
    return out


def time_method(args: argparse.Namespace, method: str, prompts: int) -> tuple[float, float]:
    """(seconds of TDS/VPS computation over ``prompts`` prompts, mean score) on one core."""
    accuracies = [1, 0] * (args.rollouts // 2) + [1] * (args.rollouts % 2)
    spent, total = 0.0, 0.0
    for prompt in range(prompts):
        rollouts = fake_rollouts(args.seed, prompt, args.rollouts, args.tokens)
        start = time.perf_counter()
        if method == "self_bleu":
            score = variance_promotion_score(accuracies, rollouts).tds
        else:
            score = trajectory_diversity(rollouts, method)
        spent += time.perf_counter() - start
        total += score
    return spent, total / prompts


def _worker_tds(job: tuple[int, int, int, int]) -> float:
    seed, prompt, rollouts, tokens = job
    return trajectory_diversity(fake_rollouts(seed, prompt, rollouts, tokens))


def timing_part(args: argparse.Namespace) -> None:
    n = args.prompts
    print(
        f"VPS timing: {n} prompts x {args.rollouts} rollouts x ~{args.tokens} tokens "
        f"(one core, fake-rollout generation not timed)"
    )
    for method, prompts in (("self_bleu", n), ("distinct", n), ("edit", args.edit_prompts)):
        prompts = min(prompts, n)
        if prompts == 0 or method not in args.methods:
            continue
        spent, mean_score = time_method(args, method, prompts)
        per_prompt = spent / prompts
        note = "" if prompts == n else f"  (measured on {prompts} prompts, extrapolated)"
        print(
            f"  {method:9s} {per_prompt * 1e3:7.2f} ms/prompt  "
            f"{per_prompt * n:8.1f} s for {n} prompts  mean TDS {mean_score:.3f}{note}"
        )
    if args.workers > 1 and "self_bleu" in args.methods:
        jobs = [(args.seed, prompt, args.rollouts, args.tokens) for prompt in range(n)]
        start = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            list(pool.imap(_worker_tds, jobs, chunksize=64))
        wall = time.perf_counter() - start
        print(
            f"  self_bleu with {args.workers} worker processes: {wall:.1f} s wall for {n} "
            f"prompts (generation and process start-up included)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=15_000, help="RL pool size")
    parser.add_argument("--batches", type=int, default=2_000, help="batches drawn per sampler")
    parser.add_argument("--batch-size", type=int, default=128, help="B, prompts per batch")
    parser.add_argument("--group-size", type=int, default=8, help="G, rollouts per prompt")
    parser.add_argument("--mix-ratio", type=float, default=0.5, help="VAS lambda")
    parser.add_argument("--vps-rollouts", type=int, default=8, help="N for the estimated VPS")
    parser.add_argument("--rollouts", type=int, default=8, help="rollouts per prompt (timing)")
    parser.add_argument("--tokens", type=int, default=1_000, help="mean rollout length (timing)")
    parser.add_argument("--edit-prompts", type=int, default=500, help="prompts timed for edit")
    parser.add_argument("--workers", type=int, default=1, help="processes for a self_bleu run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="1,500 prompts, 300 batches, 50 edit prompts"
    )
    parser.add_argument("--skip-timing", action="store_true", help="only the sampling part")
    parser.add_argument("--skip-sampling", action="store_true", help="only the timing part")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=("self_bleu", "distinct", "edit"),
        default=["self_bleu", "distinct", "edit"],
        help="TDS methods timed",
    )
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.batches, args.edit_prompts = 1_500, 300, 50

    if not args.skip_sampling:
        sampling_part(args)
    if not args.skip_timing:
        if not args.skip_sampling:
            print()
        timing_part(args)


if __name__ == "__main__":
    main()
