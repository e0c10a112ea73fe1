"""Throughput of the rule-based benchmark scorers (mmr1.eval.benchmarks ``adapter.score``).

Builds a seeded mix of ``--items`` items (default 10,000) across the six
adapters, each in its benchmark's own row schema (MathVista multiple choice,
integer, float and list; MathVerse multiple choice and free-form; MathVision
free-form, lettered and drawn-in-image options; LogicVista multi-select;
ChartQA numbers and words; synthetic items), with a reasoning-style response
per item: right or wrong, boxed or not, in the answer forms models write
(letters, option texts, ``\\frac``, ``\\sqrt``, percents, units). Numbers are
drawn at random so parse caches do not flatter the figures. Prints items/s per
benchmark, for the whole mix, and the time of ``aggregate``::

    python bench/bench_eval.py [--items 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from collections.abc import Callable

from mmr1.eval.benchmarks import get_adapter
from schemas.eval import EvalItem

WORDS = "so we read the chart and compare the two values then check the figure again".split()

Case = tuple[EvalItem, str]


def _think(rng: random.Random) -> str:
    return "<think>" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 300))) + "</think>"


def _respond(rng: random.Random, answer: str) -> str:
    """A response ending in ``answer``: boxed in an answer block, boxed inline, or in words."""
    form = rng.random()
    if form < 0.7:
        return f"{_think(rng)}\n<answer>\\boxed{{{answer}}}</answer>"
    if form < 0.9:
        return f"{_think(rng)} so the result is \\boxed{{{answer}}}."
    return f"{_think(rng)}\nTherefore, the answer is {answer}."


def _item(item_id: str, answer: str, row: dict, **fields: object) -> EvalItem:
    data = {"question": "<image>\nQ?", "answer_type": "text", "tags": {}, **fields}
    return EvalItem(item_id=item_id, answer=answer, row=row, **data)  # type: ignore[arg-type]


def mathvista(rng: random.Random, i: int) -> Case:
    right = rng.random() < 0.5
    kind = rng.choice(["multi_choice", "integer", "float", "list"])
    row: dict = {"question_type": "free_form", "answer_type": kind, "precision": None}
    if kind == "multi_choice":
        choices = [f"{rng.randint(1, 90)} cm" for _ in range(4)]
        gold = rng.randrange(4)
        row.update(question_type="multi_choice", answer_type="text", choices=choices)
        row["answer"] = choices[gold]
        pick = gold if right else (gold + 1) % 4
        answer = rng.choice(["ABCD"[pick], f"({'ABCD'[pick]})", choices[pick]])
    elif kind == "integer":
        n = rng.randint(0, 5000)
        row["answer"] = str(n)
        answer = f"{n:,}" if right else str(n + rng.randint(1, 9))
    elif kind == "float":
        precision = rng.choice([1.0, 2.0])
        value = round(rng.uniform(0, 100), int(precision))
        row.update(precision=precision, answer=str(value))
        answer = f"{value + (0.001 if right else 0.5):.3f}"
    else:
        a = rng.randint(1990, 2020)
        row["answer"] = str([a, a + 2])
        answer = f"{a}, {a + 2}" if right else f"{a}, {a + 3}"
    return _item(f"mv{i}", row["answer"], row), _respond(rng, answer)


def mathverse(rng: random.Random, i: int) -> Case:
    right = rng.random() < 0.5
    if rng.random() < 0.5:
        options = [f"{rng.randint(10, 170)}°" for _ in range(4)]
        gold = rng.randrange(4)
        question = "Find the angle.\nChoices:\n" + "\n".join(
            f"{'ABCD'[k]}:{text}" for k, text in enumerate(options)
        )
        row = {"question": question, "answer": "ABCD"[gold], "question_type": "multi-choice"}
        pick = gold if right else (gold + 1) % 4
        answer = rng.choice(["ABCD"[pick], options[pick]])
    else:
        k, m = rng.randint(2, 9), rng.choice([2, 3, 5, 7])
        row = {"question": "Find AB.", "answer": f"{k}\\sqrt{{{m}}}", "question_type": "free-form"}
        answer = f"\\sqrt{{{k * k * m}}}" if right else f"{k + 1}\\sqrt{{{m}}}"
    return _item(f"mvs{i}", row["answer"], row), _respond(rng, answer)


def mathvision(rng: random.Random, i: int) -> Case:
    right = rng.random() < 0.5
    kind = rng.random()
    if kind < 0.5:
        k, m = rng.randint(1, 9), rng.choice([2, 3, 5, 6])
        row: dict = {"options": [], "answer": f"{k * m**0.5:.2f}"}
        answer = f"{k}\\sqrt{{{m}}}" if right else f"\\frac{{{k}}}{{{m + 1}}}"
    elif kind < 0.8:
        options = [str(rng.randint(1, 60)) for _ in range(5)]
        gold = rng.randrange(5)
        row = {"options": options, "answer": "ABCDE"[gold]}
        pick = gold if right else (gold + 2) % 5
        answer = rng.choice(["ABCDE"[pick], options[pick]])
    else:
        gold = rng.randrange(5)
        row = {"options": list("ABCDE"), "answer": "ABCDE"[gold]}
        answer = "ABCDE"[gold if right else (gold + 1) % 5]
    return _item(f"mvi{i}", row["answer"], row), _respond(rng, answer)


def logicvista(rng: random.Random, i: int) -> Case:
    gold = sorted(rng.sample("ABCD", rng.choice([1, 1, 2])))
    if rng.random() < 0.5:
        answer = ", ".join(reversed(gold))
    else:
        answer = ", ".join(sorted(rng.sample("ABCD", 1)))
    return _item(f"lv{i}", ", ".join(gold), {}), _respond(rng, answer)


def chartqa(rng: random.Random, i: int) -> Case:
    if rng.random() < 0.7:
        gold = round(rng.uniform(1, 1000), 1)
        answer = str(round(gold * rng.uniform(0.9, 1.1), 1))
        if rng.random() < 0.2:
            return _item(f"cq{i}", f"{gold}%", {}), _respond(rng, f"{answer}\\%")
        return _item(f"cq{i}", str(gold), {}), _respond(rng, answer)
    gold_word = rng.choice(["Yes", "No", "Blue", "Germany", "2019"])
    answer = rng.choice([gold_word.lower(), "Red", "no"])
    return _item(f"cq{i}", gold_word, {}), _respond(rng, answer)


def synthetic(rng: random.Random, i: int) -> Case:
    right = rng.random() < 0.5
    if rng.random() < 0.5:
        choices = ["red", "green", "blue", "yellow"]
        gold = rng.randrange(4)
        item = _item(f"syn{i}", "ABCD"[gold], {}, choices=choices)
        return item, _respond(rng, "ABCD"[gold if right else (gold + 1) % 4])
    n = rng.randint(0, 40)
    return _item(f"syn{i}", str(n), {}), _respond(rng, str(n if right else n + 1))


BUILDERS: dict[str, Callable[[random.Random, int], Case]] = {
    "mathvista": mathvista,
    "mathverse": mathverse,
    "mathvision": mathvision,
    "logicvista": logicvista,
    "chartqa": chartqa,
    "synthetic": synthetic,
}


def build_mix(n: int, seed: int) -> list[tuple[str, EvalItem, str]]:
    """``n`` (benchmark, item, response) triples, benchmarks drawn uniformly."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = rng.choice(list(BUILDERS))
        item, response = BUILDERS[name](rng, i)
        out.append((name, item, response))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    mix = build_mix(args.items, args.seed)
    adapters = {name: get_adapter(name) for name in BUILDERS}
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    correct: dict[str, int] = defaultdict(int)
    scores: dict[str, list] = defaultdict(list)
    items: dict[str, list[EvalItem]] = defaultdict(list)
    start = time.perf_counter()
    for name, item, response in mix:
        t0 = time.perf_counter()
        score = adapters[name].score(item, response)
        seconds[name] += time.perf_counter() - t0
        counts[name] += 1
        correct[name] += score.correct
        scores[name].append(score)
        items[name].append(item)
    wall = time.perf_counter() - start

    print(f"items={args.items} seed={args.seed} (single process, one thread)")
    for name in BUILDERS:
        rate = counts[name] / seconds[name] if seconds[name] else float("inf")
        print(
            f"  {name:<11} {counts[name]:6d} items  {rate:9.1f} items/s  "
            f"accuracy {correct[name] / max(counts[name], 1):.3f}"
        )
    print(
        f"  {'all':<11} {args.items:6d} items  {args.items / wall:9.1f} items/s  wall {wall:.2f} s"
    )
    t0 = time.perf_counter()
    for name in BUILDERS:
        adapters[name].aggregate(items[name], scores[name], "bench")
    print(f"aggregate (all six benchmarks): {(time.perf_counter() - t0) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
