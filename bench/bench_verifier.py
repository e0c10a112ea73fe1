"""Throughput and latency of reward verification (mmr1.rewards.score_batch).

Builds a seeded, realistic mix of responses (right and wrong boxed integers,
fractions, percents, option letters, text answers, expressions, intervals, and
a few adversarial ones: power towers, 100k-character answers, huge factorials,
an unguarded expression SymPy needs seconds for, which only the deadline
stops), then prints:

* score_batch throughput in items/s with 1 and 2 worker processes (warm pool;
  the pool start-up is printed separately), and inline (0 workers) for reference;
* p50/p99 end-to-end latency of a one-item score_batch call on a warm pool.

Answers are randomised so math-verify's parse cache does not flatter the
numbers. Runs in well under a minute on 2 CPU cores::

    python bench/bench_verifier.py [--items 600] [--timeout-s 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from mmr1.rewards import RewardConfig, score_batch
from mmr1.rewards.score import shutdown_pool

WORDS = "so the area is then we add both sides and check the result again carefully".split()


def _think(rng: random.Random) -> str:
    if rng.random() < 0.05:  # a degenerate loop, as weak policies produce
        return " ".join(["let me check again"] * rng.randint(50, 300))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 600)))


def _item(rng: random.Random, kind: str) -> tuple[str, str, list[str] | None]:
    """(answer text placed in the response, gold, choices) for one kind of question."""
    right = rng.random() < 0.5
    if kind == "integer":
        n = rng.randint(-50, 100_000)
        pred = f"{n:,}" if n > 999 and rng.random() < 0.5 else str(n)
        return rf"\boxed{{{pred if right else n + rng.randint(1, 9)}}}", str(n), None
    if kind == "fraction":
        a, b, k = rng.randint(1, 40), rng.randint(41, 90), rng.randint(1, 5)
        gold = rf"\frac{{{a}}}{{{b}}}"
        pred = rf"\dfrac{{{a * k}}}{{{b * k}}}" if right else rf"\frac{{{a + 1}}}{{{b}}}"
        return rf"\boxed{{{pred}}}", gold, None
    if kind == "percent":
        p = rng.randint(1, 99)
        return rf"\boxed{{{p if right else p + 1}\%}}", str(p / 100), None
    if kind == "letter":
        choices = [str(rng.randint(1, 99)) + " cm" for _ in range(4)]
        gold_index = rng.randrange(4)
        letter = "ABCD"[gold_index if right else (gold_index + 1) % 4]
        form = rng.choice([r"\boxed{%s}", "(%s)", "%s.", r"\boxed{\text{%s}}"]) % letter
        return form, "ABCD"[gold_index], choices if rng.random() < 0.5 else None
    if kind == "text":
        gold = rng.choice(["Yes", "No", "red", "a cat", "isosceles", "north"])
        pred = gold.lower() if right else rng.choice(["maybe", "blue", "a dog", "south"])
        return pred, gold, None
    if kind == "expression":
        k, m = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7])
        pred = rf"\sqrt{{{k * k * m}}}" if right else rf"\sqrt{{{k * k * m + 1}}}"
        return rf"\boxed{{{pred}}}", rf"{k}\sqrt{{{m}}}", None
    if kind == "interval":
        a, b = sorted(rng.sample(range(-20, 20), 2))
        return rf"\boxed{{[{a}, {b})}}", f"[{a},{b})" if right else f"({a},{b}]", None
    if kind == "tower":
        return r"\boxed{9^{9^{9^{9^{9}}}}}", "1", None
    if kind == "long":
        return r"\boxed{" + "9" * 100_000 + "}", "1", None
    if kind == "factorial":
        return r"\boxed{(10^{6})!}", "1", None
    if kind == "slow":
        return rf"\boxed{{(a+b+c+d+e)^{{{rng.randint(22, 26)}}}}}", "1", None
    if kind == "unbalanced":
        return r"\boxed{3", "3", None
    raise ValueError(kind)


def build_mix(n: int, seed: int, slow_items: int) -> tuple[list[str], list[str], list]:
    """``n`` responses, golds and choices; ``slow_items`` of them need the deadline."""
    rng = random.Random(seed)
    common = ["integer", "fraction", "percent", "letter", "text", "expression", "interval"]
    rare = ["tower", "long", "factorial", "unbalanced"]
    kinds = [rng.choice(common) if rng.random() < 0.97 else rng.choice(rare) for _ in range(n)]
    for index in rng.sample(range(n), min(slow_items, n)):
        kinds[index] = "slow"
    responses, golds, choices = [], [], []
    for kind in kinds:
        answer, gold, item_choices = _item(rng, kind)
        responses.append(f"<think>{_think(rng)}</think>\n<answer>{answer}</answer>")
        golds.append(gold)
        choices.append(item_choices)
    return responses, golds, choices


def run_batch(mix: tuple, workers: int, timeout_s: float) -> tuple[float, float, int, int]:
    """(pool start-up s, batch wall s, correct count, timed-out count) for one worker count."""
    responses, golds, choices = mix
    config = RewardConfig(num_workers=workers, timeout_s=timeout_s)
    shutdown_pool()
    start = time.perf_counter()
    score_batch(["<answer>1</answer>"], ["1"], config=config)  # starts the pool
    startup = time.perf_counter() - start
    start = time.perf_counter()
    scores = score_batch(responses, golds, choices, config=config)
    wall = time.perf_counter() - start
    return startup, wall, sum(s.accuracy for s in scores), sum(s.timed_out for s in scores)


def latencies(mix: tuple, count: int, timeout_s: float) -> list[float]:
    """Wall time of one-item score_batch calls on a warm one-worker pool, in ms."""
    responses, golds, choices = mix
    config = RewardConfig(num_workers=1, timeout_s=timeout_s)
    score_batch(["<answer>1</answer>"], ["1"], config=config)
    out = []
    for i in range(min(count, len(responses))):
        start = time.perf_counter()
        score_batch([responses[i]], [golds[i]], [choices[i]], config=config)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=600, help="responses per batch")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="per-item deadline")
    parser.add_argument("--slow-items", type=int, default=2, help="items only a deadline stops")
    parser.add_argument("--latency-items", type=int, default=300, help="one-item calls timed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"items={args.items} timeout_s={args.timeout_s} slow_items={args.slow_items}")
    for workers in (0, 1, 2):
        # A fresh seed per run: same mix of kinds, new numbers, so no cache hits carry over.
        mix = build_mix(args.items, args.seed + workers, args.slow_items)
        startup, wall, correct, timed_out = run_batch(mix, workers, args.timeout_s)
        label = "inline   " if workers == 0 else f"workers={workers}"
        print(
            f"{label}  {args.items / wall:8.1f} items/s  batch {wall:6.2f} s  "
            f"pool start {startup:5.2f} s  correct {correct:.0f}  timed_out {timed_out}"
        )
    mix = build_mix(args.latency_items, args.seed + 10, slow_items=0)
    ms = sorted(latencies(mix, args.latency_items, args.timeout_s))
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(
        f"one-item latency (1 worker, {len(ms)} calls, no slow items): "
        f"p50 {statistics.median(ms):.2f} ms  p99 {p99:.2f} ms  max {ms[-1]:.2f} ms"
    )
    shutdown_pool()


if __name__ == "__main__":
    main()
