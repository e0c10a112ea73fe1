"""Throughput and latency of reward verification (mmr1.rewards.score_batch).

Builds a seeded, realistic mix of responses (right and wrong boxed integers,
fractions, percents, option letters, text answers, expressions, intervals, and
a few adversarial ones: power towers, 100k-character answers, huge factorials,
an unguarded expression SymPy needs seconds for, which only the deadline
stops), then prints:

* first-call latency: a fresh interpreter (``python -c``, no main guard) times
  its first ``score_batch`` of 200 mixed items, worker start-up included
  (median of ``--fresh-runs``; the import of ``mmr1.rewards`` is printed apart);
* score_batch throughput in items/s of ordinary items (no deadline-stopped
  answer) inline (0 workers) and with 1 and 2 worker processes on a warm pool
  (the pool start-up is printed separately), then with ``--slow-items`` answers
  that only the deadline stops;
* p50/p99 end-to-end latency of a one-item score_batch call on a warm pool.

Answers are randomised so math-verify's parse cache does not flatter the
numbers. ``--compare`` instead checks that no verdict depends on the speed-ups:
the stock LaTeX parser vs :mod:`mmr1.rewards.fastparse`, and worker processes
vs in-process checks, on the same mix. Runs in about a minute on 2 CPU cores::

    python bench/bench_verifier.py [--items 2000] [--timeout-s 2] [--seed 0] [--compare]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mmr1.rewards.score as score_module
from mmr1.rewards import RewardConfig, score_batch
from mmr1.rewards.score import shutdown_pool

WARM_UP = r"<answer>\boxed{\frac{1}{2}}</answer>"  # needs math-verify, so a worker
FIRST_CALL = """
import json, sys, time
start = time.perf_counter()
from mmr1.rewards import score_batch
imported = time.perf_counter()
sys.path.insert(0, {bench_dir!r})
from bench_verifier import build_mix
responses, golds, choices = build_mix(200, {seed}, slow_items=0)
ready = time.perf_counter()
score_batch(responses, golds, choices)
done = time.perf_counter()
print(json.dumps({{"import_s": imported - start, "first_call_s": done - ready}}))
"""
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


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by this process and the live ``pids``.

    Read from /proc (Linux); a pid that is gone counts 0. CPU time, unlike wall
    time, barely depends on what else the machine runs, so ``2 / (CPU s per
    item)`` estimates items/s on 2 dedicated cores when the work is CPU-bound.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def worker_pids() -> list[int]:
    pool = score_module._POOL
    return [pid for pid in pool.pids if pid] if pool is not None else []


def run_batch(mix: tuple, workers: int, timeout_s: float) -> tuple[float, float, float, int, int]:
    """(pool start-up s, batch wall s, batch CPU s, correct, timed-out) for one worker count."""
    responses, golds, choices = mix
    config = RewardConfig(num_workers=workers, timeout_s=timeout_s)
    shutdown_pool()
    start = time.perf_counter()
    score_batch([WARM_UP], ["0.5"], config=config)  # a math item: starts the pool
    startup = time.perf_counter() - start
    pool = score_module._POOL
    for _ in range(100):  # until every worker is ready (ready_count: this code's pool only)
        if not workers or not hasattr(pool, "ready_count") or pool.ready_count() == workers:
            break
        score_batch([WARM_UP] * 16, ["0.5"] * 16, config=config)
    pids = worker_pids()
    cpu = cpu_seconds(pids)
    start = time.perf_counter()
    scores = score_batch(responses, golds, choices, config=config)
    wall = time.perf_counter() - start
    cpu = cpu_seconds(pids) - cpu
    return startup, wall, cpu, sum(s.accuracy for s in scores), sum(s.timed_out for s in scores)


def latencies(mix: tuple, count: int, timeout_s: float) -> list[float]:
    """Wall time of one-item score_batch calls on a warm one-worker pool, in ms."""
    responses, golds, choices = mix
    config = RewardConfig(num_workers=1, timeout_s=timeout_s)
    score_batch([WARM_UP], ["0.5"], config=config)
    out = []
    for i in range(min(count, len(responses))):
        start = time.perf_counter()
        score_batch([responses[i]], [golds[i]], [choices[i]], config=config)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def first_call(seed: int, runs: int) -> tuple[float, float]:
    """Median (import s, first score_batch s) over ``runs`` fresh interpreters."""
    code = FIRST_CALL.format(bench_dir=str(Path(__file__).resolve().parent), seed=seed)
    results = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return (
        statistics.median(r["import_s"] for r in results),
        statistics.median(r["first_call_s"] for r in results),
    )


def compare(mix: tuple, timeout_s: float) -> None:
    """Verdict equality: stock parser vs fastparse, workers vs in-process (no timing)."""
    from math_verify.parser import parse_latex_cached

    from mmr1.rewards import extract_final_answer, fastparse, verify

    responses, golds, choices = mix
    answers = [extract_final_answer(r) for r in responses]
    items = [(a, g, c) for a, g, c in zip(answers, golds, choices, strict=True) if a]

    def verdicts() -> list[tuple]:
        verify._parse_boxed.cache_clear()
        parse_latex_cached.cache_clear()
        return [tuple(verify.check_answer(a, g, c, timeout_s=timeout_s)) for a, g, c in items]

    fastparse.uninstall()
    start = time.perf_counter()
    stock = verdicts()
    stock_s = time.perf_counter() - start
    fastparse.install()
    start = time.perf_counter()
    fast = verdicts()
    fast_s = time.perf_counter() - start
    differ = [(item, a, b) for item, a, b in zip(items, stock, fast, strict=True) if a != b]
    timing = sum(a[1] != b[1] for _, a, b in differ)  # timed_out on one side only
    print(
        f"verdicts, stock parser vs fastparse: {len(items)} items, {len(differ) - timing} "
        f"differ (+{timing} where only one side hit its timeout; inline "
        f"{len(items) / stock_s:.0f} vs {len(items) / fast_s:.0f} items/s)"
    )
    for item, a, b in differ[:10]:
        print("  ", item, a, b)
    config = RewardConfig(num_workers=2, timeout_s=timeout_s)
    pooled = score_batch(responses, golds, choices, config=config)
    in_process = config.model_copy(update={"num_workers": 0})
    inline = score_batch(responses, golds, choices, config=in_process)
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(pooled, inline, strict=True)) if a != b]
    timing = sum(a.timed_out != b.timed_out for _, a, b in differ)  # a deadline hit on one side
    print(
        f"scores, 2 workers vs in-process: {len(pooled)} items, {len(differ) - timing} differ "
        f"(+{timing} where only one side hit its deadline)"
    )
    for i, a, b in differ[:10]:
        print(
            "  ", repr(a.extracted)[:80], golds[i], a.accuracy, a.timed_out, b.accuracy, b.timed_out
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000, help="responses per batch")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="per-item deadline")
    parser.add_argument("--slow-items", type=int, default=2, help="items only a deadline stops")
    parser.add_argument("--latency-items", type=int, default=300, help="one-item calls timed")
    parser.add_argument("--fresh-runs", type=int, default=3, help="fresh interpreters timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true", help="check verdict equality instead")
    args = parser.parse_args()

    if args.compare:
        compare(build_mix(args.items, args.seed, args.slow_items), args.timeout_s)
        shutdown_pool()
        return
    print(f"items={args.items} timeout_s={args.timeout_s} slow_items={args.slow_items}")
    imported, first = first_call(args.seed + 20, args.fresh_runs)
    print(
        f"first call (fresh interpreter, 200 items, 2 workers, median of {args.fresh_runs}): "
        f"{first:.2f} s  (import of mmr1.rewards before it: {imported:.2f} s)"
    )
    for workers, slow in ((0, 0), (1, 0), (2, 0), (2, args.slow_items)):
        # A fresh seed per run: same mix of kinds, new numbers, so no cache hits carry over.
        mix = build_mix(args.items, args.seed + workers + 3 * slow, slow)
        startup, wall, cpu, correct, timed_out = run_batch(mix, workers, args.timeout_s)
        label = "inline   " if workers == 0 else f"workers={workers}"
        kind = "ordinary" if slow == 0 else f"+{slow} slow"
        print(
            f"{label} {kind:9s} {args.items / wall:8.1f} items/s  batch {wall:6.2f} s  "
            f"CPU {1000 * cpu / args.items:5.2f} ms/item (2-core estimate "
            f"{2 * args.items / cpu:6.0f} items/s)  pool start {startup:5.2f} s  "
            f"correct {correct:.0f}  timed_out {timed_out}"
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
